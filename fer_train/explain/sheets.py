"""The explanation pictures as PNG files (matplotlib, Agg): saliency sheets, filter grids, feature maps."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fer_runtime import explain as rt
from ..plots import _pyplot
from .saliency import SaliencyMaps

METHOD_TITLES = {"gradient": "gradient |∂logit/∂x|", "smoothgrad": "SmoothGrad", "occlusion": "occlusion (prob. drop)",
                 "integrated": "integrated gradients", "gradcam": "Grad-CAM, last conv", "gradcam-middle": "Grad-CAM, middle conv"}


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def heat_picture(face: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A map (any scale) as every saliency picture shows it: normalised, in colour over the dimmed face."""
    return rt.heat_over_face(face, rt.normalise_map(values))


def heat_legend(fig, axes, label: str = "saliency (of its 99th percentile)") -> None:
    """The colour bar of :func:`heat_picture`: from the dimmed face (weak) to full colour (strong)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    cmap = ListedColormap(rt.legend_colours(256) / 255.0)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=axes, shrink=0.6, aspect=25, pad=0.01)
    bar.set_label(label, fontsize=7)
    bar.set_ticks([0, 0.5, 1], labels=["weak", "", "strong"], fontsize=7)


def _face_title(maps: SaliencyMaps, i: int, class_names: Sequence[str], labels: Sequence[int] | None, heads: Sequence[str] | None = None) -> str:
    cls = int(maps.class_index[i])
    prob = maps.probabilities[i, cls]
    head = heads[i] if heads is not None else class_names[labels[i]] if labels is not None else f"image {i}"
    return f"{head}\n→ {class_names[cls]} {prob:.2f}"


def class_sheet(maps: SaliencyMaps, class_names: Sequence[str], path: str | Path, labels: Sequence[int] | None = None,
                method: str | None = None, hide: float = 0.5, title: str = "") -> Path:
    """One column per face: the face, its saliency map over the dimmed face (``method``, default the default
    method when it is among the maps, else the first), and the face with its least salient ``hide`` hidden."""
    plt = _pyplot()
    n = len(maps.images)
    method = method or (rt.DEFAULT_METHOD if rt.DEFAULT_METHOD in maps.maps else next(iter(maps.maps)))
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n + 1.2, 5.6), squeeze=False, layout="constrained")
    for i in range(n):
        axes[0, i].imshow(maps.images[i], cmap="gray", vmin=0, vmax=255)
        axes[0, i].set_title(_face_title(maps, i, class_names, labels), fontsize=8)
        axes[1, i].imshow(heat_picture(maps.images[i], maps.maps[method][i]))
        axes[2, i].imshow(rt.masked_image(maps.images[i], maps.maps[method][i], hide), cmap="gray", vmin=0, vmax=255)
        for ax in axes[:, i]:
            _off(ax)
    for row, label in enumerate(("face", METHOD_TITLES.get(method, method), f"{hide:.0%} least salient hidden")):
        axes[row, 0].set_ylabel(label, fontsize=8)
    heat_legend(fig, axes[1, :])
    fig.suptitle(title or f"saliency of the predicted class ({method})", fontsize=10)
    return _save(fig, path)


def methods_sheet(maps: SaliencyMaps, class_names: Sequence[str], path: str | Path, labels: Sequence[int] | None = None, title: str = "",
                  scores: dict[str, np.ndarray] | None = None, masked: str | None = None, hide: float = 0.5,
                  heads: Sequence[str] | None = None) -> Path:
    """One column per face, one row per method, the same faces and classes: the methods side by side. ``scores``:
    method → a number per face written under its map (e.g. the map's faithfulness); ``masked``: a last row, the
    faces with the ``hide`` least salient share of that method's map hidden (as the study drew them); ``heads``: each face's name (default: its label)."""
    plt = _pyplot()
    n, methods = len(maps.images), list(maps.maps)
    rows = 1 + len(methods) + bool(masked)
    fig, axes = plt.subplots(rows, n, figsize=(1.6 * n + 1.2, 1.75 * rows + 0.4), squeeze=False, layout="constrained")
    for i in range(n):
        axes[0, i].imshow(maps.images[i], cmap="gray", vmin=0, vmax=255)
        axes[0, i].set_title(_face_title(maps, i, class_names, labels, heads), fontsize=8)
        for row, method in enumerate(methods, start=1):
            axes[row, i].imshow(heat_picture(maps.images[i], maps.maps[method][i]))
            if scores and method in scores:
                axes[row, i].set_xlabel(f"faithfulness {scores[method][i]:+.2f}", fontsize=7)
        if masked:
            axes[-1, i].imshow(rt.masked_image(maps.images[i], maps.maps[masked][i], hide), cmap="gray", vmin=0, vmax=255)
        for ax in axes[:, i]:
            _off(ax)
    axes[0, 0].set_ylabel("face", fontsize=8)
    for row, method in enumerate(methods, start=1):
        axes[row, 0].set_ylabel(METHOD_TITLES.get(method, method), fontsize=8)
    if masked:
        axes[-1, 0].set_ylabel(f"{hide:.0%} least salient\nhidden ({masked})", fontsize=8)
    heat_legend(fig, axes[1:1 + len(methods), :])
    fig.suptitle(title or "saliency methods compared", fontsize=10)
    return _save(fig, path)


def _mosaic(tiles: np.ndarray, cols: int, gap: int = 2, below: int = 0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Tiles (n, h, w) gray 0..1 or (n, h, w, 3) RGB 0..1 on a white canvas, ``below`` px left under each for a label.

    Returns the canvas and the centre of each label's space. One image for the whole grid: matplotlib draws
    it far faster than one axes per tile.
    """
    tiles = np.asarray(tiles, np.float32)
    if tiles.ndim == 3:
        tiles = np.repeat(tiles[..., None], 3, axis=3)
    n, h, w = tiles.shape[:3]
    rows = -(-n // cols)
    canvas = np.ones((rows * (h + gap + below) - gap, cols * (w + gap) - gap, 3), np.float32)
    centres = []
    for k in range(n):
        r, c = divmod(k, cols)
        y, x = r * (h + gap + below), c * (w + gap)
        canvas[y:y + h, x:x + w] = tiles[k]
        centres.append((x + w / 2 - 0.5, y + h + below / 2 - 0.5))
    return canvas, centres


def _mosaic_figure(canvas: np.ndarray, title: str, px_per_inch: float = 40.0, left: float = 0.0):
    plt = _pyplot()
    height, width = canvas.shape[:2]
    fig = plt.figure(figsize=(width / px_per_inch + left, height / px_per_inch + 0.45))
    ax = fig.add_axes((left / (width / px_per_inch + left), 0, 1 - left / (width / px_per_inch + left), height / px_per_inch / (height / px_per_inch + 0.45)))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / (height / px_per_inch + 0.45))
    return fig, ax


def filter_grid(result: rt.AscentResult, path: str | Path, title: str, cols: int = 8) -> Path:
    """The ascent images of a layer's filters, the reached mean activation under each."""
    canvas, centres = _mosaic(result.display() / 255.0, min(cols, len(result.images)), gap=3, below=11)
    fig, ax = _mosaic_figure(canvas, title)
    for k, (x, y) in enumerate(centres):
        ax.text(x, y, f"#{int(result.filter_index[k])}  {result.activation[k]:.3g}", ha="center", va="center", fontsize=7)
    return _save(fig, path)


def regulariser_sheet(rows: Sequence[tuple[str, rt.AscentResult]], path: str | Path, title: str) -> Path:
    """The same filters under different regularisers: one row per setting, reached activation under each."""
    cols = max(len(r.images) for _, r in rows)
    tiles = np.ones((len(rows) * cols, 48, 48), np.float32)
    for row, (_, result) in enumerate(rows):
        tiles[row * cols:row * cols + len(result.images)] = result.display() / 255.0
    canvas, centres = _mosaic(tiles, cols, gap=3, below=11)
    fig, ax = _mosaic_figure(canvas, title, left=1.3)
    for row, (label, result) in enumerate(rows):
        for k in range(len(result.images)):
            x, y = centres[row * cols + k]
            ax.text(x, y, f"#{int(result.filter_index[k])}  {result.activation[k]:.3g}", ha="center", va="center", fontsize=7)
        ax.text(-4, centres[row * cols][1] - 24, label, ha="right", va="center", fontsize=8)
    return _save(fig, path)


def feature_maps(maps: np.ndarray, face: np.ndarray, path: str | Path, title: str, cols: int = 16) -> Path:
    """A layer's outputs (C, H, W) for one face: the face, then one tile per channel (each on its own scale)."""
    plt = _pyplot()
    m = np.asarray(maps, np.float32)
    lo = m.min(axis=(1, 2), keepdims=True)
    scaled = (m - lo) / np.maximum(m.max(axis=(1, 2), keepdims=True) - lo, 1e-12)
    colours = plt.get_cmap("viridis")(scaled)[..., :3]
    canvas, _ = _mosaic(colours, min(cols, len(m)), gap=max(1, m.shape[1] // 12))
    # the face, scaled to two tiles' height, at the left
    side = min(canvas.shape[0], 2 * m.shape[1])
    face_rgb = np.repeat((np.asarray(face, np.float32)[..., None] / 255.0), 3, axis=2)
    from PIL import Image

    face_rgb = np.asarray(Image.fromarray((face_rgb * 255).astype(np.uint8)).resize((side, side), Image.Resampling.NEAREST), np.float32) / 255
    gap = max(2, m.shape[1] // 4)
    full = np.ones((canvas.shape[0], side + gap + canvas.shape[1], 3), np.float32)
    full[:side, :side] = face_rgb
    full[:, side + gap:] = canvas
    fig, _ = _mosaic_figure(full, title, px_per_inch=max(10.0, m.shape[1] * 0.9))
    return _save(fig, path)
