"""Where the GSPS text labels go: outside the box they name, clear of every marked box and of
each other, inside the image.

Each label is a block of lines, one GSPS text object per line with its own bounding box (PS3.3
C.10.5.1.1: a viewer fits the text to the box), the first line also with an anchor point on
the edge of the marked box that is nearest to the label and Anchor Point Visibility "Y", so a
viewer draws a leader from the label to the mark. Lines have a height of
:func:`line_height` pixels (about 1/45 of the image's smaller side) and a width for
:data:`CHAR_WIDTH` line heights per character.

Placement is greedy and deterministic: labels in the given order, each at the first of a
fixed list of positions around its box (right, left, above, below, the corners, at growing
distances and slid along the sides, nearest first) that lies inside the image and overlaps no
marked box and no label placed before it (each with a margin); when none is free, the position
with the least overlap (covering a marked box weighs :data:`BOX_WEIGHT` times more). The text
is justified towards the mark: right-justified in a label left of its box, left-justified
right of it, centred above or below it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

Box = tuple[float, float, float, float]
"""``(x1, y1, x2, y2)`` in image pixels (x = column, y = row)."""

#: Width of one character, in line heights (a proportional font at the full line height
#: averages about this; at the usual 80 % of it, less).
CHAR_WIDTH = 0.5
#: Free space kept around boxes and labels, in line heights.
MARGIN = 0.25
#: When no position is free: covering a marked box costs this many times covering a label.
BOX_WEIGHT = 4.0


def line_height(rows: int, cols: int) -> float:
    """Line height in pixels for an image of ``rows`` x ``cols``: 1/45 of its smaller side,
    between 12 and 64 px."""
    return float(min(max(min(rows, cols) / 45.0, 12.0), 64.0))


@dataclass(frozen=True)
class PlacedLabel:
    """A label's lines with their bounding boxes, and the anchor on the marked box."""

    lines: list[str]
    line_boxes: list[Box]
    anchor: tuple[float, float]
    justification: str = "LEFT"
    """"LEFT", "RIGHT" or "CENTER" (Bounding Box Text Horizontal Justification)."""

    @property
    def box(self) -> Box:
        """The bounds of all lines."""
        return (self.line_boxes[0][0], self.line_boxes[0][1], self.line_boxes[-1][2],
                self.line_boxes[-1][3])


def _overlap(a: Box, b: Box) -> float:
    """Area of the intersection of two boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _grow(box: Box, by: float) -> Box:
    return (box[0] - by, box[1] - by, box[2] + by, box[3] + by)


def _candidates(target: Box, w: float, h: float, step: float) -> list[tuple[float, float]]:
    """Top-left corners of a ``w`` x ``h`` block around ``target``: right, left, above, below
    and the corners, at growing distances and slid along each side, nearest first."""
    x1, y1, x2, y2 = target
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    out: list[tuple[float, float, float]] = []
    for k in range(1, 25):
        g = step * k
        for m in (0.0, -1.0, 1.0, -2.0, 2.0, -3.0, 3.0):
            dy, dx = m * h, m * w / 2
            for x, y in ((x2 + g, cy - h / 2 + dy), (x1 - g - w, cy - h / 2 + dy),
                         (cx - w / 2 + dx, y1 - g - h), (cx - w / 2 + dx, y2 + g)):
                out.append((abs(m) + k / 8, x, y))
        for x, y in ((x2 + g, y1 - g - h), (x1 - g - w, y1 - g - h), (x2 + g, y2 + g),
                     (x1 - g - w, y2 + g)):
            out.append((0.5 + k / 8, x, y))
    out.sort(key=lambda c: c[0])  # stable: right, left, above, below first at each rank
    return [(x, y) for _, x, y in out]


def _anchor(target: Box, block: Box) -> tuple[float, float]:
    """The point of ``target``'s outline nearest to the centre of ``block``."""
    bx, by = (block[0] + block[2]) / 2, (block[1] + block[3]) / 2
    x = min(max(bx, target[0]), target[2])
    y = min(max(by, target[1]), target[3])
    if target[0] < x < target[2] and target[1] < y < target[3]:  # centre inside: nearest edge
        d = {(target[0], y): x - target[0], (target[2], y): target[2] - x,
             (x, target[1]): y - target[1], (x, target[3]): target[3] - y}
        return min(d, key=lambda p: d[p])
    return x, y


def _justification(target: Box, block: Box) -> str:
    """Towards the mark: RIGHT left of it, LEFT right of it, else CENTER."""
    if block[2] <= target[0]:
        return "RIGHT"
    if block[0] >= target[2]:
        return "LEFT"
    return "CENTER"


def place_labels(targets: Sequence[Box], labels: Sequence[Sequence[str]], rows: int,
                 cols: int) -> list[PlacedLabel]:
    """Place ``labels[i]`` (its lines) next to ``targets[i]`` on a ``cols`` x ``rows`` image.

    Raises:
        ValueError: when ``targets`` and ``labels`` differ in length or a label has no line.
    """
    if len(targets) != len(labels):
        raise ValueError(f"expected one label per target, got {len(labels)} labels for "
                         f"{len(targets)} targets")
    h = line_height(rows, cols)
    margin = MARGIN * h
    obstacles = [_grow(t, margin) for t in targets]
    placed: list[PlacedLabel] = []
    for target, lines in zip(targets, labels, strict=True):
        if not lines:
            raise ValueError("a label needs at least one line")
        lh = min(h, rows / len(lines))
        w = min(max(len(line) for line in lines) * CHAR_WIDTH * lh + lh / 2, float(cols))
        block_h = len(lines) * lh
        best: tuple[float, Box] | None = None
        for x, y in _candidates(target, w, block_h, lh / 2):
            x = min(max(x, 0.0), cols - w)
            y = min(max(y, 0.0), rows - block_h)
            block = (x, y, x + w, y + block_h)
            cost = BOX_WEIGHT * sum(_overlap(block, o) for o in obstacles)
            cost += sum(_overlap(block, _grow(p.box, margin)) for p in placed)
            if best is None or cost < best[0]:
                best = (cost, block)
            if cost == 0.0:
                break
        assert best is not None
        x, y = best[1][0], best[1][1]
        line_boxes = [(x, y + i * lh, x + w, min(y + (i + 1) * lh, float(rows)))
                      for i in range(len(lines))]
        placed.append(PlacedLabel(list(lines), line_boxes, _anchor(target, best[1]),
                                  _justification(target, best[1])))
    return placed
