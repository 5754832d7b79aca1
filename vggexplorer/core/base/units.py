"""Byte formatting: raw numbers stay raw; this gives the human string next to them."""

from __future__ import annotations

import math

KiB, MiB, GiB = 1024, 1024**2, 1024**3


def fmt_bytes(n: float | None, digits: int = 1) -> str:
    """``1536`` → ``1.5 KiB``; None/NaN → ``N/A``. Binary units, as nvidia-smi's MiB."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "N/A"
    sign = "-" if n < 0 else ""
    a = abs(float(n))
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if a >= size:
            return f"{sign}{a / size:.{digits}f} {unit}"
    return f"{sign}{int(a)} B"


def fmt_signed_bytes(n: float) -> str:
    return ("+" if n > 0 else "") + fmt_bytes(n) if n else "±0 B"


def parse_bytes(text: str) -> int:
    """``24GiB``, ``24 GB``, ``512MiB``, ``1e9`` → bytes (GB = 10^9, GiB = 2^30)."""
    s = text.strip().replace(" ", "")
    units = {
        "": 1,
        "b": 1,
        "kb": 10**3,
        "mb": 10**6,
        "gb": 10**9,
        "tb": 10**12,
        "kib": KiB,
        "mib": MiB,
        "gib": GiB,
        "tib": 1024**4,
        "k": KiB,
        "m": MiB,
        "g": GiB,
    }
    i = len(s)
    while i > 0 and s[i - 1].isalpha():
        i -= 1
    num, unit = s[:i], s[i:].lower()
    if unit not in units:
        raise ValueError(f"unknown unit {s[i:]!r} in {text!r}; use B, MiB, GiB, MB or GB")
    try:
        value = float(num)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (try 24GiB)") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return int(value * units[unit])
