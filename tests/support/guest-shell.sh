#!/bin/sh
# guest-shell PORT: a test-only command channel inside a test VM (busybox or Debian). It reads
# lines "ID COMMAND" from the virtio-serial port named PORT, runs each COMMAND with sh -c, and
# writes the output followed by a line "__GUESTD_RC ID STATUS". The host side is
# tests/support/guest_shell.rs. Never install this in a real image: it runs anything it reads.
name=$1
dev=""
while [ -z "$dev" ]; do
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = "$name" ] && dev=/dev/${p##*/}
    done
    [ -n "$dev" ] || sleep 0.2
done
out=/run/guest-shell.out
# One open for reading and writing: a virtio-serial port has a single opener. While no host
# client is connected, reads return EOF at once; the same descriptor works again when one is.
exec 3<>"$dev"
while :; do
    while IFS= read -r line <&3; do
        id=${line%% *}
        cmd=${line#* }
        sh -c "$cmd" </dev/null >"$out" 2>&1
        rc=$?
        cat "$out" >&3
        printf '\n__GUESTD_RC %s %s\n' "$id" "$rc" >&3
    done
    sleep 0.2
done
