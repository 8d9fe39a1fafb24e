"""Maximally distinct class colours in a stable order."""

from __future__ import annotations

import colorsys

# Background first, then Kenneth Kelly's (1965) sequence of colours of maximum contrast, white left out.
_KELLY: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (255, 179, 0), (128, 62, 117), (255, 104, 0), (166, 189, 215), (193, 0, 32),
    (206, 162, 98), (129, 112, 102), (0, 125, 52), (246, 118, 142), (0, 83, 138), (255, 122, 92),
    (83, 55, 122), (255, 142, 0), (179, 40, 81), (244, 200, 0), (127, 24, 13), (147, 170, 0),
    (89, 51, 21), (241, 58, 19), (35, 44, 22),
)  # fmt: skip


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` RGB colours: black for class 0, then Kelly's contrasting colours, then golden-angle hues.

    The order is stable: class ``k`` always gets the same colour, whatever ``n`` is.

    >>> palette(3)
    [(0, 0, 0), (255, 179, 0), (128, 62, 117)]
    """
    colours = list(_KELLY[:n])
    k = 0
    while len(colours) < n:
        h = (k * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85 if k % 2 else 0.65, 0.95 if k % 3 else 0.75)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
        k += 1
    return colours
