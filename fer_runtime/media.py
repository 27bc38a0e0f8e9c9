"""Photographs, videos and cameras as arrays, with errors that name the file (and the frame).

Images are read with Pillow (EXIF orientation applied, so boxes match what a viewer shows), videos and
cameras with OpenCV. Pixel arrays are RGB ``uint8 (H, W, 3)``; video frames too (OpenCV's BGR is converted
here, once). Torch-free.
"""

from __future__ import annotations

import errno
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .io import IMAGE_SUFFIXES

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb limit (Image.MAX_IMAGE_PIXELS), about 89 megapixels
IMAGE, VIDEO = "image", "video"


class MediaError(ValueError):
    """An input that cannot be read. ``str()`` names the file (and the frame) and what was wrong."""

    def __init__(self, path: str | Path, reason: str, frame: int | None = None):
        self.path, self.reason, self.frame = str(path), reason, frame
        where = f"{self.path}, frame {frame}" if frame is not None else self.path
        super().__init__(f"{where}: {reason}")


# -- what to read -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Input:
    """One file to read: an image or a video. ``name`` is its path relative to the folder it was found in
    (its file name when named itself), for naming what is written about it."""

    path: Path
    kind: str | None  # IMAGE, VIDEO, or None: a file named explicitly that is neither
    name: str


def kind_of(path: Path) -> str | None:
    """IMAGE or VIDEO by the file's suffix; None for other suffixes."""
    suffix = path.suffix.lower()
    return IMAGE if suffix in IMAGE_SUFFIXES else VIDEO if suffix in VIDEO_SUFFIXES else None


def sniff(path: Path) -> str | None:
    """IMAGE or VIDEO by the file's content (Pillow reads its header; else OpenCV opens it); None if neither can."""
    from PIL import Image

    try:
        with Image.open(path):
            return IMAGE
    except Exception:  # Pillow raises several types for files that are not images
        pass
    try:
        Video(path).close()
        return VIDEO
    except MediaError:
        return None


def find_inputs(paths: Iterable[str | Path]) -> tuple[list[Input], list[MediaError], list[Path]]:
    """The images and videos among ``paths``: files as given, folders searched recursively (hidden entries
    skipped) for files with an image or video suffix. Returns (inputs, problems, files passed over): problems are
    paths that do not exist and folders that cannot be read (each a :class:`MediaError` saying why); files passed
    over are those in the folders that are neither images nor videos by their suffix. A file named explicitly is
    kept whatever its suffix, its kind found from its content (:func:`sniff`; None when it is neither)."""
    inputs: list[Input] = []
    problems: list[MediaError] = []
    passed_over: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found, unreadable = _walk(path)
            problems += unreadable
            for file in found:
                kind = kind_of(file)
                if kind is None:
                    passed_over.append(file)
                else:
                    inputs.append(Input(file, kind, str(file.relative_to(path))))
        elif path.is_file():
            try:
                path.open("rb").close()
            except OSError as exc:
                problems.append(MediaError(path, f"cannot read the file: {reason_for(exc)}"))
                continue
            inputs.append(Input(path, kind_of(path) or sniff(path), path.name))
        else:
            problems.append(MediaError(path, "no such file or folder"))
    return inputs, problems, passed_over


def _walk(root: Path) -> tuple[list[Path], list[MediaError]]:
    """The visible files under ``root``, sorted, and a :class:`MediaError` for each folder that could not be read
    (``Path.rglob`` skips those without a word)."""
    files: list[Path] = []
    errors: list[MediaError] = []

    def unreadable(exc: OSError) -> None:
        errors.append(MediaError(exc.filename or root, f"cannot read the folder: {reason_for(exc)}"))

    for folder, dirs, names in os.walk(root, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += (Path(folder) / n for n in names if not n.startswith(".") and (Path(folder) / n).is_file())
    return sorted(files), errors


def reason_for(exc: BaseException) -> str:
    """The cause of ``exc`` in plain words: "permission denied", "no such file", "disk full" … for errors of the
    operating system; the exception's own first line otherwise."""
    if isinstance(exc, OSError) and exc.errno is not None:
        words = {errno.EACCES: "permission denied", errno.EPERM: "permission denied (operation not permitted)",
                 errno.ENOENT: "no such file", errno.ENOSPC: "disk full", errno.EISDIR: "a folder, not a file",
                 errno.EROFS: "read-only file system", errno.EIO: "input/output error (a failing disk or a network share?)"}
        return words.get(exc.errno, (exc.strerror or str(exc)).lower())
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return text or exc.__class__.__name__


# -- images -----------------------------------------------------------------------------------------

_pillow_limit = threading.Lock()  # Pillow's limit is a module global: set and restored under this lock


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image file as RGB ``uint8 (H, W, 3)``, turned upright by its EXIF orientation.

    :class:`MediaError` for an empty, truncated or unreadable file, one that is not an image, and one of
    more than ``max_pixels`` pixels (the guard against decompression bombs; raise it for huge scans).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise MediaError(path, "empty file (0 bytes)")
        with _pillow_limit:  # the size check is ours, below, with a message that says what to do
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                img = Image.open(path)  # reads the header only
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with img:
            width, height = img.size
            if width * height > max_pixels:
                raise MediaError(path, f"image too large: {width}×{height} is {width * height / 1e6:.0f} megapixels, more than "
                                       f"the {max_pixels / 1e6:.0f} allowed against decompression bombs (--max-megapixels raises it)")
            img.load()
            upright = ImageOps.exif_transpose(img)
            if upright.mode.startswith("I;16"):  # 16-bit gray: Pillow's convert("RGB") would clip at 255, not scale
                upright = Image.fromarray((np.asarray(upright, np.float32) / 257).round().astype(np.uint8))
            rgb = upright.convert("RGB")
    except MediaError:
        raise
    except UnidentifiedImageError as exc:
        raise MediaError(path, "unsupported format: not an image that Pillow can read (unknown or damaged format)") from exc
    except OSError as exc:
        if exc.errno is not None:  # the operating system's: permission denied, a folder, a failing disk …
            raise MediaError(path, f"cannot read the file: {reason_for(exc)}") from exc
        reason = "truncated image (the file ends early)" if "truncated" in str(exc) else f"damaged image ({reason_for(exc)})"
        raise MediaError(path, reason) from exc
    except (ValueError, SyntaxError, EOFError) as exc:  # some Pillow plugins raise these on corrupt data
        raise MediaError(path, f"damaged image ({reason_for(exc)})") from exc
    return np.asarray(rgb, dtype=np.uint8)


# -- videos and cameras -----------------------------------------------------------------------------

def _quiet_opencv():
    """OpenCV (and FFmpeg inside it) print their own warnings to stderr; :class:`MediaError` says it better."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read when FFmpeg first loads
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return cv2


@dataclass
class Frame:
    index: int  # 0-based frame number in the video
    time: float  # seconds from the start
    rgb: np.ndarray  # uint8 (H, W, 3)


@dataclass
class VideoInfo:
    fps: float  # 0 when the file does not say
    frame_count: int  # as the container declares it; 0 when unknown (cameras)
    width: int
    height: int


class Video:
    """A video file or a camera, read frame by frame: ``for frame in video.frames(stride)``.

    Opening fails with :class:`MediaError` when OpenCV cannot open the file (not a video, damaged) or the
    camera (none at that index). A file that stops early raises :class:`MediaError` naming the last frame read,
    after every frame before it has been yielded.
    """

    def __init__(self, source: str | Path | int):
        cv2 = _quiet_opencv()
        self.source = source
        self.is_camera = isinstance(source, int)
        self.name = f"camera {source}" if self.is_camera else str(source)
        if not self.is_camera:
            path = Path(source)
            if not path.is_file():
                raise MediaError(path, "no such file")
            if path.stat().st_size == 0:
                raise MediaError(path, "empty file (0 bytes)")
            try:
                path.open("rb").close()  # OpenCV would only say that it cannot open it
            except OSError as exc:
                raise MediaError(path, f"cannot read the file: {reason_for(exc)}") from exc
        self._capture = cv2.VideoCapture(source if self.is_camera else str(source))
        if not self._capture.isOpened():
            self._capture.release()
            if self.is_camera:
                raise MediaError(self.name, f"no camera at index {source} (OpenCV could not open it; is one connected, "
                                            "and may this user read /dev/video*?)")
            raise MediaError(source, "unsupported format or damaged file: not a video that OpenCV can open")
        get = self._capture.get
        self.info = VideoInfo(max(float(get(cv2.CAP_PROP_FPS) or 0.0), 0.0), max(int(get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0),
                              int(get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(get(cv2.CAP_PROP_FRAME_HEIGHT) or 0))
        self._cv2 = cv2

    def frames(self, stride: int = 1, limit: int | None = None) -> Iterator[Frame]:
        """Frames 0, stride, 2·stride, … (at most ``limit`` of them). Frames in between are skipped without
        being converted. Times come from the frame rate (the camera's clock for cameras)."""
        import time

        if stride < 1:
            raise ValueError(f"stride must be 1 or more, got {stride}")
        start = time.monotonic()
        index = yielded = 0
        while limit is None or yielded < limit:
            if index % stride:
                if not self._capture.grab():
                    break
                index += 1
                continue
            ok, bgr = self._capture.read()
            if not ok or bgr is None:
                break
            if self.is_camera:
                seconds = time.monotonic() - start
            elif self.info.fps:
                seconds = index / self.info.fps
            else:
                seconds = float(self._capture.get(self._cv2.CAP_PROP_POS_MSEC)) / 1000
            yield Frame(index, seconds, self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB))
            index += 1
            yielded += 1
        ended_early = limit is None or yielded < limit
        if ended_early and not self.is_camera:
            if index == 0:
                raise MediaError(self.source, "no frame could be decoded (damaged video?)", frame=0)
            declared = self.info.frame_count
            if declared and index < declared - 1:  # containers may count one frame more than they hold
                raise MediaError(self.source, f"the video stops at frame {index} of the {declared} it declares "
                                              "(truncated or damaged); the frames before it were analysed", frame=index)

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
