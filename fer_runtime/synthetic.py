"""Procedurally drawn 48×48 cartoon faces, one recognisable expression per class.

Used by the tests (which must run without FER2013) and by the TUI's built-in demo set. numpy only.
Each class differs in its mouth, eyebrows and eyes, so a small model learns them in a few batches.
"""

from __future__ import annotations

import numpy as np

from .contract import IMAGE_SIZE, NUM_CLASSES

_Y, _X = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)


def _stroke(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, value: float, width: float = 1.2) -> None:
    """Darken (or lighten) the pixels within ``width`` of the polyline through (xs, ys)."""
    for x, y in zip(xs, ys):
        mask = (_X - x) ** 2 + (_Y - y) ** 2 <= width**2
        img[mask] = value


def _curve(cx: float, cy: float, half_width: float, bend: float, n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A parabola through the mouth corners; ``bend`` > 0 curves up at the ends (a smile)."""
    t = np.linspace(-1, 1, n)
    return cx + t * half_width, cy - bend * (t**2 - 0.5)


def draw_face(label: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 (48, 48) face showing class ``label`` (0 Angry … 6 Neutral), with random jitter."""
    skin = rng.uniform(150, 210)
    dark = rng.uniform(20, 60)
    img = np.full((IMAGE_SIZE, IMAGE_SIZE), rng.uniform(60, 110), np.float32)
    cx, cy = 24 + rng.uniform(-2, 2), 24 + rng.uniform(-2, 2)
    face = ((_X - cx) / rng.uniform(16, 19)) ** 2 + ((_Y - cy) / rng.uniform(19, 22)) ** 2 <= 1
    img[face] = skin
    eye_dx, eye_y = rng.uniform(6.5, 8.0), cy - rng.uniform(4, 6)
    eye_r = {2: 3.2, 5: 3.0}.get(label, 2.0)  # Fear and Surprise: wide eyes
    for side in (-1, 1):
        ex = cx + side * eye_dx
        img[(_X - ex) ** 2 + (_Y - eye_y) ** 2 <= eye_r**2] = dark
        # eyebrows: Angry slants down to the middle, Sad up to the middle, Surprise/Fear raised high
        slope = {0: 0.6, 4: -0.5, 1: 0.3}.get(label, 0.0) * -side
        lift = {5: 4.5, 2: 3.5}.get(label, 2.5)
        t = np.linspace(-3, 3, 10)
        _stroke(img, ex + t, eye_y - eye_r - lift + slope * t, dark, 0.9)
    my = cy + rng.uniform(8, 10)
    if label == 3:  # Happy: a wide smile
        _stroke(img, *_curve(cx, my, 8, 5), dark)
    elif label == 4:  # Sad: a frown
        _stroke(img, *_curve(cx, my + 1, 7, -4), dark)
    elif label == 5:  # Surprise: a tall open mouth
        img[((_X - cx) / 3.5) ** 2 + ((_Y - my) / 5) ** 2 <= 1] = dark
    elif label == 2:  # Fear: a small wide-open mouth, pulled sideways
        img[((_X - cx) / 5.5) ** 2 + ((_Y - my) / 2.5) ** 2 <= 1] = dark
    elif label == 0:  # Angry: a tight flat mouth with pressed corners
        _stroke(img, *_curve(cx, my, 6, -1.5), dark, 1.5)
    elif label == 1:  # Disgust: a wavy, lopsided mouth and a wrinkled nose
        t = np.linspace(-1, 1, 24)
        _stroke(img, cx + 7 * t, my + 2 * np.sin(3 * np.pi * t), dark)
        _stroke(img, cx + np.linspace(-2, 2, 6), np.full(6, cy + 2.0), dark, 0.8)
    else:  # Neutral: a straight line
        _stroke(img, *_curve(cx, my, 6, 0), dark, 1.0)
    img += rng.normal(0, rng.uniform(3, 10), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_faces(n: int, seed: int = 0, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` faces (uint8 (n, 48, 48)) and their labels, classes in turn unless ``labels`` is given."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % NUM_CLASSES if labels is None else np.asarray(labels)
    images = np.stack([draw_face(int(c), rng) for c in labels]) if n else np.empty((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return images, labels.astype(np.int64)


def write_demo_csv(path, n_train: int = 350, n_test: int = 140, seed: int = 0) -> None:
    """A small Kaggle-format CSV of drawn faces (Training and PublicTest rows)."""
    from .io import encode_csv

    train_x, train_y = make_faces(n_train, seed)
    test_x, test_y = make_faces(n_test, seed + 1)
    text = encode_csv(np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y]),
                      ["Training"] * n_train + ["PublicTest"] * n_test)
    with open(path, "w") as f:
        f.write(text)
