#!/usr/bin/env bash
# Every test guestd has, from a fresh Debian 12 machine: installs the peers the tests talk to,
# checks formatting and lints, builds once, then runs the whole suite. Missing peers fail the
# run (GUESTD_REQUIRE_PEERS=1) instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh

export GUESTD_REQUIRE_PEERS=1
export GUESTD_VENV="${GUESTD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/guestd-venv}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The smallest system-VM build (no D-Bus, no netlink) must keep compiling.
cargo check --locked --no-default-features --bin guestd
# The static binary the VM tests put into the guest's initramfs.
cargo build --release --locked --target x86_64-unknown-linux-musl --bin guestd
export GUESTD_STATIC_BIN="$PWD/target/x86_64-unknown-linux-musl/release/guestd"
# The test-only channel echo the transport VM tests put into the guest (tests/vm.rs).
cargo build --release --locked --target x86_64-unknown-linux-musl -p guestd-transports --example port_echo
export GUESTD_STATIC_EXAMPLES="$PWD/target/x86_64-unknown-linux-musl/release/examples"
# --no-fail-fast: one failing test binary must not hide the others' results.
cargo test --workspace --locked --no-fail-fast "$@"
