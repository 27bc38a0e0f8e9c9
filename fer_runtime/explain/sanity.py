"""Sanity checks of saliency methods (Adebayo et al. 2018): a map that stays the same when the model's weights are
randomised, or when it was trained on random labels, shows the input, not the model. The measure is the rank
correlation (Spearman) between the trained model's map and the other model's, face by face, of the maps'
magnitudes: near 1 fails the check, near 0 passes it."""

from __future__ import annotations

import numpy as np


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0 … n−1 along the last axis, ties given their mean rank."""
    v = np.asarray(values, np.float64)
    order = np.argsort(v, axis=-1, kind="stable")
    ranks = np.empty_like(v)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(v.shape[-1], dtype=np.float64), v.shape).copy(), axis=-1)
    for row in range(v.shape[0]):  # average the ranks of tied values (flat maps: Grad-CAM's zeros)
        sorted_v = v[row, order[row]]
        starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
        if len(starts) == v.shape[-1]:
            continue
        ends = np.r_[starts[1:], v.shape[-1]]
        mean = (starts + ends - 1) / 2
        ranks[row, order[row]] = np.repeat(mean, ends - starts)
    return ranks


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation of the magnitudes of maps ``a`` and ``b`` (N, H, W), one per pair of maps (N,);
    0 where either map is constant."""
    ra = _ranks(np.abs(np.asarray(a)).reshape(len(a), -1))
    rb = _ranks(np.abs(np.asarray(b)).reshape(len(b), -1))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    norm = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    return np.where(norm > 0, (ra * rb).sum(axis=1) / np.where(norm > 0, norm, 1), 0.0)
