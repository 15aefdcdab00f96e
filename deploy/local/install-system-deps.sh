#!/usr/bin/env bash
# Installs the Debian tools tapstream's tests and demo drive (real NBD/qemu clients, kcat, Java, Maven)
# when they are missing. Needs root for apt-get; without it, says what to install and fails.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have qemu-img  || need+=(qemu-utils)
have fio       || need+=(fio)
have nbdsh     || need+=(libnbd-bin)
python3 -c 'import nbd' 2>/dev/null || [ -e /usr/lib/python3/dist-packages/nbd.py ] || need+=(python3-libnbd)
have nbdfuse   || need+=(nbdfuse)
have fuse2fs   || need+=(fuse2fs)
have mkfs.ext4 || need+=(e2fsprogs)
have nbdkit    || need+=(nbdkit)
[ -e /usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-python-plugin.so ] || ls /usr/lib/*/nbdkit/plugins/nbdkit-python-plugin.so >/dev/null 2>&1 || need+=(nbdkit-plugin-python)
have kcat      || need+=(kcat)
# kcat with Avro (deploy/kcat/build.sh): a compiler and the libraries it and libserdes link against.
have gcc       || need+=(gcc libc6-dev)
for pkg in librdkafka-dev libyajl-dev libavro-dev libjansson-dev libcurl4-openssl-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
have java      || need+=(openjdk-17-jre-headless)
have mvn       || need+=(maven)
have go        || need+=(golang-go)  # builds toxiproxy for `make chaos`
have chromium  || need+=(chromium)  # the web console's browser tests (Playwright drives it)
# The site manager's libvirt VM driver and its test guest (libvirt-python compiles against libvirt-dev).
have libvirtd  || need+=(libvirt-daemon-system)
have qemu-system-x86_64 || need+=(qemu-system-x86)
[ -e /usr/include/libvirt/libvirt.h ] || need+=(libvirt-dev)
have pkg-config || need+=(pkg-config)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)  # the test guest's initramfs
if ((${#need[@]} == 0)); then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${need[*]}" >&2
  echo "install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
