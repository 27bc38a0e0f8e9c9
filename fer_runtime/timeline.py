"""A video's expressions over time: its main face's probabilities frame by frame, smoothed, drawn as a picture,
and the share of time spent in each expression.

The main face of a frame is its largest (:func:`fer_runtime.faces.largest`). Shares count the analysed frames with
a face by that face's own label (unsmoothed); the picture draws the probabilities averaged over a centred window of
``smooth_seconds``, with a ribbon of the per-frame labels below (grey: no face). Drawn with Pillow. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .annotate import class_colour, font
from .faces import Face, largest

DEFAULT_SMOOTH_SECONDS = 1.0


def smooth(times: np.ndarray, values: np.ndarray, seconds: float) -> np.ndarray:
    """``values`` (N, K) at increasing ``times`` (N,), each replaced by the mean of those within ±seconds/2 of it."""
    times, values = np.asarray(times, float), np.asarray(values, float)
    if seconds <= 0 or len(times) < 2:
        return values.copy()
    cumulative = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    lo = np.searchsorted(times, times - seconds / 2, "left")
    hi = np.searchsorted(times, times + seconds / 2, "right")
    return (cumulative[hi] - cumulative[lo]) / (hi - lo)[:, None]


@dataclass
class Timeline:
    """The analysed frames of one video: their times and their main face's probabilities (None: no face)."""

    class_names: tuple[str, ...]
    times: list[float] = field(default_factory=list)
    probabilities: list[np.ndarray | None] = field(default_factory=list)

    def add(self, time: float, faces: list[Face]) -> None:
        main = largest(faces)
        self.times.append(float(time))
        self.probabilities.append(None if main is None else np.asarray(main.probabilities, float))

    @property
    def with_face(self) -> np.ndarray:
        return np.array([p is not None for p in self.probabilities], bool)

    def shares(self) -> dict[str, float]:
        """Expression → share of the analysed frames with a face in which the main face shows it."""
        labels = [int(np.argmax(p)) for p in self.probabilities if p is not None]
        counts = np.bincount(labels, minlength=len(self.class_names)) if labels else np.zeros(len(self.class_names), int)
        total = max(1, len(labels))
        return {name: round(float(c) / total, 4) for name, c in zip(self.class_names, counts)}

    def summary(self, source: str, stride: int) -> dict:
        """``source``, frames analysed (one in ``stride``), ``seconds`` (the last one's time), frames with a face, shares."""
        frames = len(self.times)
        return {"source": source, "frames_analysed": frames, "stride": stride, "seconds": round(self.times[-1], 3) if frames else 0.0,
                "frames_with_face": int(self.with_face.sum()), "share": self.shares()}

    def smoothed(self, seconds: float = DEFAULT_SMOOTH_SECONDS) -> tuple[np.ndarray, np.ndarray]:
        """(times, probabilities (N, K)) of the frames with a face, smoothed over ``seconds``."""
        keep = self.with_face
        if not keep.any():
            return np.empty(0), np.empty((0, len(self.class_names)))
        times = np.asarray(self.times)[keep]
        return times, smooth(times, np.stack([p for p in self.probabilities if p is not None]), seconds)

    def draw(self, path: str | Path, title: str = "", smooth_seconds: float = DEFAULT_SMOOTH_SECONDS,
             size: tuple[int, int] = (1200, 440)) -> Path:
        """Write the timeline picture (PNG) to ``path``."""
        from PIL import Image, ImageDraw

        width, height = size
        left, right, top, bottom, ribbon = 56, 140, 36, 64, 12
        plot_w, plot_h = width - left - right, height - top - bottom - ribbon - 8
        image = Image.new("RGB", size, (255, 255, 255))
        draw = ImageDraw.Draw(image)
        small, normal = font(12), font(14)
        end = max(self.times[-1] if self.times else 0.0, 1e-6)
        to_x = lambda t: left + plot_w * t / end  # noqa: E731
        to_y = lambda p: top + plot_h * (1 - p)  # noqa: E731
        for p in (0.0, 0.25, 0.5, 0.75, 1.0):
            draw.line((left, to_y(p), left + plot_w, to_y(p)), fill=(225, 225, 225))
            draw.text((left - 8, to_y(p)), f"{p:.2f}", fill=(80, 80, 80), font=small, anchor="rm")
        step = _tick_step(end)
        ribbon_top = top + plot_h + 8
        for i in range(int(end / step) + 1):
            x = to_x(i * step)
            draw.line((x, top, x, ribbon_top + ribbon), fill=(235, 235, 235))
            draw.text((x, ribbon_top + ribbon + 6), f"{i * step:g}", fill=(80, 80, 80), font=small, anchor="mt")
        draw.text((left + plot_w / 2, height - 6), "seconds", fill=(80, 80, 80), font=small, anchor="mb")
        draw.text((left, 10), title or "expressions over time", fill=(0, 0, 0), font=normal)
        draw.text((left + plot_w, 10), f"probabilities of the largest face, smoothed over {smooth_seconds:g} s", fill=(100, 100, 100),
                  font=small, anchor="ra")

        times, probabilities = self.smoothed(smooth_seconds)
        for segment in _segments(times):
            for k in range(len(self.class_names)):
                points = [(to_x(times[i]), to_y(probabilities[i, k])) for i in segment]
                if len(points) > 1:
                    draw.line(points, fill=class_colour(k), width=2, joint="curve")
                else:
                    draw.ellipse((points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2), fill=class_colour(k))
        # the per-frame label ribbon: each analysed frame until the next one, grey where there was no face
        all_times = list(self.times) + [end]
        for i, p in enumerate(self.probabilities):
            colour = (200, 200, 200) if p is None else class_colour(int(np.argmax(p)))
            draw.rectangle((to_x(all_times[i]), ribbon_top, max(to_x(all_times[i + 1]), to_x(all_times[i]) + 1), ribbon_top + ribbon),
                           fill=colour)
        draw.rectangle((left, top, left + plot_w, top + plot_h), outline=(120, 120, 120))
        shares = self.shares()
        for k, name in enumerate(self.class_names):
            y = top + 6 + 22 * k
            draw.rectangle((width - right + 14, y + 3, width - right + 28, y + 15), fill=class_colour(k))
            draw.text((width - right + 34, y), f"{name} {shares[name]:.0%}", fill=(0, 0, 0), font=normal)
        draw.text((width - right + 14, top + 6 + 22 * len(self.class_names) + 8), "share of frames\nwith a face", fill=(100, 100, 100),
                  font=small)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        return path


def _tick_step(end: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if end / step <= 12:
            return step
    return 7200.0


def _segments(times: np.ndarray) -> list[list[int]]:
    """Runs of frames to join by lines: a gap of more than 3 typical steps (frames without a face) breaks a run."""
    if len(times) == 0:
        return []
    steps = np.diff(times)
    gap = 3 * float(np.median(steps)) if len(steps) else 0.0
    runs, current = [], [0]
    for i in range(1, len(times)):
        if steps[i - 1] > gap:
            runs.append(current)
            current = []
        current.append(i)
    runs.append(current)
    return runs


def describe(summary: dict) -> str:
    """One line for people: frames, faces, the expressions by share of time, and the detector when the summary names it."""
    shares = sorted(((v, k) for k, v in summary["share"].items() if v > 0), reverse=True)
    text = ", ".join(f"{name} {share:.0%}" for share, name in shares) or "no face"
    every = f" (one in {summary['stride']})" if summary["stride"] > 1 else ""
    by = f" (faces found by {summary['detector']})" if summary.get("detector") else ""
    return (f"{summary['source']}: {plural(summary['frames_analysed'], 'frame')} analysed{every} over {summary['seconds']:.1f} s, "
            f"a face in {summary['frames_with_face']}: {text}{by}")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
