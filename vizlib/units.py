"""How sizes read in messages: one byte formatter and one pixel formatter for all of vizlib."""

from __future__ import annotations

__all__ = ["fmt_bytes", "fmt_mp"]


def fmt_bytes(n: float) -> str:
    """A size for a message: "20 MB", "1.5 KB", "256 KB", "900 bytes" (binary units).

    Small limits stay in KB ("over the 256 KB limit"), never "0 MB".
    """
    n = float(n)
    for unit, factor in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if abs(n) >= factor:
            value = n / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{int(n)} bytes"


def fmt_mp(pixels: float) -> str:
    """Megapixels for a message ("40 megapixels", "81.0 megapixels")."""
    value = pixels / 1e6
    return f"{value:.0f} megapixels" if value == int(value) else f"{value:.1f} megapixels"
