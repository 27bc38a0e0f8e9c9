"""How faithful a saliency map is: deletion and insertion curves (Petsiuk et al. 2018, RISE) and their areas.

Deletion removes the pixels from the most salient down, in ``steps`` equal shares, and follows the
probability of the explained class: a faithful map makes it fall at once (a small area under the curve).
Insertion starts from the removed face and puts the pixels back in the same order: a faithful map makes it
rise at once (a large area). Removing a pixel means replacing it by the removed face's pixel, of one of
:data:`REMOVALS`: ``grey`` (the face's mean grey, as occlusion hides patches) or ``blur`` (the face blurred by
:data:`BLUR_SIGMA` pixels, which leaves no sharp edge of its own for the model to react to). A map that
agrees under both is not exploiting one kind of removal. The reference is a random order of the pixels.

Backend-free: the model is a plain function (images → logits), as in :mod:`.saliency`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..contract import NUM_PIXELS
from ..metrics import softmax
from .images import as_batch, gaussian_blur
from .saliency import LogitsFn

REMOVALS = ("grey", "blur")
BLUR_SIGMA = 4.0
STEPS = 16  # shares of 1/16 of the pixels: 17 points from 0 to 1
RANDOM_SEED = 0


def removed_faces(images: np.ndarray, removal: str) -> np.ndarray:
    """What every pixel becomes when it is removed: (N, 48, 48)."""
    x = as_batch(images)
    if removal == "grey":
        return np.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape).astype(np.float32)
    if removal == "blur":
        return gaussian_blur(x, BLUR_SIGMA)
    raise ValueError(f"removal must be one of {', '.join(REMOVALS)}, got {removal!r}")


def pixel_ranks(maps: np.ndarray) -> np.ndarray:
    """Each pixel's rank (0: most salient) per map, int (N, 2304); equal values keep reading order."""
    flat = np.asarray(maps, np.float32).reshape(len(maps), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None].repeat(len(flat), 0), axis=1)
    return ranks


def random_maps(count: int, seed: int = RANDOM_SEED) -> np.ndarray:
    """Maps of random values (count, 48, 48): the reference order that any map should beat."""
    return np.random.default_rng(seed).random((count, 48, 48)).astype(np.float32)


@dataclass
class Curves:
    """The class's probability as the pixels go, for N maps: ``deletion`` and ``insertion`` (N, steps + 1)."""

    fractions: np.ndarray  # (steps + 1,) 0 … 1: the share of pixels removed (deletion) or put back (insertion)
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> np.ndarray:
        """(N,): the area under each deletion curve; lower is more faithful."""
        return _area(self.deletion, self.fractions)

    @property
    def insertion_auc(self) -> np.ndarray:
        """(N,): the area under each insertion curve; higher is more faithful."""
        return _area(self.insertion, self.fractions)


def _area(curve: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """The trapezoid rule along the last axis."""
    return ((curve[:, 1:] + curve[:, :-1]) / 2 * np.diff(fractions)).sum(axis=1)


def curves(logits_fn: LogitsFn, images: np.ndarray, maps: np.ndarray, class_index, removal: str = "grey",
           steps: int = STEPS, batch_size: int = 512) -> Curves:
    """Deletion and insertion curves of ``maps`` (N, 48, 48; larger = more important) for the faces ``images`` and
    the classes ``class_index`` (one or one per face); ``removal``: one of :data:`REMOVALS`."""
    x = as_batch(images).reshape(len(images), -1)
    gone = removed_faces(images, removal).reshape(len(x), -1)
    classes = np.broadcast_to(np.asarray(class_index, np.int64), (len(x),))
    counts = np.round(np.linspace(0, NUM_PIXELS, steps + 1)).astype(int)  # pixels moved at each point
    ranks = pixel_ranks(maps)
    out = {}
    for kind in ("deletion", "insertion"):
        probs = []
        per_face = (steps + 1) * 2  # faces per batch are whole curves
        chunk = max(1, batch_size // per_face)
        for i in range(0, len(x), chunk):
            moved = ranks[i:i + chunk, None, :] < counts[None, :, None]  # (n, steps + 1, 2304)
            start, end = (x, gone) if kind == "deletion" else (gone, x)
            batch = np.where(moved, end[i:i + chunk, None], start[i:i + chunk, None]).reshape(-1, 48, 48)
            p = softmax(np.asarray(logits_fn(batch), np.float64)).reshape(len(moved), steps + 1, -1)
            probs.append(np.take_along_axis(p, classes[i:i + chunk, None, None], axis=2)[..., 0])
        out[kind] = np.concatenate(probs).astype(np.float32)
    return Curves(counts / NUM_PIXELS, out["deletion"], out["insertion"])


@dataclass(frozen=True)
class FaceFaithfulness:
    """One map's areas on its own face, grey removal, beside a random order's: what the TUI shows."""

    deletion: float  # lower is more faithful
    insertion: float  # higher is more faithful
    random_deletion: float
    random_insertion: float

    @property
    def score(self) -> float:
        """Insertion minus deletion, each against random: 0 for a map no better than random pixels, up to 1."""
        return (self.insertion - self.random_insertion) + (self.random_deletion - self.deletion)


def face_faithfulness(logits_fn: LogitsFn, image: np.ndarray, values: np.ndarray, class_index: int, steps: int = STEPS) -> FaceFaithfulness:
    """The deletion and insertion areas of one face's map, and of a random order of its pixels (grey removal)."""
    face = as_batch(image)[:1]
    both = np.stack([np.asarray(values, np.float32).reshape(48, 48), random_maps(1)[0]])
    c = curves(logits_fn, np.repeat(face, 2, axis=0), both, class_index, "grey", steps)
    d, i = c.deletion_auc, c.insertion_auc
    return FaceFaithfulness(float(d[0]), float(i[0]), float(d[1]), float(i[1]))
