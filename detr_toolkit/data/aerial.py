"""Generated aerial scenes for small-data benchmarks (numpy + OpenCV only, deterministic from a seed).

Six classes that differ by structure more than colour: car (rounded body, windscreen and rear window), truck (cab,
gap, ribbed cargo box), person (body, head, arms, legs; long shadow), plane (fuselage, swept wings, tail), tree
(lobed, clumpy canopy), boat (pointed hull, deck, cabin, wake). Every instance gets a random colour (most trees
green, most planes and boats white, half the trucks; the rest from one distribution all classes share), a random
size, aspect, rotation, texture and shading; objects cluster (parking rows, groups),
follow roads, boats prefer water, and overlap one another. Around them: textured backgrounds (patchwork fields with
crop rows and hedges, noise terrain, roads with markings, rivers and lakes), unlabelled distractors of the same sizes
(rocks, containers, bushes, logs, manholes, poles), occluders drawn over objects (bridges, wires, roofs, cloud puffs),
sun shadows, lighting gradients and cloud shadows, blur, sensor noise and JPEG compression. Labels are the tight
boxes of each object's visible pixels; an object less than 40% visible (occluded or cut by the image border) is not
labelled.

Two kinds of dataset (KINDS), as the camera's altitude makes them:
- "dense": 160-224 px tiles of a high-altitude survey, 6-19 small objects each (median ~25 px), as in aerial tile
  datasets, trained at 224 px;
- "medium": a low-flying drone's frames, 1-6 objects of 45-210 px (median ~105 px) of several classes, no
  distractors nor roofs, trained at 192 px.
They are calibrated on YOLOv8n from scratch (scripts/bench_small_data.py), since a ranking needs the peer at mAP50
>= 0.3 within the longest budget: with 400 training images, 45 minutes on one core reach mAP50 0.39 on medium
(63 epochs at 192 px; at 256 px, 37 epochs, and with roofs and smaller objects: 0.27) and 0.29 on dense,
just short (50 epochs at 224 px; on 320-416 px tiles at 416 px, 19 epochs: 0.16; 256-320 px tiles at 320 px, 25
epochs: 0.24; 192-256 px tiles at 256 px, 39 epochs: 0.27, those two with more distractors, occluders and
roofs).
Harder versions (15-60 objects on 640 px tiles; 120 images) kept it below 0.11.

Train and val are different scenes from one distribution, as a user's own split of one capture campaign: each
split draws from random streams of its own; backgrounds are fields, terrain and urban blocks (roofs, streets and
parking lots) in five palettes (temperate, lush, arid, winter, autumn), plus crops of real photos (`photos`, e.g.
bus.jpg and zidane.jpg). (An earlier version drew val from palettes and a style training never saw: YOLOv8n from
scratch then stayed below mAP50 0.03 after 15 minutes, too hard a set to rank two detectors on.)
Written as a YOLO dataset: root/data.yaml, root/images/{train,val}, root/labels/{...}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml


@dataclass(frozen=True)
class Kind:
    """How one kind of dataset draws its images: ranges (low, high) per image, counts with high excluded (numpy's
    `integers`: (0, 1) is none)."""

    width: tuple[int, int]  # image width in pixels (the height follows from a random aspect ratio)
    objects: tuple[int, int]  # labelled objects drawn (fewer stay labelled: occluded, cut by the border)
    scale: tuple[float, float]  # object size over SIZES (the altitude), log-uniform
    distractors: tuple[int, int]  # unlabelled things of the objects' sizes
    occluders: tuple[int, int]  # bridges, wires, roofs and cloud puffs drawn over everything
    buildings: tuple[int, int]  # unlabelled roofs on fields and terrain (urban scenes have their own blocks)
    imgsz: int  # the input size detectors train and score at (the benchmark's, both sides)


KINDS = {
    "dense": Kind(
        width=(160, 224),
        objects=(6, 20),
        scale=(1.0, 1.6),
        distractors=(0, 5),
        occluders=(0, 1),
        buildings=(0, 3),
        imgsz=224,
    ),
    "medium": Kind(
        width=(480, 640),
        objects=(2, 7),
        scale=(4.0, 7.0),
        distractors=(0, 1),
        occluders=(0, 1),
        buildings=(0, 1),
        imgsz=192,
    ),
}

CLASSES = ["car", "truck", "person", "plane", "tree", "boat"]
SIZES = {  # length of the long side in pixels at scale 1 (each image draws a scale, its altitude: Kind.scale)
    "car": (13, 28), "truck": (22, 42), "person": (10, 18), "plane": (24, 52), "tree": (12, 36), "boat": (15, 46),
}  # fmt: skip
SHADOW = {"car": 0.15, "truck": 0.2, "person": 0.7, "plane": 0.12, "tree": 0.45, "boat": 0.06}  # height / length
SS = 4  # objects are drawn SS times larger, then area-downsampled (anti-aliasing)
MIN_VISIBLE = 0.4  # objects with less of their area visible are not labelled
PALETTES = {  # HSV boxes (OpenCV hue 0-180, saturation and value 0-1) of background materials
    "temperate": [(35, 60, 0.3, 0.7, 0.3, 0.65), (20, 32, 0.35, 0.7, 0.5, 0.8), (8, 18, 0.3, 0.6, 0.25, 0.5)],
    "lush": [(40, 75, 0.35, 0.65, 0.2, 0.5), (25, 40, 0.3, 0.6, 0.4, 0.7), (12, 22, 0.2, 0.5, 0.3, 0.55)],
    "arid": [(8, 22, 0.2, 0.55, 0.55, 0.9), (0, 10, 0.35, 0.6, 0.4, 0.7), (15, 25, 0.1, 0.3, 0.7, 0.95)],
    "winter": [(90, 120, 0.0, 0.12, 0.65, 0.97), (20, 40, 0.05, 0.2, 0.35, 0.6), (100, 115, 0.05, 0.15, 0.45, 0.7)],
    "autumn": [(0, 20, 0.5, 0.85, 0.35, 0.7), (20, 35, 0.45, 0.8, 0.45, 0.8), (40, 55, 0.2, 0.45, 0.25, 0.45)],
}


# --- drawing helpers ---------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """OpenCV HSV (hue 0-180, s and v 0-1) -> BGR float32 0-255."""
    pixel = np.array([[[(h % 180) * 2, s, v]]], np.float32)  # float HSV: hue in degrees
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0] * 255


def _hsv_in(rng: np.random.Generator, box: tuple) -> np.ndarray:
    h0, h1, s0, s1, v0, v1 = box
    return _hsv(rng.uniform(h0, h1), rng.uniform(s0, s1), rng.uniform(v0, v1))


TYPICAL_COLOURS = {  # class -> (share of instances in the class's own colours, HSV boxes as PALETTES): as in real
    # aerial photos, colour hints at the class (white planes and boats, green trees) without deciding it
    "truck": (0.5, [(0, 180, 0.0, 0.08, 0.75, 0.97)]),
    "plane": (0.8, [(0, 180, 0.0, 0.06, 0.8, 0.98), (100, 120, 0.05, 0.2, 0.6, 0.85)]),
    "tree": (0.85, [(35, 75, 0.35, 0.8, 0.2, 0.6), (15, 30, 0.5, 0.85, 0.4, 0.75)]),
    "boat": (0.7, [(0, 180, 0.0, 0.06, 0.8, 0.98)]),
}


def _object_colour(rng: np.random.Generator, name: str | None = None) -> np.ndarray:
    """A colour of class `name` (TYPICAL_COLOURS), or from the distribution every class shares: paints, neutrals
    and earth tones."""
    share, boxes = TYPICAL_COLOURS.get(name, (0.0, []))
    if boxes and rng.random() < share:
        return _hsv_in(rng, boxes[int(rng.integers(len(boxes)))])
    kind = rng.random()
    if kind < 0.4:
        return _hsv(rng.uniform(0, 180), rng.uniform(0.35, 1), rng.uniform(0.35, 1))
    if kind < 0.72:
        return _hsv(rng.uniform(0, 180), rng.uniform(0, 0.15), rng.uniform(0.08, 0.97))
    return _hsv(rng.uniform(10, 80), rng.uniform(0.2, 0.7), rng.uniform(0.2, 0.75))


def _noise(rng: np.random.Generator, h: int, w: int, cells: float, octaves: int = 4, decay: float = 0.55) -> np.ndarray:
    """Multi-octave value noise, (h, w) float32 with mean 0 and std 1; `cells`: features across the width."""
    out = np.zeros((h, w), np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        nx = max(2, int(cells * 2**octave))
        ny = max(2, int(nx * h / w))
        if nx > w // 2:
            break
        grid = rng.standard_normal((ny + 1, nx + 1)).astype(np.float32)
        out += amplitude * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        amplitude *= decay
    return (out - out.mean()) / (out.std() + 1e-6)


def _ellipse(cx: float, cy: float, ax: float, ay: float, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], -1)


def _rounded_rect(cx: float, cy: float, length: float, width: float, radius: float) -> np.ndarray:
    radius = min(radius, length / 2, width / 2)
    points = []
    for (sx, sy), start in zip(((1, 1), (-1, 1), (-1, -1), (1, -1)), (0, 90, 180, 270)):
        t = np.radians(np.linspace(start, start + 90, 6))
        points.append(np.stack([cx + sx * (length / 2 - radius) + radius * np.cos(t),
                                cy + sy * (width / 2 - radius) + radius * np.sin(t)], -1))  # fmt: skip
    return np.concatenate(points)


def _rect(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _blob(rng: np.random.Generator, radius: float, roughness: float, n: int = 40) -> np.ndarray:
    """A lobed closed outline around (0, 0): radius modulated by a few random harmonics."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 8):
        r += rng.uniform(0, roughness) / k**0.5 * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    return np.stack([radius * r * np.cos(t), radius * r * np.sin(t)], -1)


class Sketch:
    """An object drawn in its own frame (x along its length, nose at +x, y across; pixels, origin at its centre)
    onto a patch SS times finer, rotated by `angle` and stretched by (sx, sy); finish() -> image-scale patch."""

    def __init__(self, extent: float, angle: float, sx: float = 1.0, sy: float = 1.0):
        self.half = int(np.ceil(extent * 0.6 * max(sx, sy))) + 3  # the patch spans +-half image pixels
        n = 2 * self.half * SS
        self.colour = np.zeros((n, n, 3), np.float32)
        self.alpha = np.zeros((n, n), np.float32)
        c, s = np.cos(angle), np.sin(angle)
        self.matrix = np.array([[c, -s], [s, c]]) @ np.diag([sx, sy]) * SS
        self.angle = angle

    def _points(self, points: np.ndarray) -> list[np.ndarray]:
        points = np.asarray(points, np.float64) @ self.matrix.T + self.half * SS
        return [np.round(points * 16).astype(np.int32)]  # 4 fractional bits (shift=4)

    def poly(self, points: np.ndarray, colour: np.ndarray, body: bool = True) -> None:
        """Fill a polygon; `body` False: paint only (a detail inside the object, not part of its outline)."""
        pts = self._points(points)
        cv2.fillPoly(self.colour, pts, [float(c) for c in colour], cv2.LINE_8, 4)
        if body:
            cv2.fillPoly(self.alpha, pts, 1.0, cv2.LINE_8, 4)

    def line(self, a: tuple, b: tuple, width: float, colour: np.ndarray, body: bool = False) -> None:
        (ax, ay), (bx, by) = a, b
        d = np.array([bx - ax, by - ay], np.float64)
        d = d / (np.linalg.norm(d) + 1e-9) * width / 2
        n = np.array([-d[1], d[0]])
        self.poly(np.array([[ax, ay] + n, [bx, by] + n, [bx, by] - n, [ax, ay] - n]), colour, body)

    def finish(self, rng: np.random.Generator, light: np.ndarray, shade: float, grain: float
               ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """-> (premultiplied BGR, alpha) at image scale, lit from `light` (a unit vector in the image)."""
        n = self.colour.shape[0]
        ramp = (np.arange(n, dtype=np.float32) - n / 2) / (n / 2)
        lit = 1 + shade * (light[0] * ramp[None, :] + light[1] * ramp[:, None])
        colour = self.colour * lit[..., None]
        size = (2 * self.half, 2 * self.half)
        premultiplied = cv2.resize(colour * self.alpha[..., None], size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(self.alpha, size, interpolation=cv2.INTER_AREA)
        if grain > 0:
            premultiplied += rng.normal(0, grain, premultiplied.shape).astype(np.float32) * alpha[..., None]
        return premultiplied, alpha


# --- the six classes (drawn in their own frame: length L along x, nose at +x) ----------------------------------


def _glass(rng: np.random.Generator) -> np.ndarray:
    g = rng.uniform(15, 70)
    return np.array([g * rng.uniform(1.0, 1.4), g * rng.uniform(0.95, 1.2), g], np.float32)


def draw_car(sk: Sketch, rng: np.random.Generator, length: float, colour: np.ndarray) -> None:
    L, W = length, length * rng.uniform(0.42, 0.54)
    sk.poly(_rounded_rect(0, 0, L, W, W * rng.uniform(0.22, 0.45)), colour)
    glass = _glass(rng)
    front, back = rng.uniform(0.05, 0.12) * L, -rng.uniform(0.2, 0.28) * L
    sk.poly(
        np.array([[front, -0.4 * W], [front + 0.17 * L, -0.34 * W], [front + 0.17 * L, 0.34 * W], [front, 0.4 * W]]),
        glass,
        body=False,
    )  # fmt: skip  windscreen
    sk.poly(_rect(back - 0.1 * L, back, -0.34 * W, 0.34 * W), glass, body=False)  # rear window
    if rng.random() < 0.6:  # side windows
        for side in (-1, 1):
            sk.poly(_rect(back, front, side * 0.36 * W, side * 0.45 * W), glass, body=False)
    if rng.random() < 0.3:  # sunroof or roof rack
        sk.poly(_rect(back + 0.05 * L, front - 0.05 * L, -0.2 * W, 0.2 * W), colour * rng.uniform(0.4, 1.3), False)
    if rng.random() < 0.4:  # headlights
        for side in (-1, 1):
            sk.poly(_ellipse(0.46 * L, side * 0.32 * W, 0.03 * L, 0.08 * W, 8), np.full(3, 235.0), body=False)


def draw_truck(sk: Sketch, rng: np.random.Generator, length: float, colour: np.ndarray) -> None:
    L, W = length, length * rng.uniform(0.3, 0.4)
    cab = rng.uniform(0.18, 0.25) * L
    sk.poly(_rounded_rect(L / 2 - cab / 2, 0, cab, W * 0.95, W * 0.2), colour)
    sk.poly(_rect(L / 2 - cab * 0.45, L / 2 - cab * 0.12, -0.4 * W, 0.4 * W), _glass(rng), body=False)
    cargo_colour = _object_colour(rng) if rng.random() < 0.5 else np.full(3, rng.uniform(150, 245), np.float32)
    end = L / 2 - cab - rng.uniform(0.02, 0.05) * L
    cargo_width = W * rng.uniform(1.0, 1.1)
    sk.poly(_rect(-L / 2, end, -cargo_width / 2, cargo_width / 2), cargo_colour)
    step = rng.uniform(0.06, 0.11) * L
    for x in np.arange(-L / 2 + step, end - step / 2, step):  # ribs across the box
        sk.line((x, -cargo_width / 2), (x, cargo_width / 2), 0.05 * W, cargo_colour * rng.uniform(0.6, 0.8))


def draw_person(sk: Sketch, rng: np.random.Generator, length: float, colour: np.ndarray) -> None:
    L = length
    hair = _hsv(rng.uniform(5, 25), rng.uniform(0.2, 0.7), rng.uniform(0.08, 0.6))
    if rng.random() < 0.5:  # legs (walking: one ahead of the other)
        trousers = _object_colour(rng) * 0.7
        stride = rng.uniform(-0.1, 0.1) * L
        for side in (-1, 1):
            sk.poly(_ellipse(-0.36 * L + side * stride, side * 0.09 * L, 0.16 * L, 0.065 * L, 12), trousers)
    sk.poly(_ellipse(-0.04 * L, 0, 0.32 * L, rng.uniform(0.18, 0.25) * L, 16), colour)
    for side in (-1, 1):  # arms
        swing = rng.uniform(-0.08, 0.08) * L
        sk.poly(_ellipse(swing, side * 0.24 * L, 0.17 * L, 0.065 * L, 12), colour * rng.uniform(0.75, 1.0))
    head = hair if rng.random() < 0.7 else _object_colour(rng)  # hair or a hat
    sk.poly(_ellipse(0.3 * L, 0, 0.17 * L, 0.16 * L, 16), head)


def draw_plane(sk: Sketch, rng: np.random.Generator, length: float, colour: np.ndarray) -> None:
    L = length
    span, sweep, chord = L * rng.uniform(0.8, 1.15), L * rng.uniform(0.04, 0.25), L * rng.uniform(0.12, 0.2)
    root = rng.uniform(0.05, 0.18) * L
    for side in (-1, 1):
        sk.poly(np.array([[root, 0], [root - sweep, side * span / 2], [root - sweep - chord * 0.45, side * span / 2],
                          [root - chord, 0]]), colour * rng.uniform(0.85, 1.0))  # fmt: skip
        tail = 0.34 * L * rng.uniform(0.8, 1.2)
        sk.poly(np.array([[-0.36 * L, 0], [-0.44 * L, side * tail / 2], [-0.49 * L, side * tail / 2],
                          [-0.47 * L, 0]]), colour * 0.92)  # fmt: skip
        if rng.random() < 0.6:  # engines
            y = side * span * rng.uniform(0.15, 0.3)
            sk.poly(_ellipse(root - sweep * abs(y) / (span / 2) + 0.02 * L, y, 0.07 * L, 0.025 * L, 10),
                    colour * 0.55)  # fmt: skip
    sk.poly(_ellipse(0, 0, 0.5 * L, rng.uniform(0.045, 0.07) * L, 32), colour)
    sk.poly(_ellipse(0.44 * L, 0, 0.03 * L, 0.035 * L, 8), _glass(rng), body=False)  # cockpit
    sk.line((-0.3 * L, 0), (-0.5 * L, 0), 0.03 * L, colour * 0.6)  # fin


def draw_tree(sk: Sketch, rng: np.random.Generator, length: float, colour: np.ndarray) -> None:
    R = length / 2 * 0.8
    sk.poly(_blob(rng, R, rng.uniform(0.1, 0.3)), colour * 0.75)
    for _ in range(int(rng.integers(7, 16))):  # leaf clumps, lighter towards the centre
        angle, distance = rng.uniform(0, 2 * np.pi), R * np.sqrt(rng.uniform(0, 0.55))
        r = R * rng.uniform(0.18, 0.38)
        tone = rng.uniform(0.6, 1.05) + 0.25 * (1 - distance / R)
        sk.poly(_blob(rng, r, 0.25, 14) + [distance * np.cos(angle), distance * np.sin(angle)], colour * tone)


def draw_boat(sk: Sketch, rng: np.random.Generator, length: float, colour: np.ndarray) -> None:
    L, W = length, length * rng.uniform(0.28, 0.4)
    shoulder = rng.uniform(0.0, 0.2) * L
    t = np.linspace(0, 1, 10)
    bow_x = shoulder + (L / 2 - shoulder) * t
    bow_y = W / 2 * (1 - t**1.7) ** 0.8
    side = np.stack([bow_x, bow_y], -1)
    stern = np.array([[-L / 2, W * 0.38], [-L / 2 + 0.03 * L, W / 2]])
    top = np.concatenate([stern, side])
    hull = np.concatenate([top, (top * [1, -1])[::-1]])
    sk.poly(hull, colour)
    deck = _object_colour(rng) if rng.random() < 0.3 else np.full(3, rng.uniform(120, 240), np.float32)
    sk.poly(hull * [0.88, 0.72], deck, body=False)
    if rng.random() < 0.75:  # cabin
        x0, x1 = -rng.uniform(0.1, 0.35) * L, rng.uniform(-0.05, 0.12) * L
        cabin = np.full(3, rng.uniform(170, 250), np.float32)
        sk.poly(_rounded_rect((x0 + x1) / 2, 0, x1 - x0, 0.55 * W, 0.1 * W), cabin, body=False)
        sk.poly(_rect(x1 - 0.05 * L, x1, -0.24 * W, 0.24 * W), _glass(rng), body=False)


DRAW = {"car": draw_car, "truck": draw_truck, "person": draw_person, "plane": draw_plane, "tree": draw_tree,
        "boat": draw_boat}  # fmt: skip


# --- distractors (unlabelled, of the objects' sizes) and occluders (drawn over objects) --------------------------


def draw_distractor(sk: Sketch, rng: np.random.Generator, length: float) -> float:
    """Draw one unlabelled thing; -> its shading strength."""
    kind = rng.choice(["rock", "container", "bush", "log", "manhole", "litter", "mark"],
                      p=[0.22, 0.2, 0.18, 0.1, 0.08, 0.12, 0.1])  # fmt: skip
    colour = _object_colour(rng)
    if kind == "rock":
        grey = _hsv(rng.uniform(5, 30), rng.uniform(0, 0.3), rng.uniform(0.3, 0.8))
        n = int(rng.integers(5, 10))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = length / 2 * rng.uniform(0.55, 1.0, n)
        sk.poly(np.stack([r * np.cos(t), r * np.sin(t) * rng.uniform(0.5, 1)], -1), grey)
        return 0.5
    if kind == "container":  # sharp box with a ridge: like a vehicle, but no windows nor rounding
        width = length / rng.uniform(1.0, 4.0)
        sk.poly(_rect(-length / 2, length / 2, -width / 2, width / 2), colour)
        sk.line((-length / 2, 0), (length / 2, 0), max(0.5, width * 0.08), colour * 0.7)
        return 0.35
    if kind == "bush":
        sk.poly(_blob(rng, length * 0.22, 0.3, 16), colour * 0.8)
        return 0.4
    if kind == "log":
        sk.poly(_ellipse(0, 0, length / 2, length / rng.uniform(8, 14), 16), colour * 0.7)
        return 0.3
    if kind == "manhole":
        sk.poly(_ellipse(0, 0, length * 0.25, length * 0.25, 20), colour * 0.5)
        sk.poly(_ellipse(0, 0, length * 0.17, length * 0.17, 20), colour, body=False)
        return 0.1
    if kind == "litter":
        sk.poly(rng.uniform(-length / 2, length / 2, (int(rng.integers(3, 6)), 2)), colour)
        return 0.2
    for _ in range(int(rng.integers(1, 4))):  # painted marks and poles: strokes
        a, b = rng.uniform(-length / 2, length / 2, (2, 2))
        sk.line(tuple(a), tuple(b), rng.uniform(1.0, 2.5), colour, body=True)
    return 0.0


def _walk(rng: np.random.Generator, w: int, h: int, curvature: float) -> np.ndarray:
    """A road or river: a random walk from one border across the image."""
    edge = rng.integers(4)
    start = [(rng.uniform(0, w), -20), (w + 20, rng.uniform(0, h)), (rng.uniform(0, w), h + 20),
             (-20, rng.uniform(0, h))][edge]  # fmt: skip
    heading = [np.pi / 2, np.pi, -np.pi / 2, 0][edge] + rng.uniform(-0.6, 0.6)
    points, turn = [np.array(start, np.float64)], 0.0
    for _ in range(200):
        turn = 0.8 * turn + rng.normal(0, curvature)
        heading += turn
        points.append(points[-1] + 30 * np.array([np.cos(heading), np.sin(heading)]))
        x, y = points[-1]
        if not (-60 < x < w + 60 and -60 < y < h + 60):
            break
    return np.array(points)


# --- backgrounds ------------------------------------------------------------------------------------------------


class Scene:
    """A background image (float32 BGR) and what objects may follow: roads [(points, width)] and a water mask."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.roads: list[tuple[np.ndarray, float]] = []
        self.water: np.ndarray | None = None  # (h // 4, w // 4) bool


def _texture(rng: np.random.Generator, h: int, w: int, strength: float) -> np.ndarray:
    """Multiplicative texture: coarse blotches, mid-scale mottling and grain."""
    t = 1 + strength * (0.5 * _noise(rng, h, w, 4, 3) + 0.35 * _noise(rng, h, w, 40, 2) + 0.3 * _fine(rng, h, w))
    return t + rng.standard_normal((h, w), np.float32) * (strength * 0.25)


def _fine(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Noise with 3-6 pixel features: grass, gravel, roof grain."""
    grid = rng.standard_normal((h // 4 + 1, w // 4 + 1), np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _clutter(rng: np.random.Generator, image: np.ndarray, density: float) -> None:
    """Small marks (stones, tufts, stains, twigs) tinted from the ground under them: `density` per 1000 px."""
    h, w = image.shape[:2]
    for _ in range(int(density * h * w / 1000)):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        colour = [float(v) for v in image[y, x] * rng.uniform(0.5, 1.5)]
        if rng.random() < 0.7:
            cv2.circle(image, (x, y), int(rng.integers(1, 4)), colour, -1, cv2.LINE_AA)
        else:
            a = rng.uniform(0, np.pi)
            d = rng.uniform(2, 9)
            cv2.line(image, (x, y), (int(x + d * np.cos(a)), int(y + d * np.sin(a))), colour, 1, cv2.LINE_AA)


def _fields(rng: np.random.Generator, h: int, w: int, palette: list) -> Scene:
    """Patchwork of fields (Voronoi cells) with crop rows and dark hedges."""
    k = int(rng.integers(8, 30))
    q = 2
    hq, wq = h // q + 1, w // q + 1
    seeds = rng.uniform(0, 1, (k, 2)) * [wq, hq]
    ys, xs = np.mgrid[0:hq, 0:wq].astype(np.float32)
    warp = _noise(rng, hq, wq, 3, 3) * rng.uniform(2, 10)
    d = (xs[None] + warp - seeds[:, 0, None, None]) ** 2 + (ys[None] - warp - seeds[:, 1, None, None]) ** 2
    labels = cv2.resize(d.argmin(0).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    colours = np.stack([_hsv_in(rng, palette[int(rng.integers(len(palette)))]) for _ in range(k)])
    theta, period = rng.uniform(0, np.pi, k), rng.uniform(3, 14, k)
    amplitude = rng.uniform(0.03, 0.3, k) * (rng.random(k) < 0.6)
    roughness = rng.uniform(0.02, 0.14, k)  # grain of each field: smooth soil to rough grass
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = (xs * np.cos(theta)[labels] + ys * np.sin(theta)[labels]) * (2 * np.pi / period)[labels]
    wobble = 1 + 0.5 * _noise(rng, h, w, 12, 2)  # rows fade in and out
    rows = 1 + amplitude[labels] * wobble * np.sin(phase) + roughness[labels] * _fine(rng, h, w)
    image = colours[labels] * (rows * _texture(rng, h, w, 0.12))[..., None]
    edges = (np.diff(labels, axis=0, prepend=labels[:1]) != 0) | (np.diff(labels, axis=1, prepend=labels[:, :1]) != 0)
    edges = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=int(rng.integers(0, 3)))
    hedge = _hsv_in(rng, palette[0]) * 0.5
    keep = (edges > 0) & (rng.random() < 0.8)
    image[keep] = image[keep] * 0.3 + hedge * 0.7
    image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.8)
    _clutter(rng, image, rng.uniform(1, 6))
    return Scene(image)


def _terrain(rng: np.random.Generator, h: int, w: int, palette: list) -> Scene:
    """Smooth terrain: noise mapped through a ramp of palette colours, mottling and speckles."""
    ramp = np.stack([_hsv_in(rng, palette[int(rng.integers(len(palette)))]) for _ in range(3)])
    t = np.clip(_noise(rng, h, w, rng.uniform(1.5, 4), 5, 0.6) * 0.35 + 0.5, 0, 1)
    t2 = np.clip(t * 2, 0, 1)[..., None]
    t3 = np.clip(t * 2 - 1, 0, 1)[..., None]
    image = ramp[0] * (1 - t2) + ramp[1] * (t2 - t3) + ramp[2] * t3
    image = image * _texture(rng, h, w, rng.uniform(0.08, 0.2))[..., None]
    image = image.astype(np.float32)
    _clutter(rng, image, rng.uniform(1, 8))
    return Scene(image)


def _urban(rng: np.random.Generator, h: int, w: int, palette: list) -> Scene:
    """(val only) A city: blocks of roofs, parking lots and parks between streets, on a rotated grid."""
    asphalt = _hsv(rng.uniform(0, 180), rng.uniform(0, 0.08), rng.uniform(0.28, 0.5))
    image = np.ones((h, w, 3), np.float32) * asphalt * _texture(rng, h, w, 0.08)[..., None]
    scene = Scene(image)
    angle = rng.uniform(0, np.pi / 2)
    block, street = rng.uniform(90, 200), rng.uniform(14, 30)
    c, s = np.cos(angle), np.sin(angle)
    axes = np.array([[c, s], [-s, c]])
    reach = int(np.hypot(h, w) / block) + 2
    centre = np.array([w / 2, h / 2]) + rng.uniform(-block, block, 2)
    for i in range(-reach, reach + 1):  # streets: centre lines for the cars
        for direction in (0, 1):
            offset = (i + 0.5) * block
            a = centre + axes[1 - direction] * offset - axes[direction] * reach * block
            b = centre + axes[1 - direction] * offset + axes[direction] * reach * block
            scene.roads.append((np.array([a, b]), street))
            if rng.random() < 0.5:
                for k in range(0, int(2 * reach * block), 24):  # lane dashes
                    p = a + axes[direction] * k
                    q = p + axes[direction] * 10
                    cv2.line(image, tuple(np.int32(p)), tuple(np.int32(q)), (215, 215, 215), 1, cv2.LINE_AA)
    for i in range(-reach, reach):
        for j in range(-reach, reach):
            origin = centre + axes[0] * (i * block + block / 2) + axes[1] * (j * block + block / 2)
            if not (-block < origin[0] < w + block and -block < origin[1] < h + block):
                continue
            inner = block - street

            def quad(u0: float, u1: float, v0: float, v1: float, o: np.ndarray = origin) -> np.ndarray:
                return np.int32([o + axes[0] * u + axes[1] * v for u, v in ((u0, v0), (u1, v0), (u1, v1), (u0, v1))])

            kind = rng.choice(["roofs", "parking", "park"], p=[0.6, 0.25, 0.15])
            pavement = asphalt * rng.uniform(1.2, 1.6)
            cv2.fillPoly(image, [quad(0, inner, 0, inner)], [float(v) for v in pavement])
            if kind == "park":
                grass = _hsv_in(rng, palette[int(rng.integers(len(palette)))])
                cv2.fillPoly(image, [quad(4, inner - 4, 4, inner - 4)], [float(v) for v in grass])
            elif kind == "parking":
                cv2.fillPoly(image, [quad(3, inner - 3, 3, inner - 3)], [float(v) for v in asphalt * 0.9])
                for u in np.arange(6, inner - 6, rng.uniform(9, 14)):  # stall lines
                    for v0, v1 in ((4, inner * 0.35), (inner * 0.65, inner - 4)):
                        cv2.line(image, tuple(quad(u, u, v0, v1)[0]), tuple(quad(u, u, v0, v1)[2]),
                                 (225, 225, 225), 1, cv2.LINE_AA)  # fmt: skip
                scene.roads.append(
                    (
                        np.float64(
                            [
                                origin + axes[0] * inner / 2 + axes[1] * 5,
                                origin + axes[0] * inner / 2 + axes[1] * (inner - 5),
                            ]
                        ),
                        inner,
                    )
                )
            else:
                u = 3.0
                while u < inner - 12:
                    depth = min(rng.uniform(20, 70), inner - 3 - u)
                    v0 = rng.uniform(3, inner * 0.3)
                    v1 = rng.uniform(inner * 0.6, inner - 3)
                    roof = _hsv(rng.uniform(0, 30), rng.uniform(0, 0.5), rng.uniform(0.3, 0.85))
                    shadow = quad(u + 4, u + depth + 4, v0 + 4, v1 + 4)
                    cv2.fillPoly(image, [shadow], [float(v) for v in pavement * 0.5])
                    cv2.fillPoly(image, [quad(u, u + depth, v0, v1)], [float(v) for v in roof])
                    ridge = quad(u + depth / 2, u + depth / 2, v0, v1)
                    cv2.line(image, tuple(ridge[0]), tuple(ridge[2]), [float(v) for v in roof * 0.75], 1)
                    for _ in range(int(rng.integers(0, 4))):  # rooftop units
                        a = rng.uniform(u + 2, u + depth - 6)
                        b = rng.uniform(v0 + 2, v1 - 6)
                        cv2.fillPoly(image, [quad(a, a + 4, b, b + 4)], [float(v) for v in roof * 1.3])
                    u += depth + rng.uniform(2, 12)
    scene.image = image * _texture(rng, h, w, 0.1)[..., None]
    _clutter(rng, scene.image, rng.uniform(0.5, 3))
    return scene


def photo_crop(rng: np.random.Generator, h: int, w: int, photos: list[np.ndarray]) -> np.ndarray:
    """A random crop of a real photo, rescaled to (h, w), flipped, colour-shifted, textured."""
    photo = photos[int(rng.integers(len(photos)))]
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.3, 1.0) * min(ph / h, pw / w)
    ch, cw = max(16, int(h * scale)), max(16, int(w * scale))
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = cv2.resize(photo[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    hsv = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-20, 20)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.4, 1.3), 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.6, 1.2), 0, 255)
    image = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
    return image * _texture(rng, h, w, rng.uniform(0.03, 0.12))[..., None]


def _add_roads_and_water(rng: np.random.Generator, scene: Scene, palette: list) -> None:
    h, w = scene.image.shape[:2]
    image = scene.image
    if rng.random() < 0.4:  # a river or a lake
        water_colour = _hsv(rng.uniform(40, 115), rng.uniform(0.15, 0.45), rng.uniform(0.2, 0.5))
        mask = np.zeros((h, w), np.uint8)
        if rng.random() < 0.6:
            path = _walk(rng, w, h, 0.04)
            cv2.polylines(mask, [np.int32(path)], False, 1, int(rng.uniform(50, 160)), cv2.LINE_AA)
        else:
            mask[_noise(rng, h, w, 2.5, 3) > rng.uniform(0.3, 1.0)] = 1
        soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 2)[..., None]
        ripples = 1 + 0.06 * _noise(rng, h, w, 60, 2)[..., None]
        bank = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 6)[..., None]
        bank = (bank > 0.05) & (bank < 0.6)
        image[:] = np.where(bank, image * 0.75, image)
        image[:] = image * (1 - soft) + water_colour * ripples * soft
        scene.water = mask[::4, ::4] > 0
    for _ in range(int(rng.integers(0, 4))):
        path = _walk(rng, w, h, rng.uniform(0.0, 0.05))
        width = rng.uniform(5, 18)
        paved = rng.random() < 0.6
        colour = (_hsv(rng.uniform(0, 180), rng.uniform(0, 0.08), rng.uniform(0.25, 0.55)) if paved
                  else _hsv_in(rng, palette[-1]) * 1.15)  # fmt: skip
        pts = [np.int32(path)]
        cv2.polylines(image, pts, False, [float(v) for v in colour * 0.7], int(width + 3), cv2.LINE_AA)
        cv2.polylines(image, pts, False, [float(v) for v in colour], int(width), cv2.LINE_AA)
        if paved and rng.random() < 0.6:  # dashed centre line
            for a, b in zip(path[:-1:2], path[1::2]):
                mid = (a + b) / 2
                cv2.line(image, tuple(np.int32(a)), tuple(np.int32(mid)), (210, 210, 210), 1, cv2.LINE_AA)
        scene.roads.append((path, width))


def _paste_photo_patches(rng: np.random.Generator, scene: Scene, photos: list[np.ndarray]) -> None:
    """(train) 1-3 rotated, feathered photo crops in a procedural scene: real textures among the synthetic ones."""
    h, w = scene.image.shape[:2]
    for _ in range(int(rng.integers(1, 4))):
        ph, pw = int(rng.uniform(0.15, 0.4) * h), int(rng.uniform(0.15, 0.4) * w)
        patch = photo_crop(rng, ph, pw, photos)
        mask = np.zeros((ph, pw), np.float32)
        cv2.fillPoly(mask, [np.int32(_blob(rng, min(ph, pw) * 0.45, 0.25) * [pw / min(ph, pw), ph / min(ph, pw)]
                                     + [pw / 2, ph / 2])], 1.0)  # fmt: skip
        mask = cv2.GaussianBlur(mask, (0, 0), 3)[..., None]
        y, x = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        region = scene.image[y : y + ph, x : x + pw]
        region[:] = region * (1 - mask) + patch * mask


def background(rng: np.random.Generator, h: int, w: int, photos: list[np.ndarray], buildings: tuple[int, int]
               ) -> Scene:  # fmt: skip
    palette = list(PALETTES.values())[int(rng.integers(len(PALETTES)))]
    style = rng.choice(
        ["fields", "terrain", "urban", "photo"], p=[0.35, 0.25, 0.2, 0.2] if photos else [0.4, 0.35, 0.25, 0]
    )
    if style == "photo":
        scene = Scene(photo_crop(rng, h, w, photos))
    else:
        scene = {"fields": _fields, "terrain": _terrain, "urban": _urban}[style](rng, h, w, palette)
        if photos and rng.random() < 0.35:
            _paste_photo_patches(rng, scene, photos)
    if style != "urban":
        _add_roads_and_water(rng, scene, palette)
        _buildings(rng, scene.image, int(rng.integers(*buildings)))
    return scene


def _buildings(rng: np.random.Generator, image: np.ndarray, count: int) -> None:
    """Farm buildings and sheds: rotated roofs with a ridge, a few rooftop units and a shadow."""
    h, w = image.shape[:2]
    light = rng.uniform(0, 2 * np.pi)
    for _ in range(count):
        centre = (float(rng.uniform(0, w)), float(rng.uniform(0, h)))
        size = (float(rng.uniform(25, 90)), float(rng.uniform(20, 50)))
        angle = float(rng.uniform(0, 180))
        corners = cv2.boxPoints((centre, size, angle))
        shadow = corners + 0.25 * min(size) * np.array([np.cos(light), np.sin(light)])
        x, y = int(np.clip(centre[0], 0, w - 1)), int(np.clip(centre[1], 0, h - 1))
        cv2.fillPoly(image, [np.int32(shadow)], [float(v) for v in image[y, x] * 0.5], cv2.LINE_AA)
        roof = _hsv(rng.uniform(0, 30), rng.uniform(0, 0.5), rng.uniform(0.3, 0.85))
        cv2.fillPoly(image, [np.int32(corners)], [float(v) for v in roof], cv2.LINE_AA)
        ridge = (corners[0] + corners[1]) / 2, (corners[2] + corners[3]) / 2
        if rng.random() < 0.5:
            ridge = (corners[1] + corners[2]) / 2, (corners[3] + corners[0]) / 2
        cv2.line(image, tuple(np.int32(ridge[0])), tuple(np.int32(ridge[1])), [float(v) for v in roof * 0.7], 1,
                 cv2.LINE_AA)  # fmt: skip


# --- composing an image -----------------------------------------------------------------------------------------


def _paste(image: np.ndarray, premultiplied: np.ndarray, alpha: np.ndarray, cx: float, cy: float
           ) -> tuple[tuple[slice, slice], np.ndarray] | None:  # fmt: skip
    """Alpha-composite a patch centred at (cx, cy); -> (image slices, the patch's alpha inside them) or None."""
    h, w = image.shape[:2]
    n = alpha.shape[0]
    x0, y0 = round(cx) - n // 2, round(cy) - n // 2
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + n, w), min(y0 + n, h)
    if ix0 >= ix1 or iy0 >= iy1:
        return None
    region = (slice(iy0, iy1), slice(ix0, ix1))
    a = alpha[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    p = premultiplied[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0]
    image[region] = image[region] * (1 - a[..., None]) + p
    return region, a


def _shadow(image: np.ndarray, alpha: np.ndarray, cx: float, cy: float, offset: np.ndarray, strength: float) -> None:
    soft = cv2.GaussianBlur(alpha, (0, 0), 0.8)
    _paste(image, np.zeros((*alpha.shape, 3), np.float32), soft * strength, cx + offset[0], cy + offset[1])


def _camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Lighting gradient, cloud shadows, haze, colour cast, blur, resolution loss, sensor noise."""
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi)
    gradient = ((xs - w / 2) * np.cos(direction) + (ys - h / 2) * np.sin(direction)) / max(h, w)
    light = 1 + rng.uniform(0, 0.5) * gradient
    if rng.random() < 0.5:  # vignetting
        light *= 1 - rng.uniform(0.1, 0.35) * (((xs - w / 2) / w) ** 2 + ((ys - h / 2) / h) ** 2) * 2
    if rng.random() < 0.5:  # cloud shadows
        light *= 1 - rng.uniform(0.15, 0.4) * np.clip(_noise(rng, h, w, 2, 3) - 0.3, 0, 1)
    image = image * light[..., None] * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    if rng.random() < 0.3:  # haze
        image = image * (1 - (k := rng.uniform(0.05, 0.3))) + k * rng.uniform(170, 230)
    if rng.random() < 0.25:  # lower resolution, upscaled
        f = rng.uniform(0.5, 0.8)
        small = cv2.resize(image, (int(w * f), int(h * f)), interpolation=cv2.INTER_AREA)
        image = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.6:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.2))
    elif rng.random() < 0.3:  # motion blur
        k = int(rng.integers(3, 7))
        kernel = np.zeros((k, k), np.float32)
        angle = rng.uniform(0, np.pi)
        c = (k - 1) / 2
        dx, dy = c * np.cos(angle), c * np.sin(angle)
        cv2.line(kernel, (round(c - dx), round(c - dy)), (round(c + dx), round(c + dy)), 1.0, 1)
        image = cv2.filter2D(image, -1, kernel / kernel.sum())
    sigma = rng.uniform(1.5, 7)
    noise = rng.standard_normal(image.shape, np.float32) * (sigma * np.sqrt(np.clip(image, 1, 255) / 128))
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def draw_image(rng: np.random.Generator, photos: list[np.ndarray], kind: Kind
               ) -> tuple[np.ndarray, list[tuple]]:  # fmt: skip
    """One image of `kind` -> (BGR uint8 image, [(class, x1, y1, x2, y2)] of the visible objects)."""
    w = int(rng.integers(*kind.width))
    aspect = rng.choice([1.0, 1.25, 4 / 3, 1.5, 16 / 9]) * rng.uniform(0.97, 1.03)
    h = round(w / aspect / 2) * 2
    scene = background(rng, h, w, photos, kind.buildings)
    image = scene.image
    owner = np.full((h, w), -1, np.int32)  # which object each pixel shows (-1: none)
    sun = rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(sun), np.sin(sun)])
    shadow_strength = rng.uniform(0.3, 0.6) if rng.random() < 0.8 else 0.0  # 20% overcast
    scale = float(np.exp(rng.uniform(*np.log(kind.scale))))
    class_weights = rng.dirichlet(np.full(len(CLASSES), 1.5))  # every image its own mix

    things: list[tuple] = []  # ("object", class, cx, cy, length, angle) / ("distractor", ...), in drawing order
    centres: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(*kind.objects))):
        cls = int(rng.choice(len(CLASSES), p=class_weights))
        name = CLASSES[cls]
        low, high = SIZES[name]
        length = float(np.exp(rng.uniform(np.log(low), np.log(high)))) * scale
        angle = rng.uniform(0, 2 * np.pi)
        for _attempt in range(10):
            u = rng.random()
            if name in ("car", "truck") and scene.roads and u < 0.55:  # along a road, with its heading
                path, width = scene.roads[int(rng.integers(len(scene.roads)))]
                i = int(rng.integers(len(path) - 1))
                a, b = path[i], path[i + 1]
                t = rng.random()
                heading = np.arctan2(*(b - a)[::-1])
                normal = np.array([-np.sin(heading), np.cos(heading)])
                cx, cy = a + t * (b - a) + normal * rng.uniform(-0.5, 0.5) * (width + length)
                angle = heading + rng.choice([0, np.pi]) + rng.normal(0, 0.1)
            elif name == "boat" and scene.water is not None and scene.water.any() and u < 0.75:
                cells = np.flatnonzero(scene.water)
                cell = int(cells[int(rng.integers(len(cells)))])
                cy, cx = (np.array(divmod(cell, scene.water.shape[1])) + rng.random(2)) * 4
            elif centres and u < 0.35:  # next to an earlier object: rows, groups, overlaps
                px, py, plength = centres[int(rng.integers(len(centres)))]
                direction = rng.uniform(0, 2 * np.pi)
                distance = (plength + length) / 2 * rng.uniform(0.45, 1.3)
                cx, cy = px + distance * np.cos(direction), py + distance * np.sin(direction)
            else:
                cx, cy = rng.uniform(-0.1 * length, w + 0.1 * length), rng.uniform(-0.1 * length, h + 0.1 * length)
            if all((cx - x) ** 2 + (cy - y) ** 2 > (0.3 * min(length, s)) ** 2 for x, y, s in centres):
                break
        centres.append((float(cx), float(cy), length))
        wet = scene.water is not None and bool(
            scene.water[int(np.clip(cy, 0, h - 1) // 4), int(np.clip(cx, 0, w - 1) // 4)]
        )
        things.append(("object", cls, float(cx), float(cy), length, angle, wet))
    spots: list[tuple[float, float]] = []
    for _ in range(int(rng.integers(*kind.distractors))):
        length = float(np.exp(rng.uniform(np.log(6), np.log(40)))) * scale
        if spots and rng.random() < 0.4:  # heaps and rows of clutter
            px, py = spots[int(rng.integers(len(spots)))]
            x, y = px + rng.normal(0, 2 * length), py + rng.normal(0, 2 * length)
        else:
            x, y = rng.uniform(0, w), rng.uniform(0, h)
        spots.append((x, y))
        things.append(("distractor", -1, x, y, length, rng.uniform(0, 2 * np.pi), False))
    order = rng.permutation(len(things))

    areas: dict[int, tuple] = {}  # object -> (its pixels if unoccluded, image region of its patch)
    for index in order:
        thing, cls, cx, cy, length, angle, wet = things[index]
        sk = Sketch(length, angle, rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1))
        if thing == "object":
            name = CLASSES[cls]
            if name == "boat" and wet and rng.random() < 0.6:
                _wake(rng, image, np.array([cx, cy]), angle, length)
            DRAW[name](sk, rng, length, _contrasting_colour(rng, image, cx, cy, name))
            shade, height = (0.45 if name == "tree" else 0.25), SHADOW[name]
        else:
            shade, height = draw_distractor(sk, rng, length), 0.15
        premultiplied, alpha = sk.finish(rng, light, shade, rng.uniform(2, 10))
        if shadow_strength:
            _shadow(image, alpha, cx, cy, light * -height * length, shadow_strength)
        placed = _paste(image, premultiplied, alpha, cx, cy)
        if placed is None:
            continue
        region, a = placed
        owner[region][a > 0.5] = index if thing == "object" else -1
        if thing == "object":
            areas[int(index)] = (float((alpha > 0.5).sum()), region)

    for _ in range(int(rng.integers(*kind.occluders))):
        _occlude(rng, image, owner, light, shadow_strength)

    objects = []
    for index, (area, (rows, cols)) in areas.items():
        ys, xs = np.nonzero(owner[rows, cols] == index)
        if area == 0 or len(xs) < MIN_VISIBLE * area or len(xs) < 6:
            continue
        x1, y1 = xs.min() + cols.start, ys.min() + rows.start
        x2, y2 = xs.max() + 1 + cols.start, ys.max() + 1 + rows.start
        if min(x2 - x1, y2 - y1) < 3:
            continue
        objects.append((things[index][1], float(x1), float(y1), float(x2), float(y2)))
    return _camera(rng, image), objects


def _wake(rng: np.random.Generator, image: np.ndarray, centre: np.ndarray, angle: float, length: float) -> None:
    """A boat's wake: a fading V of foam from the stern and a turbulent trail between its arms."""
    h, w = image.shape[:2]
    ahead = np.array([np.cos(angle), np.sin(angle)])
    side = np.array([-ahead[1], ahead[0]])
    tail = rng.uniform(1.5, 4) * length
    stern = centre - ahead * length * 0.45
    end = stern - ahead * tail
    arms = [end + side * tail * spread for spread in (rng.uniform(0.2, 0.45), -rng.uniform(0.2, 0.45))]
    x, y, bw, bh = cv2.boundingRect(np.int32([stern, end, *arms]))
    x0, y0, x1, y1 = max(x - 2, 0), max(y - 2, 0), min(x + bw + 2, w), min(y + bh + 2, h)
    if x0 >= x1 or y0 >= y1:
        return
    foam = np.zeros((y1 - y0, x1 - x0), np.float32)
    origin = np.array([x0, y0])
    start = tuple(np.int32(stern - origin))
    for arm in arms:
        cv2.line(foam, start, tuple(np.int32(arm - origin)), 1.0, int(rng.integers(1, 3)), cv2.LINE_AA)
    cv2.line(foam, start, tuple(np.int32(end - origin)), 0.6, max(1, int(length * 0.3)), cv2.LINE_AA)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    fade = np.clip(1 - np.hypot(xs - stern[0], ys - stern[1]) / tail, 0, 1) ** 1.5
    foam = (cv2.GaussianBlur(foam, (0, 0), 1.2) * fade * rng.uniform(0.25, 0.6))[..., None]
    image[y0:y1, x0:x1] = image[y0:y1, x0:x1] * (1 - foam) + 235 * foam


def _contrasting_colour(rng: np.random.Generator, image: np.ndarray, cx: float, cy: float, name: str) -> np.ndarray:
    """A colour of class `name`; most objects (85%) stand out from the ground around them, the rest may be
    camouflaged."""
    h, w = image.shape[:2]
    x, y = int(np.clip(cx, 2, w - 3)), int(np.clip(cy, 2, h - 3))
    ground = image[y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(0)
    camouflaged = rng.random() < 0.15
    for _ in range(6):
        colour = _object_colour(rng, name)
        if camouflaged or np.linalg.norm(colour - ground) > 45:
            break
    return colour


def _occlude(rng: np.random.Generator, image: np.ndarray, owner: np.ndarray, light: np.ndarray, shadow: float) -> None:
    h, w = image.shape[:2]
    kind = rng.choice(["bridge", "wires", "roof", "cloud"], p=[0.2, 0.25, 0.3, 0.25])
    mask = np.zeros((h, w), np.float32)
    colour = _hsv(rng.uniform(0, 180), rng.uniform(0, 0.12), rng.uniform(0.3, 0.85))
    if kind == "bridge":
        a, b = rng.uniform(0, 1, (2, 2)) * [w, h]
        a, b = a + (a - b) * 2, b + (b - a) * 2
        cv2.line(mask, tuple(np.int32(a)), tuple(np.int32(b)), 1.0, int(rng.uniform(8, 24)), cv2.LINE_AA)
    elif kind == "wires":
        for _ in range(int(rng.integers(1, 4))):
            a, b = rng.uniform(0, 1, (2, 2)) * [w, h]
            a, b = a + (a - b) * 3, b + (b - a) * 3
            cv2.line(mask, tuple(np.int32(a)), tuple(np.int32(b)), 1.0, int(rng.integers(1, 3)), cv2.LINE_AA)
        colour = colour * 0.4
    elif kind == "roof":
        centre = rng.uniform(0, 1, 2) * [w, h]
        size = rng.uniform(40, 130, 2)
        box = cv2.boxPoints(((float(centre[0]), float(centre[1])), (float(size[0]), float(size[1])),
                             float(rng.uniform(0, 180))))  # fmt: skip
        cv2.fillPoly(mask, [np.int32(box)], 1.0, cv2.LINE_AA)
    else:
        centre = rng.uniform(0, 1, 2) * [w, h]
        radius = rng.uniform(30, 120)
        cv2.fillPoly(mask, [np.int32(_blob(rng, radius, 0.35) + centre)], 1.0)
        mask = cv2.GaussianBlur(mask, (0, 0), radius / 4) * rng.uniform(0.6, 0.95)
        colour = np.full(3, rng.uniform(200, 250), np.float32)
    if kind in ("bridge", "roof") and shadow:
        offset = np.float32([[1, 0, -light[0] * 12], [0, 1, -light[1] * 12]])
        cast = cv2.warpAffine(mask, offset, (w, h))
        image *= (1 - shadow * cast)[..., None]
    x, y, bw, bh = cv2.boundingRect((mask > 0.01).astype(np.uint8))
    if bw == 0 or bh == 0:
        return
    region = (slice(y, y + bh), slice(x, x + bw))
    m = mask[region][..., None]
    texture = _texture(rng, bh, bw, 0.1)[..., None] if kind != "cloud" and min(bw, bh) > 8 else 1.0
    image[region] = image[region] * (1 - m) + colour * texture * m
    owner[region][m[..., 0] > 0.6] = -1


# --- datasets ----------------------------------------------------------------------------------------------------


def make_aerial(root: Path, train: int, val: int, seed: int = 0, kind: str = "dense",
                photos: list[np.ndarray] | None = None) -> Path:  # fmt: skip
    """Write a YOLO-format dataset of `kind` (KINDS) under `root`, train backgrounds also from `photos` (BGR
    images); -> its data.yaml."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: one of {', '.join(KINDS)}")
    photos = photos or []
    for split, count in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])  # val: its own streams
            image, objects = draw_image(rng, photos, KINDS[kind])
            h, w = image.shape[:2]
            name = f"{split}_{index:04d}"
            quality = int(rng.integers(40, 92))
            cv2.imwrite(str(root / "images" / split / f"{name}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            lines = [f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                     for c, x1, y1, x2, y2 in objects]  # fmt: skip
            (root / "labels" / split / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
    data = root / "data.yaml"
    spec = {"path": str(root.resolve()), "train": "images/train", "val": "images/val", "names": CLASSES}
    data.write_text(yaml.safe_dump(spec, sort_keys=False))
    return data


def save_samples(data_yaml: Path, folder: Path, count: int) -> None:
    """The first `count` images of each split, as written and with their labels drawn."""
    folder.mkdir(parents=True, exist_ok=True)
    root = data_yaml.parent
    palette = [(0, 0, 255), (0, 160, 255), (255, 0, 255), (255, 128, 0), (0, 255, 0), (255, 255, 0)]
    for split in ("train", "val"):
        for path in sorted((root / "images" / split).glob("*.jpg"))[:count]:
            image = cv2.imread(str(path))
            h, w = image.shape[:2]
            cv2.imwrite(str(folder / f"{path.stem}.png"), image)  # PNG: the decoded JPEG, as a viewer shows it
            for line in (root / "labels" / split / f"{path.stem}.txt").read_text().splitlines():
                c, cx, cy, bw, bh = (float(v) for v in line.split())
                x1, y1 = int((cx - bw / 2) * w), int((cy - bh / 2) * h)
                x2, y2 = int((cx + bw / 2) * w), int((cy + bh / 2) * h)
                cv2.rectangle(image, (x1, y1), (x2, y2), palette[int(c)], 1)
                cv2.putText(image, CLASSES[int(c)][:3], (x1, y1 - 2), cv2.FONT_HERSHEY_PLAIN, 0.8, palette[int(c)])
            cv2.imwrite(str(folder / f"{path.stem}_labels.png"), image)
