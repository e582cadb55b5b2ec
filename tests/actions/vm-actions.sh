#!/bin/sh
# Runs inside the test VM (tests/actions/vm.rs): exercises guestd's actions through the
# actctl example on the guest's own clock, CPUs, memory, disk and accounts, and reports one
# "R <name> <result>" line per step on the console.
A=/bin/actctl
S="--state /run/gd"
r() { name=$1; shift; echo "R $name $("$A" "$@" 2>&1 | tr '\n' ' ')"; }

# Freeze everything: the guest's only block-backed filesystem is the test disk.
mkdir -p /mnt/d && mount -t ext4 /dev/vda /mnt/d && echo "R mounted yes"
$A $S --hold freeze > /tmp/hold.out 2>&1 &
hold=$!
for i in 1 2 3 4 5 6 7 8 9 10; do grep -q . /tmp/hold.out && break; sleep 1; done
echo "R freeze-all $(cat /tmp/hold.out)"
(echo hi > /mnt/d/w; echo "R writer-done") &
writer=$!
sleep 2
echo "R writer-file-while-frozen $([ -e /mnt/d/w ] && echo yes || echo no)"
echo "R state-file $(cat /run/gd/fsfreeze.frozen)"
kill -TERM $hold
wait $hold
echo "R hold-exit $(tail -n 1 /tmp/hold.out)"
wait $writer
echo "R writer-content $(cat /mnt/d/w)"

# The clock: with hwclock, then with the RTC ioctls (no helper programs found).
r settime-hwclock set-time 1893456000000000000
echo "R date-hwclock $(date +%s)"
echo "R rtc-hwclock $(hwclock -r -u)"
r settime-ioctl --exec-path /nonexistent set-time 1924992000000000000
echo "R date-ioctl $(date +%s)"
echo "R rtc-ioctl $(hwclock -r -u)"
date -u -s '2020-01-01 00:00:00' >/dev/null
r fromrtc-ioctl --exec-path /nonexistent set-time
echo "R date-fromrtc-ioctl $(date +%s)"
hwclock -w -u
date -u -s '2020-01-01 00:00:00' >/dev/null
r fromrtc-hwclock set-time
echo "R date-fromrtc-hwclock $(date +%s)"
r settime-invalid set-time 4102444800000000000

# vCPUs (the VM has two).
echo "R cpus-before $(cat /sys/devices/system/cpu/online)"
r vcpu-off vcpus 1:0
echo "R cpus-off $(cat /sys/devices/system/cpu/online)"
r vcpu-on vcpus 1:1
echo "R cpus-on $(cat /sys/devices/system/cpu/online)"
r vcpu-prefix vcpus 1:1 7:0 1:0
echo "R cpus-prefix $(cat /sys/devices/system/cpu/online)"
r vcpu0-off vcpus 0:0

# Memory blocks: the hot-plugged DIMM's block comes up offline; online it, offline it again.
last=$(ls -d /sys/devices/system/memory/memory* | sed 's/.*memory//' | sort -n | tail -n 1)
echo "R memblock $last $(cat /sys/devices/system/memory/memory$last/state)"
r mem-on memblocks "$last:1"
echo "R mem-state-on $(cat /sys/devices/system/memory/memory$last/state)"
r mem-off memblocks "$last:0"
echo "R mem-state-off $(cat /sys/devices/system/memory/memory$last/state)"
r mem-boot-off memblocks 0:0
r mem-missing memblocks 99999:1

# Passwords: busybox has no chpasswd, so the shadow file is edited directly.
printf 'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n' > /etc/passwd
printf 'root:*:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\n' > /etc/shadow
printf 'root:x:0:\nalice:x:1000:\n' > /etc/group
echo "R chpasswd-present $(command -v chpasswd || echo none)"
echo "R password $(echo 'vm s3cret' | $A password alice 2>&1)"
echo "R shadow $(grep '^alice:' /etc/shadow)"

# Suspend to RAM through /sys/power/state; the host wakes the guest over QMP.
echo "R suspend-start"
r suspend suspend ram
echo "R suspend-disk-mode $(cat /sys/power/disk 2>&1 | tr '\n' ' ')"
