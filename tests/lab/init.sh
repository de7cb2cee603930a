#!/bin/sh
# PID 1 of the nested lab (see run.sh). Stage 1 runs on the host's read-only 9p root: it builds a
# writable root (overlay of that root over a tmpfs) and chroots into it for stage 2, which mounts
# the usual file systems, runs the command given by run.sh and powers the lab off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
here=$(dirname "$0")

poweroff_now() {
  sync
  # -no-reboot makes QEMU exit on the reset; it needs neither ACPI nor sysrq.
  /bin/busybox reboot -f
  sleep 10
}

if [ "${1:-}" != stage2 ]; then
  mount -t proc proc /proc
  mount -t tmpfs -o mode=0755 lab-scratch /tmp
  mkdir -p /tmp/upper /tmp/work /tmp/root
  if ! mount -t overlay overlay -o lowerdir=/,upperdir=/tmp/upper,workdir=/tmp/work /tmp/root; then
    echo "lab init: overlay over the 9p root failed" >&2
    poweroff_now
  fi
  exec /usr/sbin/chroot /tmp/root /bin/sh "$here/init.sh" stage2
fi

# Stage 2: inside the writable root.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# A process killed by a fatal signal (a VMM thread's seccomp filter: SIGSYS, ORIG_RAX is the
# system call) has its registers printed on the lab's console log, shown when the lab fails.
echo 1 > /proc/sys/kernel/print-fatal-signals
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx
mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t tmpfs -o mode=0755 run /run
# /tmp and /var/tmp get fresh tmpfs; a checkout living under them (CI may clone there) is carried
# over to the same path, so the runner's command and the repo's scripts are found inside.
checkout=$(cd "$here/../.." && pwd)
case "$checkout" in
  /tmp/*|/var/tmp/*) mkdir -p /run/lab-checkout && mount --bind "$checkout" /run/lab-checkout ;;
  *) checkout="" ;;
esac
mount -t tmpfs -o mode=1777 tmp /tmp
mount -t tmpfs -o mode=1777 vartmp /var/tmp
if [ -n "$checkout" ]; then
  mkdir -p "$checkout" && mount --move /run/lab-checkout "$checkout"
fi
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /run/lab
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 labio /run/lab
hostname vessel-lab
ip link set lo up 2>/dev/null || true

# Find the virtio-serial ports by name (no udev here).
out=/dev/null; err=/dev/null
for p in /sys/class/virtio-ports/*; do
  case "$(cat "$p/name" 2>/dev/null)" in
    lab.out) out=/dev/${p##*/} ;;
    lab.err) err=/dev/${p##*/} ;;
  esac
done

if [ -c /dev/kvm ]; then kvm="ok"; else kvm="missing"; fi
echo "$kvm" > /run/lab/kvm
cut -d' ' -f1 /proc/uptime > /run/lab/up

# run.sh wrote env and cmd with bash quoting (export -p, printf %q).
HOME=/root /bin/bash -c '. /run/lab/env; . /run/lab/cmd' </dev/null >"$out" 2>"$err"
rc=$?
echo "$rc" > /run/lab/status
poweroff_now
