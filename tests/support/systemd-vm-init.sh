#!/bin/sh
# rdinit of the systemd test VM (tests/support/systemd_vm.rs): loads the virtio modules of the
# peers' initramfs, mounts the Debian root filesystem from /dev/vda (QEMU -snapshot keeps the
# cached image unchanged), copies guestd and the guest shell in, and hands over to systemd.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
# Dependencies first: retry until a round loads nothing more.
left=$(ls /lib/modules/peers/*.ko 2>/dev/null)
while [ -n "$left" ]; do
    next="" loaded=0
    for m in $left; do
        if insmod "$m" 2>/dev/null; then loaded=1; else next="$next $m"; fi
    done
    [ "$loaded" = 1 ] || break
    left=$next
done
i=0
while [ ! -b /dev/vda ] && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
mkdir -p /newroot
if ! mount -t ext4 -o rw /dev/vda /newroot; then
    echo "guestd-systemd-vm: cannot mount /dev/vda"
    poweroff -f
fi
mkdir -p /newroot/usr/local/bin
cp /usr/bin/guestd /bin/guest-shell /newroot/usr/local/bin/
umount /proc /sys /dev 2>/dev/null
echo "guestd-systemd-vm: starting systemd"
exec switch_root /newroot /sbin/init
