#!/bin/sh
# /init of the real-guest test initramfs (built by test/interop/guest/initramfs.ts,
# run by busybox ash as PID 1).
#
# 1. mounts proc, sysfs, devtmpfs and tmpfs;
# 2. insmods the modules listed in /vts/modules (dependencies first);
# 3. finds the disks by virtio-blk serial: "vts-state" holds the boot counter,
#    "vts-extra" is the optional extra drive, the first other vd* is the disk
#    under test ($VTS_DISK);
# 4. bumps the boot counter on the state disk (when there is one) -> $VTS_BOOT;
# 5. runs the steps of this boot listed in /vts/steps.list, each framed on the
#    console by "VTS-BEGIN name" and "VTS-END name rc=N"; after a failing step
#    the rest are reported as "VTS-SKIP name";
# 6. prints "VTS-DONE", then `reboot -f` while boots remain, else `poweroff -f`.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm && mount -t tmpfs tmpfs /dev/shm
[ -f /vts/libpath ] && LD_LIBRARY_PATH=$(cat /vts/libpath) && export LD_LIBRARY_PATH

VTS_BOOTS=1
VTS_DISKS=1
# shellcheck source=/dev/null
[ -f /vts/run.conf ] && . /vts/run.conf

now() { cut -d' ' -f1 /proc/uptime; }
halt_guest() {
  sync
  if [ "$1" = reboot ]; then reboot -f; else poweroff -f; fi
  sleep 10
  echo "VTS-HALT-FAILED"
  while :; do sleep 60; done
}

echo "VTS-INIT uptime=$(now)"

while read -r m; do
  [ -n "$m" ] || continue
  insmod "/lib/modules/vts/$m.ko" || echo "VTS-MODULE-FAILED $m"
done </vts/modules

# virtio_blk probes while insmod runs; still wait (bounded) for the disks.
i=0
while [ "$(ls -d /sys/block/vd* 2>/dev/null | wc -l)" -lt "$VTS_DISKS" ] && [ $i -lt 100 ]; do
  sleep 0.1
  i=$((i + 1))
done

VTS_DISK=""
VTS_EXTRA=""
VTS_STATE=""
for d in /sys/block/vd*; do
  [ -e "$d" ] || continue
  case "$(cat "$d/serial" 2>/dev/null)" in
    vts-state) VTS_STATE=/dev/${d##*/} ;;
    vts-extra) VTS_EXTRA=/dev/${d##*/} ;;
    *) [ -n "$VTS_DISK" ] || VTS_DISK=/dev/${d##*/} ;;
  esac
done
export VTS_DISK VTS_EXTRA

VTS_BOOT=1
if [ -n "$VTS_STATE" ]; then
  n=$(dd if="$VTS_STATE" bs=512 count=1 2>/dev/null | tr -dc 0-9)
  VTS_BOOT=$((${n:-0} + 1))
  printf '%s\n' "$VTS_BOOT" | dd of="$VTS_STATE" bs=512 count=1 conv=sync,fsync 2>/dev/null
elif [ "$VTS_BOOTS" -gt 1 ]; then
  echo "VTS-ERROR no state disk for a $VTS_BOOTS-boot run"
  halt_guest poweroff
fi
export VTS_BOOT
echo "VTS-BOOT $VTS_BOOT of $VTS_BOOTS disk=${VTS_DISK:-none} extra=${VTS_EXTRA:-none} uptime=$(now)"

failed=0
while read -r boot name file; do
  [ "$boot" = "$VTS_BOOT" ] || continue
  if [ $failed -ne 0 ]; then
    echo "VTS-SKIP $name"
    continue
  fi
  echo "VTS-BEGIN $name uptime=$(now)"
  sh "/vts/steps/$file" </dev/null 2>&1
  rc=$?
  echo "VTS-END $name rc=$rc uptime=$(now)"
  [ $rc -eq 0 ] || failed=1
done </vts/steps.list

sync
echo "VTS-DONE boot=$VTS_BOOT failed=$failed uptime=$(now)"
if [ $failed -eq 0 ] && [ "$VTS_BOOT" -lt "$VTS_BOOTS" ]; then
  halt_guest reboot
fi
halt_guest poweroff
