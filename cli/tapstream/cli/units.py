"""Human sizes for the command line."""

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """'64M' -> 67108864; plain numbers are bytes; 'KiB'/'MB' style suffixes are accepted as powers of 1024."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in _UNITS else ""
    number = t[: len(t) - len(unit)] if unit else t
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"not a size: {text!r} (try 64M or 10G)") from None
    if value <= 0 or value != int(value):
        raise ValueError(f"not a size: {text!r}")
    return int(value)
