"""``fer-predict``: the expression of every face in photographs, folders of them, videos and a webcam.

    fer-predict photo.jpg                           # one JSON line per face on stdout
    fer-predict photos/ clip.mp4 --format csv --out faces.csv --annotate annotated/
    fer-predict --camera 0 --frames 300 --report reports/

Every face found is one record: ``source``, ``frame`` and ``time`` (videos), ``box`` [x, y, width, height] in the
source's pixels, ``landmarks`` (eyes, nose, mouth corners; CenterFace only), ``detector``, ``label``,
``confidence`` and ``probabilities`` (class name → probability). Records are written as each batch of faces is
classified and flushed, so an interrupted run keeps what it wrote. An input that cannot be read is reported on
stderr (file, frame, reason) and the rest go on. Exit status: 0 when every input was read (images without a face
included: they are listed), 1 when some input or folder failed, 2 when nothing could run (bad arguments, no usable
model, no camera). This module is the command line only: the pipeline is :mod:`fer_runtime.pipeline`.
Reference: docs/photos.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .catalog import RANKING_SPLIT, best_model, default_model_dirs, load_entry
from .centerface import DEFAULT_THRESHOLD
from .centerface import DETECT_SIDE as CENTERFACE_SIDE
from .faces import DEFAULT_MIN_SIZE, DETECTORS
from .family import VARIANT_CHOICES
from .haar import CASCADES, DEFAULT_CASCADE, DEFAULT_MARGIN, DEFAULT_NEIGHBORS
from .haar import DEFAULT_MIN_SIZE as HAAR_MIN_SIZE
from .haar import DETECT_SIDE as HAAR_SIDE
from .media import MediaError, Video
from .pipeline import Pipeline, PredictOptions
from .records import FORMATS, RecordWriter
from .timeline import plural

EXIT_OK, EXIT_SOME_FAILED, EXIT_CANNOT_RUN, EXIT_INTERRUPTED = 0, 1, 2, 130
NAMED_PASSED_OVER = 10  # files passed over named in the summary; more are counted
DEFAULTS = PredictOptions()  # the one source of the defaults that flags override


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
    video.add_argument("--stride", type=int, default=DEFAULTS.stride, metavar="K", help="analyse every K-th frame (default: %(default)s)")
    video.add_argument("--frames", type=int, metavar="N", help="stop each video (or the camera) after N analysed frames")
    video.add_argument("--smooth", type=float, default=DEFAULTS.smooth, metavar="SECONDS",
                       help="timeline smoothing window (default: %(default)g)")
    faces = p.add_argument_group("face detection")
    faces.add_argument("--detector", choices=DETECTORS, default=DEFAULTS.detector,
                       help="centerface: a CNN, finds tilted and small faces, with landmarks; haar: OpenCV's cascade, as "
                            "FER2013 was made (default: %(default)s)")
    faces.add_argument("--min-size", type=int, metavar="PX", help=f"smallest face, in the source's pixels (default: {DEFAULT_MIN_SIZE} for centerface, "
                       f"{HAAR_MIN_SIZE} for haar)")
    faces.add_argument("--detect-size", type=int, metavar="PX", help="pictures are scaled to this longest side to detect; haar only "
                       f"scales down, centerface also up, 2× at most (default: {CENTERFACE_SIDE} for centerface, {HAAR_SIDE} for haar)")
    faces.add_argument("--threshold", type=float, metavar="SCORE", help=f"centerface: the score a face needs; lower finds more faces and "
                       f"more false ones (default: {DEFAULT_THRESHOLD:g})")
    faces.add_argument("--no-align", dest="align", action="store_false", default=None,
                       help="centerface: cut crops upright instead of turning them so the eyes are level")
    faces.add_argument("--track-every", type=int, default=DEFAULTS.track_every, metavar="K",
                       help="videos, centerface: look at the whole frame every K-th analysed frame and follow the faces in "
                            "between; 1 looks at every frame (default: %(default)s)")
    faces.add_argument("--margin", type=float, metavar="FRACTION", help=f"haar: crop margin per side, in box sides (default: "
                       f"{DEFAULT_MARGIN:g}, measured to match FER2013)")
    faces.add_argument("--cascade", choices=sorted(CASCADES), help=f"haar: OpenCV's cascade (default: {DEFAULT_CASCADE})")
    faces.add_argument("--neighbors", type=int, metavar="N", help="haar: detections that must agree; fewer finds more faces and more "
                       f"false ones (default: {DEFAULT_NEIGHBORS})")
    faces.add_argument("--max-megapixels", type=float, default=DEFAULTS.max_megapixels, metavar="MP",
                       help="refuse larger images, a guard against decompression bombs (default: %(default).0f)")
    run = p.add_argument_group("running")
    run.add_argument("--batch", type=int, default=DEFAULTS.batch, metavar="N", help="faces classified together (default: %(default)s)")
    run.add_argument("--threads", type=int, metavar="N", help="CPU threads for onnxruntime and OpenCV (default: all cores)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


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


def options_from(args: argparse.Namespace) -> PredictOptions:
    """The pipeline's options from the parsed flags (the names are the same)."""
    fields = PredictOptions.__dataclass_fields__
    return PredictOptions(**{name: getattr(args, name) for name in fields if hasattr(args, name)})


def _check(args, tell) -> bool:
    """Flags out of range: one message, False."""
    for flag, value, least in (("--stride", args.stride, 1), ("--batch", args.batch, 1), ("--min-size", args.min_size or 1, 1),
                               ("--frames", args.frames or 1, 1), ("--detect-size", args.detect_size or 48, 48),
                               ("--track-every", args.track_every, 1)):
        if value < least:
            tell(f"fer-predict: {flag} must be at least {least}, got {value}", "red")
            return False
    if args.margin is not None and not -0.5 < args.margin < 2:
        tell(f"fer-predict: --margin must lie between -0.5 and 2, got {args.margin}", "red")
        return False
    if args.threshold is not None and not 0 < args.threshold < 1:
        tell(f"fer-predict: --threshold must lie between 0 and 1, got {args.threshold}", "red")
        return False
    haar_only = [flag for flag, value in (("--margin", args.margin), ("--cascade", args.cascade), ("--neighbors", args.neighbors))
                 if value is not None]
    centerface_only = [flag for flag, value in (("--threshold", args.threshold), ("--no-align", args.align)) if value is not None]
    wrong = haar_only if args.detector != "haar" else centerface_only
    if wrong:
        tell(f"fer-predict: {', '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} not for --detector {args.detector}", "red")
        return False
    return True


def summary_line(tally) -> str:
    """The last line on stderr: what was read and found, what failed, which files were passed over."""
    line = (f"{plural(tally.images, 'image')}, {plural(tally.videos, 'video')}: {plural(tally.faces, 'face')}; "
            f"{len(tally.without_face)} without a face; {len(tally.failed)} failed")
    if tally.passed_over:
        names = ", ".join(str(p) for p in tally.passed_over[:NAMED_PASSED_OVER])
        more = f" and {len(tally.passed_over) - NAMED_PASSED_OVER} more" if len(tally.passed_over) > NAMED_PASSED_OVER else ""
        line += f"; passed over, neither an image nor a video: {names}{more}"
    return line


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    console = Console(stderr=True)
    tell = lambda text, style="": say(console, text, style)  # noqa: E731
    if not args.paths and args.camera is None:
        tell("fer-predict: give images, videos or folders, or --camera N (fer-predict --help)", "red")
        return EXIT_CANNOT_RUN
    if not _check(args, tell):
        return EXIT_CANNOT_RUN
    ready = _set_up(args, tell)
    if ready is None:
        return EXIT_CANNOT_RUN
    model, options, writer = ready
    progress = _progress_bar(console, hidden=args.no_progress or not console.is_terminal)
    run = Pipeline(model, options, writer, tell, progress)
    status = _run_to_end(run, progress, writer, args, tell)
    if status is None:  # the reader of stdout went away
        return EXIT_SOME_FAILED
    tell(summary_line(run.tally))
    if status == EXIT_OK and run.tally.failed:
        status = EXIT_SOME_FAILED
    return status


def _set_up(args: argparse.Namespace, tell):
    """``(model, options, writer)``: the model, the options with their detector loaded, the camera there and the records'
    writer open; or None, after saying what cannot be set up (a setup problem, before any input is read)."""
    if args.threads:
        import cv2

        cv2.setNumThreads(args.threads)
    try:
        model = _open_model(args, tell)
        options = options_from(args)
        options.make_detector()  # a detector that cannot load is a setup problem: say so before reading anything
    except (SystemExit, RuntimeError, ValueError) as exc:
        tell(f"fer-predict: {exc}", "red")
        return None
    if args.camera is not None:  # a camera that is not there is a setup problem, not one input among many
        try:
            Video(args.camera).close()
        except MediaError as exc:
            tell(f"fer-predict: {exc}", "red")
            return None
    try:
        writer = RecordWriter(args.out, args.format, model.class_names)
    except OSError as exc:
        tell(f"fer-predict: cannot write {args.out} ({exc.strerror or exc})", "red")
        return None
    return model, options, writer


def _progress_bar(console, hidden: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=True, disable=hidden)


def _run_to_end(run: Pipeline, progress, writer: RecordWriter, args: argparse.Namespace, tell) -> int | None:
    """Predict every input (Ctrl-C: write what was found so far) and close the records; the exit status, or None when
    the reader of stdout went away (``| head``): then it stops quietly, as other tools do."""
    status = EXIT_OK
    try:
        with progress:
            run.run(args.paths, args.camera)
    except KeyboardInterrupt:
        try:
            run.flush()  # the faces already found: classify and write them too
        except KeyboardInterrupt:
            pass
        tell("interrupted: the records of every face found so far are written", "yellow")
        status = EXIT_INTERRUPTED
    except BrokenPipeError:
        _drop_stdout()
        return None
    finally:
        try:
            writer.close()
        except BrokenPipeError:
            _drop_stdout()
    return status


def _drop_stdout() -> None:
    """Send stdout to the null device: Python's final flush of stdout fails once its reader has gone."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
