"""SVG geometry for the two charts, as plain numbers and strings for the templates."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .fmt import GIB, gib, tokens

PARTS = (("weights", "Weights"), ("kv_cache", "KV cache"), ("activations", "Activations"),
         ("gradients", "Gradients"), ("optimizer", "Optimizer states"), ("overhead", "Runtime overhead"))


@dataclass(frozen=True)
class Segment:
    key: str
    label: str
    x: str
    width: str
    value: str
    share: str


def stacked_bar(parts: dict[str, int], scale_bytes: int, width: int = 600) -> list[Segment]:
    """Segments of one horizontal bar; `scale_bytes` maps to the full width (shared across a page)."""
    total = sum(parts.values()) or 1
    x = 0.0
    out = []
    for key, label in PARTS:
        v = parts.get(key, 0)
        if v <= 0:
            continue
        w = width * v / max(scale_bytes, 1)
        out.append(Segment(key, label, f"{x:.1f}", f"{max(w, 0.5):.1f}", gib(v), f"{v / total * 100:.1f}%"))
        x += w
    return out


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


@dataclass(frozen=True)
class Line:
    key: str
    label: str
    points: str  # SVG polyline points
    dots: list[tuple[str, str]]


@dataclass(frozen=True)
class HLine:
    y: str
    label: str
    label_y: str
    fits: bool


@dataclass(frozen=True)
class Tick:
    pos: str
    label: str


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    lines: list[Line]
    capacities: list[HLine]
    xticks: list[Tick]
    yticks: list[Tick]

    # Label positions, so the template only places what is computed here.
    @property
    def ytick_x(self) -> int:
        return self.left - 6

    @property
    def xtick_y(self) -> int:
        return self.bottom + 16

    @property
    def xlabel_y(self) -> int:
        return self.height - 4

    @property
    def ylabel_y(self) -> int:
        return self.top + 4

    @property
    def caplabel_x(self) -> int:
        return self.right + 4


def line_chart(contexts: list[int], series: list[tuple[str, str, list[int]]],
               capacities: list[tuple[int, str]], width: int = 720, height: int = 380) -> LineChart:
    """Memory (y, GiB) against context length (x, log2 scale), with horizontal device capacity lines."""
    left, right, top, bottom = 52, width - 150, 14, height - 40
    top_bytes = max(v for _, _, vals in series for v in vals) * 1.08
    step = _nice_step(top_bytes / GIB) * GIB
    ymax = math.ceil(top_bytes / step) * step
    lo, hi = math.log2(contexts[0]), math.log2(contexts[-1])

    def px(c: int) -> float:
        return left + (right - left) * ((math.log2(c) - lo) / (hi - lo) if hi > lo else 0.5)

    def py(b: float) -> float:
        return bottom - (bottom - top) * b / ymax

    lines = []
    for key, label, vals in series:
        pts = [(px(c), py(v)) for c, v in zip(contexts, vals)]
        lines.append(Line(key, label, " ".join(f"{x:.1f},{y:.1f}" for x, y in pts),
                          [(f"{x:.1f}", f"{y:.1f}") for x, y in pts]))
    caps: list[HLine] = []
    last_y = math.inf
    for usable, name in sorted(capacities, key=lambda c: c[0]):
        y = py(usable)
        if usable > ymax or y < top + 4:
            break
        if last_y - y < 12:  # too close to the line below for its label; the per-device table has it
            continue
        last_y = y
        caps.append(HLine(f"{y:.1f}", f"{gib(usable).removesuffix(' GiB')} {name}", f"{y:.1f}", True))
    yticks = [Tick(f"{py(i * step):.1f}", f"{i * step / GIB:g}") for i in range(int(round(ymax / step)) + 1)]
    xt = []
    last_x = -math.inf
    for c in contexts:
        x = px(c)
        if x - last_x >= 34:
            xt.append(Tick(f"{x:.1f}", tokens(c)))
            last_x = x
    return LineChart(width, height, left, right, top, bottom, lines, caps, xt, yticks)


def context_points(max_context: int, chosen: int | None = None) -> list[int]:
    """Powers of two from 512 up to the model's maximum, and the maximum itself."""
    pts = []
    c = 512
    while c < max_context:
        pts.append(c)
        c *= 2
    pts.append(max_context)
    if chosen and chosen not in pts and 512 <= chosen <= max_context:
        pts.append(chosen)
    return sorted(set(pts))
