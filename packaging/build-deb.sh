#!/bin/sh
# Builds the Debian package: target/debian/guestd_VERSION_amd64.deb (the path is printed).
#
#   packaging/build-deb.sh            # builds the static musl binary first
#   GUESTD_STATIC_BIN=path packaging/build-deb.sh   # packages that binary instead
#
# The package holds the static x86_64-unknown-linux-musl binary (no runtime library needed, so
# one package serves every Debian-family release), the `ovmd` symlink, the systemd unit, the
# udev rule, the default /etc/guestd/guestd.toml (a conffile), and man pages generated from
# the command-line definition. Needs only cargo and dpkg-deb (dpkg-dev is not required).
set -eu
cd "$(dirname "$0")/.."
top=$PWD

bin=${GUESTD_STATIC_BIN:-}
if [ -z "$bin" ]; then
  # The dist profile (fat LTO, opt-level "s"): a third of the release build's size, and
  # the idle daemon's RSS is mostly its text.
  cargo build --profile dist --locked --target x86_64-unknown-linux-musl --bin guestd
  bin=$top/target/x86_64-unknown-linux-musl/dist/guestd
fi
[ -x "$bin" ] || { echo "build-deb: no binary at $bin" >&2; exit 1; }

version=$("$bin" --version | awk '{print $2; exit}')
[ -n "$version" ] || { echo "build-deb: cannot read the version from $bin" >&2; exit 1; }
out=$top/target/debian
mkdir -p "$out"
root=$(mktemp -d "$out/root.XXXXXX")
trap 'rm -rf "$root"' EXIT

# Files, with the modes and owners dpkg-deb records (--root-owner-group makes them root's).
install -d -m 755 "$root/usr/sbin" "$root/lib/systemd/system" "$root/lib/udev/rules.d" \
  "$root/etc/guestd" "$root/usr/share/doc/guestd" "$root/usr/share/man" "$root/DEBIAN"
install -m 755 "$bin" "$root/usr/sbin/guestd"
ln -s guestd "$root/usr/sbin/ovmd"
install -m 644 packaging/guestd.service "$root/lib/systemd/system/guestd.service"
install -m 644 packaging/60-guestd.rules "$root/lib/udev/rules.d/60-guestd.rules"
install -m 644 packaging/guestd.toml "$root/etc/guestd/guestd.toml"
install -m 644 docs/configuration.md "$root/usr/share/doc/guestd/configuration.md"
gzip -9n < README.md > "$root/usr/share/doc/guestd/README.md.gz"
cat > "$root/usr/share/doc/guestd/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: guestd
Files: *
Copyright: the guestd developers
License: Apache-2.0 OR MIT
EOF
"$bin" man "$root/usr/share/man"
find "$root/usr/share/man" -type f -exec gzip -9n {} +
find "$root/usr/share/man" -type d -exec chmod 755 {} +
find "$root/usr/share/man" -type f -exec chmod 644 {} +

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: guestd
Version: $version
Architecture: amd64
Maintainer: guestd developers <guestd@example.invalid>
Installed-Size: $size
Section: admin
Priority: optional
Conflicts: qemu-guest-agent, ovirt-guest-agent
Homepage: https://example.invalid/guestd
Description: guest agent for QEMU/KVM, oVirt and Oracle VM in one daemon
 guestd lets the hypervisor manager see into a virtual machine and act on it.
 It speaks the QEMU guest agent protocol (libvirt, CloudStack), the oVirt
 guest agent protocol (VDSM) and Oracle VM's guest messaging over xenstore,
 on whichever channels the machine has, and is a drop-in for qemu-ga,
 ovirt-guest-agent and ovmd (an ovmd command is included).
 .
 Installed, it starts at boot and whenever a guest agent port appears, with
 no configuration needed. The binary is static (musl) and needs no library.
EOF
echo /etc/guestd/guestd.toml > "$root/DEBIAN/conffiles"

cat > "$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
unit=guestd.service
if [ "$1" = configure ]; then
  if command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper unmask "$unit" >/dev/null || true
    # Enabled on the first install; later upgrades keep the administrator's choice.
    if [ -z "${2:-}" ] || deb-systemd-helper --quiet was-enabled "$unit"; then
      deb-systemd-helper enable "$unit" >/dev/null || true
    else
      deb-systemd-helper update-state "$unit" >/dev/null || true
    fi
  elif [ -z "${2:-}" ]; then
    mkdir -p /etc/systemd/system/multi-user.target.wants
    ln -sf /lib/systemd/system/$unit /etc/systemd/system/multi-user.target.wants/$unit
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    udevadm control --reload-rules >/dev/null 2>&1 || true
    if [ -n "${2:-}" ]; then
      systemctl try-restart "$unit" >/dev/null 2>&1 || true
    else
      systemctl start "$unit" >/dev/null 2>&1 || true
    fi
  fi
fi
exit 0
EOF
cat > "$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  # The agent thaws frozen filesystems before it exits.
  systemctl stop guestd.service >/dev/null 2>&1 || true
fi
exit 0
EOF
cat > "$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
unit=guestd.service
case "$1" in
  remove)
    if command -v deb-systemd-helper >/dev/null 2>&1; then
      deb-systemd-helper mask "$unit" >/dev/null || true
    fi
    ;;
  purge)
    if command -v deb-systemd-helper >/dev/null 2>&1; then
      deb-systemd-helper purge "$unit" >/dev/null || true
      deb-systemd-helper unmask "$unit" >/dev/null || true
    fi
    rm -f /etc/systemd/system/multi-user.target.wants/$unit
    rm -rf /var/lib/guestd
    ;;
esac
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
EOF
chmod 755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

deb=$out/guestd_${version}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
