#!/usr/bin/env bash
# systemd-vm-image.sh : builds (once) and prints the path of a small Debian 12 root filesystem
# image with systemd as init, dbus and systemd-logind, for tests/logind.rs. The image is an
# ext4 file booted as /dev/vda by ../shared/peers/vm/boot.sh (see tests/support/systemd_vm.rs);
# QEMU runs it with -snapshot, so the cached image is never written to.
#
# Cached under $PEERS_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/guestd-peers) in
# systemd-vm/<hash of this script>/rootfs.ext4: a change to this script builds a new one.
# Needs root (mmdebstrap in root mode, mkfs.ext4) and deb.debian.org (or $DEBIAN_MIRROR).
#
# What is inside besides Debian's minbase: systemd, systemd-sysv, dbus, libpam-systemd (so a
# PAM login opens a logind session), udev (the .deb's rule that starts guestd when a port
# appears, tests/daemon.rs), procps; users alice, bob and carol; no getty on tty1 at
# boot and none on the serial console (the test starts the sessions it wants):
#   getty@tty1 / getty@tty2   autologin alice / bob on VT 1 / 2 (class user, type tty, seat0)
#   guestd-test-x11@USER      a PAM "login" session of USER on VT 3 declared as type x11
#                             (what a display manager opens, without an X server)
#   guestd-test-shell         /usr/local/bin/guest-shell on port org.guestd.test.0 (the test's
#                             command channel); it prints "guestd-systemd-vm: ready" first
# guestd itself and guest-shell are not in the image: the boot initramfs copies them in.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

case "${1:-}" in
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac

cache=${PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/guestd-peers}
hash=$(sha256sum "$0" | cut -c1-16)
dir=$cache/systemd-vm/$hash
img=$dir/rootfs.ext4
if [ -s "$img" ]; then echo "$img"; exit 0; fi

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ -s "$img" ]; then echo "$img"; exit 0; fi

log() { echo "systemd-vm-image: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { log "needs root (mmdebstrap, mkfs.ext4)"; exit 1; }
for c in mmdebstrap mkfs.ext4; do
    command -v "$c" >/dev/null || { log "missing $c (scripts/install-test-deps.sh installs it)"; exit 1; }
done

work=$(mktemp -d "$dir/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
start=$(date +%s)
log "building the Debian 12 systemd root filesystem (once; about 100 MB of packages)"
mmdebstrap --quiet --mode=root --variant=minbase --format=directory \
    --include=systemd,systemd-sysv,dbus,libpam-systemd,udev,procps \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$root" "$mirror"

echo guestd-systemd-vm >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tguestd-systemd-vm\n' >"$root/etc/hosts"
: >"$root/etc/fstab"
# Root without a password on the VTs would be a hole in a real image; here only the test's own
# sessions exist. Lock root's password anyway.
chroot "$root" passwd -l root >/dev/null
for u in alice bob carol; do
    chroot "$root" useradd --create-home --shell /bin/bash "$u"
done
rm -f "$root/var/lib/apt/lists/"*_Packages "$root/var/cache/apt/"*.bin

sd=$root/etc/systemd/system
# No getty at boot: the test opens the sessions itself, while it watches.
rm -f "$sd/getty.target.wants/getty@tty1.service"
ln -sf /dev/null "$sd/serial-getty@ttyS0.service"
for n in 1 2; do
    u=$([ $n = 1 ] && echo alice || echo bob)
    mkdir -p "$sd/getty@tty$n.service.d"
    cat >"$sd/getty@tty$n.service.d/autologin.conf" <<EOF
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin $u --noclear %I \$TERM
# A logged-off test user stays logged off.
Restart=no
EOF
done
cat >"$sd/guestd-test-x11@.service" <<'EOF'
[Unit]
Description=A logind session of %i declared as X11 on VT 3 (guestd tests)
After=systemd-user-sessions.service systemd-logind.service

[Service]
User=%i
PAMName=login
TTYPath=/dev/tty3
StandardInput=tty-force
StandardOutput=null
Environment=XDG_SESSION_TYPE=x11 XDG_SESSION_CLASS=user XDG_SEAT=seat0 XDG_VTNR=3
ExecStart=/bin/sleep infinity
EOF
cat >"$sd/guestd-test-shell.service" <<'EOF'
[Unit]
Description=guestd test command channel
After=dbus.service systemd-logind.service

[Service]
ExecStartPre=/bin/sh -c 'echo "guestd-systemd-vm: ready" >/dev/console'
ExecStart=/usr/local/bin/guest-shell org.guestd.test.0
Restart=always

[Install]
WantedBy=multi-user.target
EOF
ln -sf ../guestd-test-shell.service "$sd/multi-user.target.wants/guestd-test-shell.service"
# Quiet, quick boot under TCG.
for u in systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer \
         e2scrub_all.timer fstrim.timer dpkg-db-backup.timer; do
    ln -sf /dev/null "$sd/$u"
done
sed -i 's/^#\?ShowStatus=.*/ShowStatus=no/' "$root/etc/systemd/system.conf"

size_mb=$(( $(du -sm "$root" | cut -f1) + 160 ))
mkfs.ext4 -q -F -L guestd-root -d "$root" "$work/rootfs.ext4" "${size_mb}M"
mv "$work/rootfs.ext4" "$img"
log "wrote $img (${size_mb} MB, $(( $(date +%s) - start )) s)"
echo "$img"
