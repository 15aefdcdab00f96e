#!/bin/busybox sh
# The test guest's whole userland. `tapguest=write` (boot 1): random files and their SHA256SUMS
# as a tar written to the raw virtio disk; `tapguest=verify` (boot 2): the tar read back from the
# disk and every file checked. Either way one TAPGUEST line on the serial console, then power off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
  insmod /lib/modules/$m.ko || echo "TAPGUEST ERROR insmod $m"
done
i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1))
  if [ $i -gt 600 ]; then echo "TAPGUEST ERROR no /dev/vda"; poweroff -f; fi
  sleep 0.1
done
mode=$(sed -n 's/.*tapguest=\([a-z]*\).*/\1/p' /proc/cmdline)
mkdir -p /data/files
cd /data
case "$mode" in
write)
  for n in 1 2 3; do head -c $((n * 65536)) /dev/urandom > files/f$n.bin; done
  echo "written at boot 1" > files/note.txt
  sha256sum files/* > SHA256SUMS
  tar cf /dev/vda SHA256SUMS files && sync && blockdev --flushbufs /dev/vda \
    && echo "TAPGUEST WROTE $(sha256sum SHA256SUMS | cut -d' ' -f1)" \
    || echo "TAPGUEST ERROR write"
  ;;
verify)
  if tar xf /dev/vda && sha256sum -c -s SHA256SUMS; then
    echo "TAPGUEST FOUND $(sha256sum SHA256SUMS | cut -d' ' -f1) OK"
  else
    echo "TAPGUEST FOUND - FAIL"
  fi
  ;;
*)
  echo "TAPGUEST ERROR mode '$mode'"
  ;;
esac
sync
poweroff -f
