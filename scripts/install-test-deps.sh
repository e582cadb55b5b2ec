#!/usr/bin/env bash
# Installs what guestd's tests need on Debian 12: the real peers (QEMU, qemu-guest-agent,
# xenstored), the tools tests cross-check against, and Python qemu.qmp in a venv.
# Idempotent: does nothing when everything is there. Needs root or password-less sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(
  qemu-system-x86 busybox-static cpio gzip          # the TCG VM (../shared/peers/vm)
  qemu-guest-agent                                   # the reference agent
  e2fsprogs xfsprogs util-linux                      # loop-mounted filesystems, findmnt
  xen-utils-4.17 xenstore-utils gcc libc6-dev        # the real xenstored (../shared/peers/xenstored)
  python3 python3-venv                               # qemu.qmp client, raw socket clients
  iproute2 procps hostname passwd openssh-client     # tools the live cross-checks compare with
  dpkg-dev
  rpm dbus-daemon                                    # reporters: rpm -qa/rpmbuild cross-check, a private bus for the logind client
  ifupdown network-manager chrony openssl systemd    # first-boot config: ifquery/ifup, nmcli --offline, chronyd -p, openssl passwd, systemctl --root
  mmdebstrap debian-archive-keyring                  # the systemd/logind test image (tests/logind.rs), the .deb install root (tests/daemon.rs)
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  # Keep packaged services (qemu-guest-agent, xen) from starting on this machine.
  had_policy=0
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  if [ $had_policy -eq 0 ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ $had_policy -eq 1 ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

# The static build that goes into the VM's initramfs.
rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-linux-musl \
  || rustup target add x86_64-unknown-linux-musl

# Python qemu.qmp, the independent QGA client (Debian 12 refuses system-wide pip).
venv="${GUESTD_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/guestd-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import qemu.qmp' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q qemu.qmp
fi
echo "test dependencies ready (venv: $venv)" >&2
