"""A folder of photographs in the TUI (fer_tui.photos): faces detected, each one a Browse item with its photo and
box; photos without faces and unreadable files listed with the reason; folders of 48×48 crops read as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tui_support import fully_shown, headless, screen_text, settle, wait_until

from fer_runtime.io import DataError
from fer_tui.app import make_app
from fer_tui.data import load_dataset
from fer_tui.photos import PHOTO_SPLIT, is_photo_folder, load_photos
from fer_tui.render import draw_box, fit_within, photo_with_box

skimage_data = pytest.importorskip("skimage.data")

CNN = Path(__file__).resolve().parents[2] / "exported" / "cnn.onnx"
SIZE = (120, 40)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """astronaut.png (one face), gray.png (flat gray: no face), broken.jpg (0 bytes), notes.txt (not an image)."""
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(skimage_data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(np.full((240, 320), 128, np.uint8)).save(folder / "gray.png")
    (folder / "broken.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    return folder


def crops_folder(root: Path, nested: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for i in range(3):
        target = root / (f"part{i % 2}" if nested else "") / f"face{i}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(target)
    return root


# -- fer_tui.photos without the app --------------------------------------------------------------------------


def test_photos_or_crops(photo_folder, tmp_path):
    assert is_photo_folder(photo_folder)
    assert not is_photo_folder(crops_folder(tmp_path / "flat"))
    assert not is_photo_folder(crops_folder(tmp_path / "nested", nested=True))
    labelled = tmp_path / "labelled" / "Happy"
    labelled.mkdir(parents=True)
    Image.fromarray(skimage_data.astronaut()).save(labelled / "a.png")  # class folders: crops, whatever their size
    assert not is_photo_folder(tmp_path / "labelled")


def test_load_photos_finds_the_astronaut_and_lists_the_rest(photo_folder):
    seen = []
    photos = load_photos(photo_folder, progress=lambda done, total, name: seen.append((done, total, name)))
    assert seen == [(1, 3, "astronaut.png"), (2, 3, "broken.jpg"), (3, 3, "gray.png")]
    split = photos.split
    assert split.images.shape == (1, 48, 48) and split.images.dtype == np.uint8 and (split.labels == -1).all()
    assert list(split.origin) == ["astronaut.png#1"]
    photo, (x, y, w, h) = photos.source(0)
    assert photo.name == "astronaut.png" and photo.size == (512, 512) and photo.faces == 1
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 180 and 60 < w < 140  # her face, upper middle
    assert max(photo.thumbnail.shape[:2]) == 160 and photo.thumbnail_box((512, 0, 256, 256)) == (160, 0, 80, 80)
    assert [p.name for p in photos.without_faces] == ["gray.png"]
    assert [Path(e.path).name for e in photos.unreadable] == ["broken.jpg"]
    problems = photos.problems()
    assert "gray.png: no face found (320×240)" in problems and "broken.jpg: empty file (0 bytes)" in problems
    notes = " · ".join(photos.notes())
    assert "1 face found in 1 of 2 photos" in notes and "no face in 1: gray.png" in notes and "broken.jpg" in notes


def test_load_dataset_dispatches_photos_and_crops(photo_folder, tmp_path):
    dataset = load_dataset(photo_folder)
    assert list(dataset.splits) == [PHOTO_SPLIT] and dataset.photos is not None and len(dataset.splits[PHOTO_SPLIT]) == 1
    flat = load_dataset(crops_folder(tmp_path / "flat"))
    assert flat.photos is None and list(flat.splits) == ["images"] and len(flat.splits["images"]) == 3
    nested = load_dataset(crops_folder(tmp_path / "nested", nested=True))
    assert nested.photos is None and len(nested.splits["images"]) == 3
    faceless = tmp_path / "faceless"  # not one face found: face crops of another size, shown whole as before
    faceless.mkdir()
    Image.fromarray(np.full((100, 100), 30, np.uint8)).save(faceless / "dark.png")
    whole = load_dataset(faceless)
    assert whole.photos is None and len(whole.splits["images"]) == 1 and "no face found in any of the 1 images" in whole.notes[0]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="no image could be read: a.jpg: empty file"):
        load_dataset(broken)


def test_photo_picture_keeps_its_shape_and_draws_the_box():
    photo = np.zeros((100, 200, 3), np.uint8)
    assert fit_within(photo, 40, 40).shape == (20, 40, 3)
    boxed = photo_with_box(photo, (100, 50, 50, 50), 40, 40)  # → (20, 10, 10, 10) in the 40×20 picture
    assert boxed.shape == (20, 40, 3)
    assert boxed[10, 20:30].any(axis=1).all() and boxed[19, 20:30].any(axis=1).all() and not boxed[15, 25].any()
    assert draw_box(photo, (190, 90, 50, 50))[99, 199].any()  # clipped to the picture


# -- in the app ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not CNN.exists(), reason="exported/cnn.onnx is not in this checkout")
@headless
async def test_browse_shows_the_face_its_photo_and_the_photos_left_out(photo_folder):
    app = make_app(data=photo_folder, models=[CNN], model_dirs=[])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert await wait_until(pilot, lambda: app.context.predictions is not None)
        await settle(pilot)
        assert app.context.split_name == PHOTO_SPLIT and len(app.context.split) == 1
        assert app.context.selected == 0
        text = screen_text(app)
        assert "astronaut.png #1 of 1" in text and "box x " in text and "512×512" in text  # CenterFace: "88×120 of", wrapped
        assert "╭─ astronaut.png" in text  # the photo's pane, titled with its file
        assert "no face in 1: gray.png" in text and "broken.jpg" in text  # the data notes line
        assert "unlabelled" in text
        await pilot.press("n")
        await settle(pilot)
        text = screen_text(app)
        assert "1 no face · 1 unreadable" in text
        assert "gray.png: no face found" in text and "broken.jpg: empty file" in text  # wrapped: 29 columns
        await pilot.press("n")
        await pilot.press("s")
        await settle(pilot)
        assert await wait_until(pilot, lambda: "saliency for" in screen_text(app))
        text = screen_text(app)
        assert "face 0 of photos" in text and "most salient" in text


@pytest.mark.skipif(not CNN.exists(), reason="exported/cnn.onnx is not in this checkout")
@headless
async def test_at_80x24_the_face_takes_the_photos_place_and_n_lists_the_photos_left_out(photo_folder):
    app = make_app(data=photo_folder, models=[CNN], model_dirs=[])
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert await wait_until(pilot, lambda: app.context.predictions is not None)
        await settle(pilot)
        text = screen_text(app)
        assert "╭─ astronaut.png" not in text and "╭─ face" in text
        assert "astronaut.png #1 of 1" in text and "512×512" in text and "unlabelled" in text and "by cnn" in text
        await pilot.press("n")
        await settle(pilot)
        text = screen_text(app)
        assert "gray.png: no face" in text and "broken.jpg: empty" in text
        assert fully_shown(app.query_one("#browse-skipped")) and "predicted  " not in text  # in the readout's place


@headless
async def test_a_folder_of_crops_opens_without_detection(tmp_path, template_dir):
    app = make_app(data=crops_folder(tmp_path / "crops"), models=[template_dir / "template.onnx"], model_dirs=[])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.context.dataset.photos is None and app.context.split_name == "images" and len(app.context.split) == 3
        assert not app.query_one("#browse-photo").display
