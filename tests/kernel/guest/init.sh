#!/bin/sh
# /init of the kernel tier's guest: mount the pseudo file systems, load
# the dm modules in the order the host derived from modules.dep, run the
# scenario, report its status on the serial console, and stop the VM.
export PATH=/sbin:/bin
# No udev in the guest: libdevmapper makes the /dev/mapper nodes itself.
export DM_DISABLE_UDEV=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/mapper /run/lock /tmp
while read -r m; do
    insmod "/mods/$m.ko" || echo "@@fail insmod $m"
done </mods/order
echo "@@booted $(cut -d' ' -f1 /proc/uptime)"
sh /scenario.sh
rc=$?
sync
echo "@@exit $rc"
reboot -f
