"""Faces found in a folder of photographs: one split of their 48×48 crops, and where each came from.

``fer-tui --data FOLDER`` decides between two kinds of folder (:func:`is_photo_folder`):

- **face crops**, read as today by :func:`fer_runtime.io.read_image_folder` without detection: a folder sorted
  into class folders (``<class>/*`` or ``<split>/<class>/*``), or one whose images are all 48×48 (FER2013's size);
- **photographs**, anything else: every image under the folder (recursively, hidden entries skipped) is read with
  :mod:`fer_runtime.media`, its faces found by :mod:`fer_runtime.faces` (CenterFace), and each face becomes one unlabelled image
  of the split ``photos``. Photos without a face and files that cannot be read are kept in lists, with the reason.

Each photo keeps a small RGB thumbnail (longest side :data:`THUMB_SIDE`), so Browse draws the photo with the face's
box without reading the file again. Pure: numpy, Pillow and OpenCV; no textual, no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fer_runtime.contract import IMAGE_SIZE
from fer_runtime.io import UNLABELLED, DataError, Split, class_index_of, load_image
from fer_runtime.media import IMAGE, MediaError, find_inputs, read_image

PHOTO_SPLIT = "photos"
CROPS_SPLIT = "images"  # the name fer_runtime.io gives a flat folder's unlabelled images
THUMB_SIDE = 160  # pixels: more than Browse's side pane ever shows (about 60 × 40)

Box = tuple[int, int, int, int]  # x, y, width, height in the photo's pixels
Progress = Callable[[int, int, str], None]  # (photos done, photos in all, the name of the one just done)


@dataclass
class Photo:
    """One readable photograph: where it is, its size, a thumbnail and how many faces it holds."""

    path: Path
    name: str  # relative to the folder
    size: tuple[int, int]  # width, height in pixels
    thumbnail: np.ndarray = field(repr=False)  # uint8 (h, w, 3), longest side at most THUMB_SIDE
    faces: int = 0

    def thumbnail_box(self, box: Box) -> Box:
        """``box`` in the thumbnail's pixels."""
        scale = self.thumbnail.shape[1] / self.size[0]
        return tuple(round(v * scale) for v in box)  # type: ignore[return-value]


@dataclass(frozen=True)
class PhotoFace:
    """Where the face at this index of the split comes from: the photo (an index into ``photos``) and its box."""

    photo: int
    box: Box


@dataclass
class PhotoFaces:
    """The faces found in a folder of photographs, as one split, with their photos and what was left out."""

    root: Path
    split: Split  # uint8 (N, 48, 48) crops, labels UNLABELLED, origin "<photo name>#<k>" (k-th face, left to right)
    photos: list[Photo]  # every photo that could be read, in file order
    faces: list[PhotoFace]  # one per image of ``split``
    unreadable: list[MediaError] = field(default_factory=list)
    videos: int = 0  # videos under the folder, not read here (fer-predict reads them)

    @property
    def without_faces(self) -> list[Photo]:
        return [photo for photo in self.photos if photo.faces == 0]

    def source(self, index: int) -> tuple[Photo, Box]:
        """The photo and box of the split's face ``index``."""
        face = self.faces[index]
        return self.photos[face.photo], face.box

    def problems(self) -> list[str]:
        """One line per photo without a face or file that could not be read, with the reason."""
        lines = [f"{photo.name}: no face found ({photo.size[0]}×{photo.size[1]})" for photo in self.without_faces]
        for error in self.unreadable:
            name = _relative(Path(error.path), self.root)
            lines.append(f"{name}: {error.reason}")
        return lines

    def notes(self) -> list[str]:
        """Short lines for the data-notes bar."""
        with_faces = len(self.photos) - len(self.without_faces)
        notes = [f"{_count(len(self.faces), 'face')} found in {with_faces} of {_count(len(self.photos), 'photo')}"]
        if self.without_faces:
            names = ", ".join(p.name for p in self.without_faces[:3]) + (", …" if len(self.without_faces) > 3 else "")
            notes.append(f"no face in {len(self.without_faces)}: {names}")
        if self.unreadable:
            first = self.unreadable[0]
            more = f" and {len(self.unreadable) - 1} more" if len(self.unreadable) > 1 else ""
            notes.append(f"{len(self.unreadable)} unreadable: {_relative(Path(first.path), self.root)} ({first.reason}){more}")
        if self.videos:
            notes.append(f"{self.videos} videos not read (fer-predict reads videos)")
        return notes


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# -- photos or crops ---------------------------------------------------------------------------------

def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_class_folder(root: Path) -> bool:
    """``root/<class>/*`` or ``root/<split>/<class>/*``: the labelled layouts of :func:`fer_runtime.io.read_image_folder`."""
    subdirs = _visible_dirs(root)
    if not subdirs:
        return False
    if all(class_index_of(d.name) is not None for d in subdirs):
        return True
    inner = [_visible_dirs(d) for d in subdirs]
    return all(dirs and all(class_index_of(d.name) is not None for d in dirs) for dirs in inner)


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as img:  # the header only
            return img.size
    except Exception:  # noqa: BLE001 -- Pillow raises several types; an unreadable file is reported where it is read
        return None


def is_photo_folder(root: str | Path) -> bool:
    """True when ``root`` holds photographs to detect faces in; False for ready face crops (see the module's doc):
    class folders, or images that are all 48×48. A folder holding Kaggle's ``fer2013.csv`` is not a photo folder."""
    root = Path(root)
    if not root.is_dir() or any((root / name).is_file() for name in ("fer2013.csv", "fer2013.csv.gz")):
        return False
    if is_class_folder(root):
        return False
    inputs, _, _ = find_inputs([root])
    sizes = (_image_size(i.path) for i in inputs if i.kind == IMAGE)
    known = 0
    for size in sizes:
        if size is not None:
            if size != (IMAGE_SIZE, IMAGE_SIZE):
                return True  # the first photo decides
            known += 1
    return known == 0


# -- reading -----------------------------------------------------------------------------------------

def thumbnail(rgb: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """``rgb`` scaled down (never up) so that its longest side is at most ``side``."""
    from PIL import Image

    height, width = rgb.shape[:2]
    scale = min(1.0, side / max(height, width))
    if scale == 1.0:
        return np.ascontiguousarray(rgb)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(size, Image.Resampling.BOX))


def load_photos(root: str | Path, *, detector=None, progress: Progress | None = None,
                cancelled: Callable[[], bool] | None = None) -> PhotoFaces:
    """Detect the faces in every image under ``root``. ``detector``: any of :mod:`fer_runtime.faces`' detectors
    (the default one, CenterFace, when None). ``progress(done, total, name)`` after each photo. Raises :class:`DataError`
    when ``root`` holds no image at all."""
    from fer_runtime.faces import make_detector

    root = Path(root)
    detector = detector or make_detector()
    inputs, problems, _ = find_inputs([root])
    if any(Path(p.path) == root for p in problems):
        raise DataError(root, next(p.reason for p in problems if Path(p.path) == root))
    images = [i for i in inputs if i.kind == IMAGE]
    if not images:
        raise DataError(root, "no images found (.png, .jpg, …) in the folder or its subfolders"
                        + "".join(f"; {_relative(Path(p.path), root)}: {p.reason}" for p in problems[:3]))
    crops: list[np.ndarray] = []
    faces: list[PhotoFace] = []
    origin: list[str] = []
    photos: list[Photo] = []
    unreadable: list[MediaError] = list(problems)  # subfolders that could not be read
    for done, item in enumerate(images, start=1):
        if cancelled is not None and cancelled():
            break
        try:
            rgb = read_image(item.path)
        except MediaError as exc:
            unreadable.append(exc)
        else:
            found = detector.detect(rgb)
            photo = Photo(item.path, item.name, (rgb.shape[1], rgb.shape[0]), thumbnail(rgb), faces=len(found))
            for k, face in enumerate(found):
                crops.append(face.crop)
                faces.append(PhotoFace(len(photos), tuple(int(v) for v in face.box)))
                origin.append(f"{item.name}#{k + 1}")
            photos.append(photo)
        if progress is not None:
            progress(done, len(images), item.name)
    array = np.stack(crops) if crops else np.empty((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    split = Split(array, np.full(len(crops), UNLABELLED, np.int64), origin)
    return PhotoFaces(root, split, photos, faces, unreadable, videos=sum(1 for i in inputs if i.kind != IMAGE))


def load_crops(root: str | Path) -> Split:
    """The 48×48 images anywhere under ``root`` (a folder without class folders), unlabelled, as they are."""
    root = Path(root)
    inputs, _, _ = find_inputs([root])
    paths = [i.path for i in inputs if i.kind == IMAGE]
    images, origin = [], []
    for path in paths:
        images.append(load_image(path))  # DataError names the file
        origin.append(str(path))
    if not images:
        raise DataError(root, "no images found")
    return Split(np.stack(images), np.full(len(images), UNLABELLED, np.int64), origin)
