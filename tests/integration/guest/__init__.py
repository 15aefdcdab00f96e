"""A tiny Linux guest for the VM tests: Debian's cloud kernel and a busybox initramfs built here."""
