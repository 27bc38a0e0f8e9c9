"""Faces in photographs, folders, videos and cameras, end to end: what ``fer-predict`` runs, as a Python API.

    from fer_runtime.classifier import load_classifier
    from fer_runtime.pipeline import PredictOptions, Pipeline

    model = load_classifier("exported/fer-best.onnx", variant="auto")
    run = Pipeline(model, PredictOptions(stride=2, annotate=Path("annotated")))
    tally = run.run(["photos/", "clip.mp4"])      # records in run.records (or a RecordWriter's file), one per face
    print(tally.faces, tally.failed)              # what failed: one line each, naming the file (and frame)

Faces are found by the detector of :attr:`PredictOptions.detector` (CenterFace by default; in videos it looks at the
whole frame every :attr:`PredictOptions.track_every` frames and follows the faces between, :mod:`fer_runtime.tracking`),
classified in batches of :attr:`PredictOptions.batch`, and written as each batch is done. Every record and every
video summary names the detector. An input that cannot be read is one line in :attr:`Tally.failed` and the run goes
on. Messages go to ``say(text, style)``; progress to a Rich-like ``progress`` (``add_task``, ``advance``,
``remove_task``) when given. Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .faces import DETECTORS, Detector, Face, classify_faces, make_detector
from .media import DEFAULT_MAX_PIXELS, IMAGE, VIDEO, Input, MediaError, Video, find_inputs, read_image, reason_for
from .records import RecordWriter
from .timeline import DEFAULT_SMOOTH_SECONDS, Timeline, describe
from .tracking import DEFAULT_EVERY, FaceTracker

KEEP_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}  # annotated images keep these; others become .png
HELD_PIXELS = 40_000_000  # pictures held for drawing before a batch is classified, at most (about 120 MB of RGB)
FRAMES_PER_BATCH = 16


@dataclass
class PredictOptions:
    """How to find, classify and report faces. ``None`` means the detector's own default. The flags of
    ``fer-predict`` fill these; ``PredictOptions()`` is what ``fer-predict`` does without flags."""

    detector: str = DETECTORS[0]  # "centerface" or "haar"
    min_size: int | None = None  # the smallest face, in the source's pixels
    detect_size: int | None = None  # larger pictures are scaled down to this longest side to detect
    align: bool | None = None  # centerface: turn crops so the eyes are level
    threshold: float | None = None  # centerface: the score a face needs
    margin: float | None = None  # haar: crop margin per side, in box sides
    cascade: str | None = None  # haar: "alt2" or "default"
    neighbors: int | None = None  # haar: OpenCV's minNeighbors
    track_every: int = DEFAULT_EVERY  # videos, centerface: a whole-frame look every this many analysed frames (1: always)
    stride: int = 1  # videos: analyse every stride-th frame
    frames: int | None = None  # videos: stop after this many analysed frames
    smooth: float = DEFAULT_SMOOTH_SECONDS  # the timeline's smoothing window, seconds
    batch: int = 64  # faces classified together
    max_megapixels: float = DEFAULT_MAX_PIXELS / 1e6  # refuse larger images (decompression bombs)
    annotate: Path | None = None  # write each image and video here with boxes and labels drawn
    report: Path | None = None  # write each video's timeline and summary here (default: annotate)
    threads: int | None = None  # onnxruntime threads for the detector (None: every core)

    def make_detector(self) -> Detector:
        """The detector these options describe (for photographs; videos wrap it in a :class:`FaceTracker`)."""
        names = {"centerface": ("min_size", "detect_size", "align", "threshold", "threads"),
                 "haar": ("min_size", "detect_size", "margin", "cascade", "neighbors")}
        if self.detector not in names:
            raise ValueError(f"unknown face detector {self.detector!r}; choose one of {', '.join(DETECTORS)}")
        renamed = {"detect_size": "detect_side", "neighbors": "min_neighbors"}
        settings = {renamed.get(k, k): getattr(self, k) for k in names[self.detector] if getattr(self, k) is not None}
        return make_detector(self.detector, **settings)


@dataclass
class Pending:
    """A picture whose faces wait to be classified with the rest of the batch."""

    source: str
    faces: list[Face]
    rgb: np.ndarray | None  # kept only when it will be drawn
    frame: int | None = None
    time: float | None = None
    done: Callable[["Pending", list[Face]], None] | None = None  # called with its classified faces, in input order


@dataclass
class Tally:
    """What a run read and found. ``failed``: one message per failure, naming the file (and frame) and the cause."""

    images: int = 0
    videos: int = 0
    faces: int = 0
    failed: list[str] = field(default_factory=list)
    without_face: list[str] = field(default_factory=list)
    passed_over: list[Path] = field(default_factory=list)  # files in the folders that are neither images nor videos


class NoProgress:
    """The progress interface of :class:`Pipeline` (Rich's ``Progress`` has it), doing nothing."""

    def add_task(self, description: str, total: float | None = None) -> int:
        return 0

    def advance(self, task: int, advance: float = 1) -> None:
        pass

    def remove_task(self, task: int) -> None:
        pass


def _quiet(text: str, style: str = "") -> None:
    pass


class Pipeline:
    """One run: reads the inputs, batches their faces through ``model``, writes what ``options`` ask for.

    ``writer``: a :class:`~fer_runtime.records.RecordWriter` (None: records are kept in :attr:`records`).
    ``say(text, style)`` gets the messages for people (failures, pictures without a face, video summaries).
    """

    def __init__(self, model, options: PredictOptions | None = None, writer: RecordWriter | None = None,
                 say: Callable[[str, str], None] = _quiet, progress=None):
        self.options = options or PredictOptions()
        self.model, self.writer, self.say = model, writer, say
        self.detector = self.options.make_detector()
        self.progress = progress or NoProgress()
        self.records: list[dict] = []
        self.tally = Tally()
        self.pending: list[Pending] = []
        self.report_dir = self.options.report or self.options.annotate
        self.used_names: set[Path] = set()

    def fail(self, message: str) -> None:
        self.tally.failed.append(message)
        self.say(f"error: {message}", "red")

    # -- the whole run --------------------------------------------------------------------------------

    def run(self, paths: Iterable[str | Path], camera: int | None = None) -> Tally:
        """Every image and video among ``paths`` (folders searched recursively), then ``camera`` if given."""
        inputs, problems, passed_over = find_inputs(paths)
        self.tally.passed_over += passed_over
        for problem in problems:
            self.fail(str(problem))
        task = self.progress.add_task("inputs", total=len(inputs))
        for entry in inputs:
            self.read(entry)
            self.progress.advance(task)
        self.flush()
        if camera is not None:
            self.video(camera, f"camera-{camera}")
        return self.tally

    def read(self, entry: Input) -> None:
        """One input found by :func:`~fer_runtime.media.find_inputs`; a failure is reported and the run goes on."""
        try:
            if entry.kind == IMAGE:
                self.image(entry)
            elif entry.kind == VIDEO:
                self.flush()  # the images before it are written first
                self.video(entry.path, entry.name)
            else:
                self.fail(f"{entry.path}: unsupported format: neither an image that Pillow can read nor a video that OpenCV can open")
        except (BrokenPipeError, KeyboardInterrupt):
            raise
        except MediaError as exc:
            self.fail(str(exc))
        except Exception as exc:  # e.g. cv2.error or a disk that is full: name the file, say why, go on with the rest
            self.fail(f"{entry.path}: {reason_for(exc)}")

    # -- batching -----------------------------------------------------------------------------------

    def add(self, item: Pending) -> None:
        self.pending.append(item)
        faces = sum(len(p.faces) for p in self.pending)
        held = sum(p.rgb.shape[0] * p.rgb.shape[1] for p in self.pending if p.rgb is not None)
        if faces >= self.options.batch or held >= HELD_PIXELS:
            self.flush()

    def flush(self) -> None:
        """Classify the pending faces in one batch, then write and draw each picture's, in order."""
        pending, self.pending = self.pending, []
        classified = iter(classify_faces([f for p in pending for f in p.faces], self.model))
        for item in pending:
            faces = [next(classified) for _ in item.faces]
            where = {"frame": item.frame, "time": round(item.time, 3)} if item.frame is not None else {}
            records = [{"source": item.source, **where, **face.record()} for face in faces]
            if self.writer is not None:
                self.writer.write(records)
            else:
                self.records += records
            self.tally.faces += len(faces)
            if item.done is not None:
                item.done(item, faces)
        if self.writer is not None:
            self.writer.flush()

    # -- images -------------------------------------------------------------------------------------

    def image(self, entry: Input) -> None:
        rgb = read_image(entry.path, int(self.options.max_megapixels * 1e6))
        faces = self.detector.detect(rgb)
        self.tally.images += 1
        if not faces:
            self.tally.without_face.append(str(entry.path))
            self.say(f"no face found: {entry.path}", "yellow")
        keep = rgb if self.options.annotate else None
        self.add(Pending(str(entry.path), faces, keep, done=lambda item, classified: self._draw_image(entry, item, classified)))

    def _draw_image(self, entry: Input, item: Pending, faces: list[Face]) -> None:
        if item.rgb is None:
            return
        from PIL import Image

        from .annotate import draw_faces

        name = Path(entry.name)
        target = self.unique_path(self.options.annotate / (name if name.suffix.lower() in KEEP_SUFFIXES else name.with_suffix(".png")))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(draw_faces(item.rgb, faces)).save(target)
        except OSError as exc:
            self.fail(f"{entry.path}: could not write the annotated image {target}: {reason_for(exc)}")

    def unique_path(self, path: Path) -> Path:
        """``path``, or ``stem-2.suffix`` … when this run already wrote that name (same names from two folders)."""
        candidate, n = path, 1
        while candidate in self.used_names:
            n += 1
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        self.used_names.add(candidate)
        return candidate

    # -- videos and the camera ----------------------------------------------------------------------

    def video_detector(self) -> Detector:
        """A fresh detector for one video: CenterFace follows faces between whole-frame looks; Haar looks every frame."""
        if self.detector.name == "centerface":
            return FaceTracker(self.detector, self.options.track_every)
        return self.detector

    def video(self, source: Path | int, name: str) -> None:
        """Analyse a video file or a camera; faces of several frames share a batch (one frame: a camera)."""
        label = f"camera:{source}" if isinstance(source, int) else str(source)
        options = self.options
        try:
            video = Video(source)
        except MediaError as exc:
            self.fail(str(exc))
            return
        detector = self.video_detector()
        timeline = Timeline(tuple(self.model.class_names))
        writer = VideoOut(self.unique_path(options.annotate / Path(name).with_suffix(".mp4")), video, options.stride) if options.annotate else None
        per_batch = 1 if video.is_camera else FRAMES_PER_BATCH
        total = (video.info.frame_count + options.stride - 1) // options.stride if video.info.frame_count else None
        if options.frames:
            total = min(total, options.frames) if total else options.frames
        task = self.progress.add_task(f"frames of {Path(name).name}", total=total)
        read = 0

        def done(item: Pending, faces: list[Face]) -> None:
            timeline.add(item.time, faces)
            if writer is not None:
                writer.write(item.rgb, faces)

        try:
            with video:
                for frame in video.frames(options.stride, options.frames):
                    read += 1
                    faces = detector.detect(frame.rgb)
                    self.add(Pending(label, faces, frame.rgb if writer else None, frame.index, frame.time, done))
                    if read % per_batch == 0:
                        self.flush()
                    self.progress.advance(task)
        except MediaError as exc:
            self.fail(str(exc))
        except KeyboardInterrupt:
            if not video.is_camera:
                raise
            self.say(f"camera {source}: stopped (Ctrl-C)")  # the usual way to end a camera run
        finally:
            self.flush()
            self.progress.remove_task(task)
            if writer is not None:
                writer.close()
        if read:
            self.tally.videos += 1
            self._report(timeline, label, name, getattr(detector, "describe", lambda: detector.name)())

    def _report(self, timeline: Timeline, label: str, name: str, detector: str) -> None:
        summary = {**timeline.summary(label, self.options.stride), "detector": detector}
        self.say(describe(summary))
        if summary["frames_with_face"] == 0:
            self.tally.without_face.append(label)
        if self.report_dir is None:
            return
        stem = self.report_dir / Path(name).with_suffix("")
        try:
            picture = timeline.draw(self.unique_path(stem.with_name(stem.name + ".timeline.png")), title=label, smooth_seconds=self.options.smooth)
            path = self.unique_path(stem.with_name(stem.name + ".summary.json"))
            path.write_text(json.dumps({**summary, "timeline": picture.name, "smooth_seconds": self.options.smooth}, indent=1) + "\n")
        except OSError as exc:
            self.fail(f"{label}: could not write its timeline or summary in {self.report_dir}: {reason_for(exc)}")


class VideoOut:
    """The annotated copy of a video: its analysed frames with boxes drawn, at the rate they were analysed."""

    def __init__(self, target: Path, video: Video, stride: int):
        self.target = target
        self.fps = (video.info.fps or 10.0) / stride if not video.is_camera else 10.0
        self.writer = None

    def write(self, rgb: np.ndarray, faces: list[Face]) -> None:
        import cv2

        from .annotate import draw_faces

        if self.writer is None:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            height, width = rgb.shape[:2]
            self.writer = cv2.VideoWriter(str(self.target), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self.writer.isOpened():  # no MPEG-4 encoder in this OpenCV build: Motion JPEG plays anywhere
                self.target = self.target.with_suffix(".avi")
                self.writer = cv2.VideoWriter(str(self.target), cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (width, height))
        self.writer.write(cv2.cvtColor(draw_faces(rgb, faces), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
