"""A protected VM's definition at the recovery site: what the site manager turns into a libvirt
domain (or hands to the exec driver) when a failover, a move or a failover test brings it up.
Pure: parsed and checked here, stored as a plain dict in the group's `VmDefined` event."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tapstream.core.names import valid_name

MAX_VCPUS = 256
MAX_MEMORY_MIB = 4 * 1024 * 1024  # 4 TiB


@dataclass(frozen=True)
class VmSpec:
    vcpus: int = 1
    memory_mib: int = 512
    # The VM's volumes in disk order (vda, vdb, ...); empty: every volume of the VM, by name.
    disks: tuple[str, ...] = ()
    # The libvirt network the recovered VM joins; "" for none. A failover test's copy never joins
    # it (see the site manager's vm_test_network).
    network: str = ""
    boot_order: int = 0  # lower boots first within the group; equal ones by VM name
    # Direct kernel boot (optional): paths on the recovery site's host.
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""

    @classmethod
    def parse(cls, data: dict[str, Any]) -> VmSpec:
        """A spec from its dict (an API body, a stored event); ValueError says what is wrong."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown VM spec fields {unknown}; known: {sorted(names)}")
        spec = cls(**{**data, "disks": tuple(data.get("disks") or ())})
        spec.check()
        return spec

    @classmethod
    def stored(cls, data: object) -> VmSpec | None:
        """A spec as an event holds it: fields a newer site manager added are dropped; one that
        breaks our rules (decided by an older or a compromised site) is None: never booted."""
        if not isinstance(data, dict):
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        try:
            spec = cls(**{**known, "disks": tuple(known.get("disks") or ())})
            spec.check()
        except (TypeError, ValueError):
            return None
        return spec

    def check(self) -> None:
        def whole(what: str, value: object, low: int, high: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{what} must be a whole number in {low}..{high} (got {value!r})")

        whole("vcpus", self.vcpus, 1, MAX_VCPUS)
        whole("memory_mib", self.memory_mib, 16, MAX_MEMORY_MIB)
        whole("boot_order", self.boot_order, -1000, 1000)
        for d in self.disks:
            if not isinstance(d, str) or not valid_name(d):
                raise ValueError(f"disk {d!r} is not a volume name")
        if len(set(self.disks)) != len(self.disks):
            raise ValueError(f"a volume is listed twice in disks {list(self.disks)}")
        if len(self.disks) > 26:
            raise ValueError("at most 26 disks (vda..vdz)")
        if self.network and not valid_name(self.network):
            raise ValueError(f"network {self.network!r} is not a libvirt network name")
        for what in ("kernel", "initrd", "cmdline"):
            value = getattr(self, what)
            if not isinstance(value, str) or "\0" in value or len(value) > 4096:
                raise ValueError(f"{what} must be text without NUL, at most 4096 characters")
        if self.initrd and not self.kernel:
            raise ValueError("an initrd needs a kernel")
        if (self.kernel or self.initrd) and not all(
            p.startswith("/") for p in (self.kernel, self.initrd) if p
        ):
            raise ValueError("kernel and initrd are absolute paths on the recovery site's host")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "disks": list(self.disks)}

    def disk_volumes(self, volumes: list[str]) -> list[str]:
        """The volumes attached, in order: the listed ones, or all of the VM's by name."""
        return list(self.disks) if self.disks else sorted(volumes)
