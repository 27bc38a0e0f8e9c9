"""Line charts in the terminal with braille dots (2×4 dots per cell), for the training curves.

Pure: numpy-free even; rich only for the coloured result. No textual, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from rich.text import Text

BRAILLE_BASE = 0x2800
# Bit of each dot in a braille cell, by (x, y) within the 2×4 cell.
_DOT_BITS = {(0, 0): 0x01, (0, 1): 0x02, (0, 2): 0x04, (0, 3): 0x40, (1, 0): 0x08, (1, 1): 0x10, (1, 2): 0x20, (1, 3): 0x80}

Point = tuple[float, float]


@dataclass
class Chart:
    rows: list[str]  # ``height`` strings of ``width`` braille characters (blank cells are U+2800)
    owners: list[list[int]]  # which series drew each cell (the last one wins), -1 for none
    x_range: tuple[float, float]
    y_range: tuple[float, float]


def _span(values: list[float], given: tuple[float, float] | None) -> tuple[float, float]:
    if given is not None:
        return given
    if not values:
        return (0.0, 1.0)
    low, high = min(values), max(values)
    if math.isclose(low, high):
        pad = abs(low) * 0.05 or 0.5
        return (low - pad, high + pad)
    return (low, high)


def _line(x0: int, y0: int, x1: int, y1: int):
    """The dots of a straight line (Bresenham)."""
    dx, dy = abs(x1 - x0), -abs(y1 - y0)
    sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
    err = dx + dy
    while True:
        yield x0, y0
        if x0 == x1 and y0 == y1:
            return
        e2 = 2 * err
        if e2 >= dy:
            err += dy
            x0 += sx
        if e2 <= dx:
            err += dx
            y0 += sy


def line_chart(series: Sequence[Sequence[Point]], width: int, height: int,
               x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None) -> Chart:
    """Draw each series of (x, y) points as connected lines in a ``width``×``height`` cell grid."""
    width, height = max(1, width), max(1, height)
    finite = [[(x, y) for x, y in s if math.isfinite(x) and math.isfinite(y)] for s in series]
    xs = [x for s in finite for x, _ in s]
    ys = [y for s in finite for _, y in s]
    x_lo, x_hi = _span(xs, x_range)
    y_lo, y_hi = _span(ys, y_range)
    dots_w, dots_h = width * 2, height * 4
    bits = [[0] * width for _ in range(height)]
    owners = [[-1] * width for _ in range(height)]

    def to_dot(x: float, y: float) -> tuple[int, int]:
        fx = (x - x_lo) / (x_hi - x_lo) if x_hi > x_lo else 0.0
        fy = (y - y_lo) / (y_hi - y_lo) if y_hi > y_lo else 0.0
        dx = min(dots_w - 1, max(0, round(fx * (dots_w - 1))))
        dy = min(dots_h - 1, max(0, round((1 - fy) * (dots_h - 1))))  # row 0 is the top
        return dx, dy

    for k, points in enumerate(finite):
        dots = [to_dot(x, y) for x, y in points]
        pairs = zip(dots, dots[1:]) if len(dots) > 1 else [(d, d) for d in dots]
        for (x0, y0), (x1, y1) in pairs:
            for dx, dy in _line(x0, y0, x1, y1):
                cx, cy = dx // 2, dy // 4
                bits[cy][cx] |= _DOT_BITS[(dx % 2, dy % 4)]
                owners[cy][cx] = k
    rows = ["".join(chr(BRAILLE_BASE + b) for b in row) for row in bits]
    return Chart(rows, owners, (x_lo, x_hi), (y_lo, y_hi))


def _fmt(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.0f}"


def chart_text(series: Sequence[Sequence[Point]], names: Sequence[str], colors: Sequence[str], width: int, height: int,
               title: str = "", x_range: tuple[float, float] | None = None, y_range: tuple[float, float] | None = None,
               x_label: str = "epoch") -> Text:
    """A titled chart with a y axis (top and bottom values), an x axis and a legend, as rich Text."""
    axis_w = 6
    chart = line_chart(series, max(4, width - axis_w - 1), max(2, height - 3), x_range, y_range)
    y_lo, y_hi = chart.y_range
    x_lo, x_hi = chart.x_range
    text = Text(no_wrap=True, overflow="crop")
    text.append(title, "bold")
    for k, name in enumerate(names):
        text.append("  ")
        text.append("━━", colors[k % len(colors)])
        text.append(f" {name}")
    text.append("\n")
    for r, row in enumerate(chart.rows):
        label = _fmt(y_hi) if r == 0 else _fmt(y_lo) if r == len(chart.rows) - 1 else ""
        text.append(f"{label:>{axis_w}}│", "dim")
        for c, char in enumerate(row):
            owner = chart.owners[r][c]
            text.append(char, colors[owner % len(colors)] if owner >= 0 else None)
        text.append("\n")
    inner = len(chart.rows[0])
    left, right = f"{x_lo:g}", f"{x_hi:g}"
    text.append(" " * axis_w + "└" + "─" * inner + "\n", "dim")
    text.append(" " * (axis_w + 1) + left + f"{x_label}".center(max(0, inner - len(left) - len(right))) + right, "dim")
    return text
