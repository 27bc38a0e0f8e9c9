"""``fer-predict``: the expression of every face in photographs, folders of them, videos and a webcam.

    fer-predict photo.jpg                           # one JSON line per face on stdout
    fer-predict photos/ clip.mp4 --format csv --out faces.csv --annotate annotated/
    fer-predict --camera 0 --frames 300 --report reports/

Every face found is one record: ``source``, ``frame`` and ``time`` (videos), ``box`` [x, y, width, height] in the
source's pixels, ``label``, ``confidence`` and ``probabilities`` (class name → probability). Records are written as
each batch of faces is classified and flushed, so an interrupted run keeps what it wrote. An input that cannot be
read is reported on stderr (file, frame, reason) and the rest go on. Exit status: 0 when every input was read
(images without a face included: they are listed), 1 when some input failed, 2 when nothing could run (bad
arguments, no usable model, no camera). Reference: docs/photos.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .catalog import RANKING_SPLIT, best_model, default_model_dirs, load_entry
from .faces import (
    CASCADES,
    DEFAULT_CASCADE,
    DEFAULT_MARGIN,
    DEFAULT_MIN_SIZE,
    DEFAULT_NEIGHBORS,
    DETECT_SIDE,
    Face,
    FaceDetector,
    classify_faces,
)
from .media import (
    DEFAULT_MAX_PIXELS,
    IMAGE,
    VIDEO,
    Input,
    MediaError,
    Video,
    find_inputs,
    read_image,
)
from .records import FORMATS, RecordWriter
from .timeline import DEFAULT_SMOOTH_SECONDS, Timeline, describe, plural
from .variants import VARIANT_CHOICES

EXIT_OK, EXIT_SOME_FAILED, EXIT_CANNOT_RUN, EXIT_INTERRUPTED = 0, 1, 2, 130
KEEP_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}  # annotated images keep these; others become .png
HELD_PIXELS = 40_000_000  # pictures held for drawing before a batch is classified, at most (about 120 MB of RGB)
FRAMES_PER_BATCH = 16


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fer-predict", description="Find the faces in photographs, videos or a webcam and "
                                "classify their expressions with an exported model.",
                                epilog="Exit status: 0 all inputs read, 1 some failed, 2 nothing could run. Reference: docs/photos.md")
    p.add_argument("paths", nargs="*", metavar="PATH", help="images, videos, or folders (searched recursively)")
    p.add_argument("--camera", type=int, metavar="N", help="read webcam N (0 is the first) until Ctrl-C or --frames")
    p.add_argument("--model", type=Path, metavar="FILE", help="an exported .onnx model (default: the most accurate in exported/ by "
                                              "its recorded validation accuracy)")
    p.add_argument("--variant", choices=VARIANT_CHOICES, default="auto",
                   help="auto: the fastest variant of the model that passed the accuracy gate (int8, else fast, else the "
                        "model); fp32, fast or int8: that one (default: %(default)s)")
    p.add_argument("--format", choices=FORMATS, default="jsonl", help="record format (default: jsonl)")
    p.add_argument("--out", type=Path, metavar="FILE", help="write records here instead of stdout")
    p.add_argument("--annotate", type=Path, metavar="DIR", help="write each image and video here with boxes and labels drawn")
    p.add_argument("--report", type=Path, metavar="DIR", help="write each video's timeline (PNG) and summary (JSON) here "
                                                              "(default: the --annotate folder)")
    video = p.add_argument_group("videos")
    video.add_argument("--stride", type=int, default=1, metavar="K", help="analyse every K-th frame (default: 1)")
    video.add_argument("--frames", type=int, metavar="N", help="stop each video (or the camera) after N analysed frames")
    video.add_argument("--smooth", type=float, default=DEFAULT_SMOOTH_SECONDS, metavar="SECONDS",
                       help=f"timeline smoothing window (default: {DEFAULT_SMOOTH_SECONDS:g})")
    faces = p.add_argument_group("face detection")
    faces.add_argument("--min-size", type=int, default=DEFAULT_MIN_SIZE, metavar="PX",
                       help=f"smallest face, in the source's pixels (default: {DEFAULT_MIN_SIZE})")
    faces.add_argument("--margin", type=float, default=DEFAULT_MARGIN, metavar="FRACTION",
                       help=f"crop margin per side, as a fraction of the face box (default: {DEFAULT_MARGIN:g}, measured to match FER2013)")
    faces.add_argument("--cascade", choices=sorted(CASCADES), default=DEFAULT_CASCADE, help="OpenCV face detector (default: %(default)s)")
    faces.add_argument("--neighbors", type=int, default=DEFAULT_NEIGHBORS, metavar="N", help="detections that must agree; fewer finds more "
                                                                                "faces and more false ones (default: %(default)s)")
    faces.add_argument("--detect-size", type=int, default=DETECT_SIDE, metavar="PX",
                       help="larger pictures are scaled down to this longest side to detect (default: %(default)s)")
    faces.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6, metavar="MP",
                       help="refuse larger images, a guard against decompression bombs (default: %(default).0f)")
    run = p.add_argument_group("running")
    run.add_argument("--batch", type=int, default=64, metavar="N", help="faces classified together (default: %(default)s)")
    run.add_argument("--threads", type=int, metavar="N", help="CPU threads for onnxruntime and OpenCV (default: all cores)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


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
    images: int = 0
    videos: int = 0
    faces: int = 0
    failed: list[str] = field(default_factory=list)
    without_face: list[str] = field(default_factory=list)


class Predictor:
    """One run of fer-predict: reads the inputs, batches their faces through the model, writes what was asked."""

    def __init__(self, args, model, detector: FaceDetector, writer: RecordWriter, console, progress):
        self.args, self.model, self.detector, self.writer = args, model, detector, writer
        self.console, self.progress = console, progress
        self.tally = Tally()
        self.pending: list[Pending] = []
        self.report_dir = args.report or args.annotate
        self.used_names: set[Path] = set()

    # -- messages -----------------------------------------------------------------------------------

    def say(self, text: str, style: str = "") -> None:
        say(self.console, text, style)

    def fail(self, message: str) -> None:
        self.tally.failed.append(message)
        self.say(f"error: {message}", "red")

    # -- batching -----------------------------------------------------------------------------------

    def add(self, item: Pending) -> None:
        self.pending.append(item)
        faces = sum(len(p.faces) for p in self.pending)
        held = sum(p.rgb.shape[0] * p.rgb.shape[1] for p in self.pending if p.rgb is not None)
        if faces >= self.args.batch or held >= HELD_PIXELS:
            self.flush()

    def flush(self) -> None:
        """Classify the pending faces in one batch, then write and draw each picture's, in order."""
        pending, self.pending = self.pending, []
        classified = iter(classify_faces([f for p in pending for f in p.faces], self.model))
        for item in pending:
            faces = [next(classified) for _ in item.faces]
            self.writer.write([{"source": item.source, **({"frame": item.frame, "time": round(item.time, 3)} if item.frame is not None else {}),
                                **face.record()} for face in faces])
            self.tally.faces += len(faces)
            if item.done is not None:
                item.done(item, faces)
        self.writer.flush()

    # -- images -------------------------------------------------------------------------------------

    def image(self, entry: Input) -> None:
        try:
            rgb = read_image(entry.path, int(self.args.max_megapixels * 1e6))
            faces = self.detector.detect(rgb)
        except MediaError as exc:
            self.fail(str(exc))
            return
        self.tally.images += 1
        if not faces:
            self.tally.without_face.append(str(entry.path))
            self.say(f"no face found: {entry.path}", "yellow")
        keep = rgb if self.args.annotate else None
        self.add(Pending(str(entry.path), faces, keep, done=lambda item, classified: self._draw_image(entry, item, classified)))

    def _draw_image(self, entry: Input, item: Pending, faces: list[Face]) -> None:
        if item.rgb is None:
            return
        from PIL import Image

        from .annotate import draw_faces

        name = Path(entry.name)
        target = self.unique_path(self.args.annotate / (name if name.suffix.lower() in KEEP_SUFFIXES else name.with_suffix(".png")))
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(draw_faces(item.rgb, faces)).save(target)
        except OSError as exc:
            self.fail(f"{entry.path}: could not write the annotated image {target} ({exc})")

    def unique_path(self, path: Path) -> Path:
        """``path``, or ``stem-2.suffix`` … when this run already wrote that name (same names from two folders)."""
        candidate, n = path, 1
        while candidate in self.used_names:
            n += 1
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        self.used_names.add(candidate)
        return candidate

    # -- videos and the camera ----------------------------------------------------------------------

    def video(self, source: Path | int, name: str) -> None:
        """Analyse a video file or a camera; faces of several frames share a batch (one frame: a camera)."""
        label = f"camera:{source}" if isinstance(source, int) else str(source)
        try:
            video = Video(source)
        except MediaError as exc:
            self.fail(str(exc))
            return
        timeline = Timeline(tuple(self.model.class_names))
        writer = VideoOut(self, name, video) if self.args.annotate else None
        per_batch = 1 if video.is_camera else FRAMES_PER_BATCH
        total = (video.info.frame_count + self.args.stride - 1) // self.args.stride if video.info.frame_count else None
        if self.args.frames:
            total = min(total, self.args.frames) if total else self.args.frames
        task = self.progress.add_task(f"frames of {Path(name).name}", total=total)
        read = 0

        def done(item: Pending, faces: list[Face]) -> None:
            timeline.add(item.time, faces)
            if writer is not None:
                writer.write(item.rgb, faces)

        try:
            with video:
                for frame in video.frames(self.args.stride, self.args.frames):
                    read += 1
                    faces = self.detector.detect(frame.rgb)
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
            self.progress.refresh()  # gone now, not at the next tick
            if writer is not None:
                writer.close()
        if read:
            self.tally.videos += 1
            self._report(timeline, label, name)

    def _report(self, timeline: Timeline, label: str, name: str) -> None:
        summary = timeline.summary(label, self.args.stride)
        self.say(describe(summary))
        if summary["frames_with_face"] == 0:
            self.tally.without_face.append(label)
        if self.report_dir is None:
            return
        stem = self.report_dir / Path(name).with_suffix("")
        try:
            picture = timeline.draw(self.unique_path(stem.with_name(stem.name + ".timeline.png")), title=label, smooth_seconds=self.args.smooth)
            path = self.unique_path(stem.with_name(stem.name + ".summary.json"))
            path.write_text(json.dumps({**summary, "timeline": picture.name, "smooth_seconds": self.args.smooth}, indent=1) + "\n")
        except OSError as exc:
            self.fail(f"{label}: could not write its timeline or summary in {self.report_dir} ({exc})")


class VideoOut:
    """The annotated copy of a video: its analysed frames with boxes drawn, at the rate they were analysed."""

    def __init__(self, run: Predictor, name: str, video: Video):
        self.target = run.unique_path(run.args.annotate / Path(name).with_suffix(".mp4"))
        self.fps = (video.info.fps or 10.0) / run.args.stride if not video.is_camera else 10.0
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


# -- main -------------------------------------------------------------------------------------------

def say(console, text: str, style: str = "") -> None:
    """A line on stderr, above the progress bars: the text as it is (no markup: file names may hold brackets),
    never wrapped (a path stays whole for copying)."""
    from rich.text import Text

    console.print(Text(text, style=style), highlight=False, soft_wrap=True)  # a Text's style stays off the progress bars


def _open_model(args, tell):
    if args.model is not None:
        entry = load_entry(args.model, args.threads, args.variant)
        if not entry.ok:
            raise SystemExit(entry.error)
    else:
        entry = best_model(threads=args.threads, variant=args.variant)
        if entry is None:
            raise SystemExit(f"no usable model in {', '.join(str(d) for d in default_model_dirs())}: pass --model FILE.onnx")
    runner = entry.runner
    accuracy = entry.metric(RANKING_SPLIT)
    tell(f"model: {entry.path}" + (f" (validation accuracy {accuracy:.1%})" if accuracy is not None else "")
         + (f", running {runner.path.name}" if runner.path != entry.path else ""))
    for warning in entry.warnings:
        tell(f"warning: {warning}")
    return runner


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    tell = lambda text, style="": say(console, text, style)  # noqa: E731
    if not args.paths and args.camera is None:
        tell("fer-predict: give images, videos or folders, or --camera N (fer-predict --help)", "red")
        return EXIT_CANNOT_RUN
    for flag, value, least in (("--stride", args.stride, 1), ("--batch", args.batch, 1), ("--min-size", args.min_size, 1),
                               ("--frames", args.frames or 1, 1), ("--detect-size", args.detect_size, 48)):
        if value < least:
            tell(f"fer-predict: {flag} must be at least {least}, got {value}", "red")
            return EXIT_CANNOT_RUN
    if not -0.5 < args.margin < 2:
        tell(f"fer-predict: --margin must lie between -0.5 and 2, got {args.margin}", "red")
        return EXIT_CANNOT_RUN
    if args.threads:
        import cv2

        cv2.setNumThreads(args.threads)
    try:
        model = _open_model(args, tell)
        detector = FaceDetector(args.min_size, args.margin, args.cascade, args.neighbors, args.detect_size)
    except (SystemExit, RuntimeError) as exc:
        tell(f"fer-predict: {exc}", "red")
        return EXIT_CANNOT_RUN
    inputs, missing, others = find_inputs(args.paths)
    if args.camera is not None:  # a camera that is not there is a setup problem, not one input among many
        try:
            Video(args.camera).close()
        except MediaError as exc:
            tell(f"fer-predict: {exc}", "red")
            return EXIT_CANNOT_RUN

    try:
        writer = RecordWriter(args.out, args.format, model.class_names)
    except OSError as exc:
        tell(f"fer-predict: cannot write {args.out} ({exc.strerror or exc})", "red")
        return EXIT_CANNOT_RUN
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=True, disable=args.no_progress or not console.is_terminal)
    run = Predictor(args, model, detector, writer, console, progress)
    for error in missing:
        run.fail(str(error))
    status = EXIT_OK
    try:
        with progress:
            task = progress.add_task("inputs", total=len(inputs))
            for entry in inputs:
                try:
                    if entry.kind == IMAGE:
                        run.image(entry)
                    elif entry.kind == VIDEO:
                        run.flush()  # the images before it are written first
                        run.video(entry.path, entry.name)
                    else:
                        run.fail(f"{entry.path}: neither an image that Pillow can read nor a video that OpenCV can open")
                except BrokenPipeError:
                    raise
                except Exception as exc:  # e.g. cv2.error or a disk that is full: name the file, go on with the rest
                    run.fail(f"{entry.path}: {exc.__class__.__name__}: {str(exc).strip()[:300]}")
                progress.advance(task)
            run.flush()
            if args.camera is not None:
                run.video(args.camera, f"camera-{args.camera}")
    except KeyboardInterrupt:
        try:
            run.flush()  # the faces already found: classify and write them too
        except KeyboardInterrupt:
            pass
        run.say("interrupted: the records of every face found so far are written", "yellow")
        status = EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away (| head): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's final flush of stdout fails otherwise
        return EXIT_SOME_FAILED
    finally:
        try:
            writer.close()
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    tally = run.tally
    skipped = f", {plural(others, 'other file')} in the folders passed over" if others else ""
    run.say(f"{plural(tally.images, 'image')}, {plural(tally.videos, 'video')}: {plural(tally.faces, 'face')}; "
            f"{len(tally.without_face)} without a face; {len(tally.failed)} failed{skipped}")
    if status == EXIT_OK and tally.failed:
        status = EXIT_SOME_FAILED
    return status


if __name__ == "__main__":
    sys.exit(main())
