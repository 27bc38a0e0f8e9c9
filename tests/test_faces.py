"""Faces in photographs (fer_runtime.faces, fer_runtime.haar): detection, FER2013-style crops, classification.

The default detector (CenterFace) has its own tests in test_detectors.py; here both detectors meet the same pictures.

Real photographs come from inside scikit-image's wheel (no download): ``astronaut`` (one smiling face), the 100
face photographs of ``lfw_subset`` and photographs without people as backgrounds. Composites paste faces at known
boxes and check that detection finds them again (recall) where they were (IoU); with the real FER2013 present,
its validation faces are pasted too, and the model must agree with itself on the re-detected crops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2", reason="face detection needs opencv-python-headless (a base dependency)")
skimage_data = pytest.importorskip("skimage.data", reason="the test photographs come with scikit-image (the dev extra)")

from fer_runtime.centerface import CenterFaceDetector  # noqa: E402
from fer_runtime.classifier import load_classifier  # noqa: E402
from fer_runtime.composites import DetectionScore, background, match_boxes, paste_faces, skimage_backgrounds  # noqa: E402
from fer_runtime.contract import IMAGE_SIZE  # noqa: E402
from fer_runtime.faces import Face, box_iou, crop_face, detect_faces, largest, predict_faces, to_gray  # noqa: E402
from fer_runtime.haar import DEFAULT_MARGIN, HaarDetector  # noqa: E402
from fer_runtime.media import MediaError  # noqa: E402
from fer_runtime.synthetic import make_faces  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT_FACE = (172, 60, 104, 104)  # drawn by hand around Eileen Collins' face in skimage.data.astronaut()
CANVAS = (240, 360)  # small pictures keep the tests quick: three faces of 64–96 px


@pytest.fixture(scope="module")
def model():
    return load_classifier(REPO / "exported" / "fer-best.onnx", threads=1)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return skimage_backgrounds()


def _composites(faces: np.ndarray, photos, seed: int, sizes=(64, 96)):
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, len(faces), 3):
        group = list(faces[start:start + 3])
        out.append(paste_faces(group, rng.integers(sizes[0], sizes[1] + 1, len(group)), background(photos, *CANVAS, rng), rng))
    return out


def test_the_astronaut_has_one_face_and_it_smiles(astronaut, model):
    faces = predict_faces(astronaut, model)
    assert len(faces) == 1
    face = faces[0]
    assert box_iou(face.box, ASTRONAUT_FACE) > 0.6
    assert face.crop.shape == (IMAGE_SIZE, IMAGE_SIZE) and face.crop.dtype == np.uint8
    assert face.label == "Happy" and face.confidence > 0.5
    assert face.probabilities.sum() == pytest.approx(1.0, abs=1e-6)
    record = face.record()
    assert record["box"] == list(face.box) and record["label"] == "Happy" and set(record["probabilities"]) == set(model.class_names)
    assert list(record) == ["box", "landmarks", "detector", "label", "confidence", "probabilities"] and record["detector"] == "centerface"
    haar = predict_faces(astronaut, model, detector=HaarDetector())
    assert len(haar) == 1 and haar[0].label == "Happy" and list(haar[0].record()) == ["box", "detector", "label", "confidence", "probabilities"]


def test_every_kind_of_picture_gives_the_same_face(astronaut, tmp_path):
    from PIL import Image

    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    bgr = np.ascontiguousarray(astronaut[:, :, ::-1])
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    pictures = {"rgb": (astronaut, "rgb"), "bgr": (bgr, "bgr"), "float": (astronaut / 255.0, "rgb"),
                "rgba": (rgba, "rgb"), "pil": (Image.fromarray(astronaut), "rgb"), "path": (path, "rgb"), "str": (str(path), "rgb")}
    detector = CenterFaceDetector(detect_side=512)  # at the picture's own size: quicker, and the formats are the point here
    boxes = {name: [f.box for f in detect_faces(image, channels=channels, detector=detector)] for name, (image, channels) in pictures.items()}
    assert all(b == boxes["rgb"] for b in boxes.values()), boxes
    (gray,) = detect_faces(to_gray(astronaut), detector=detector)  # the detector sees colour: in gray the same face, a slightly different box
    assert box_iou(gray.box, boxes["rgb"][0]) > 0.8
    np.testing.assert_array_equal(to_gray(bgr, "bgr"), to_gray(astronaut))
    assert not np.array_equal(to_gray(bgr), to_gray(astronaut))  # the convention matters: BGR read as RGB is another picture


def test_photographs_are_turned_upright_by_their_exif_orientation(astronaut, tmp_path):
    from PIL import Image

    path = tmp_path / "from-a-phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored pixels must be turned 90° clockwise to be seen upright
    Image.fromarray(astronaut).transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, quality=95)
    faces = detect_faces(path)
    assert len(faces) == 1 and box_iou(faces[0].box, ASTRONAUT_FACE) > 0.6


def test_sixteen_bit_pictures_are_scaled_not_clipped(astronaut, tmp_path):
    from PIL import Image

    path = tmp_path / "sixteen.png"
    Image.fromarray(to_gray(astronaut).astype(np.uint16) * 257).save(path)
    assert len(detect_faces(path)) == 1


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2), np.uint8), np.zeros((2, 3, 4, 5), np.uint8), np.zeros((8, 8), np.int32)])
def test_to_gray_says_what_it_expected(bad):
    with pytest.raises(ValueError, match="expected"):
        to_gray(bad)


@pytest.mark.parametrize("detector", [None, HaarDetector()], ids=["centerface", "haar"])
def test_photographs_without_people_have_no_faces(detector):
    for name in ("coffee", "chelsea", "rocket", "coins"):
        assert detect_faces(getattr(skimage_data, name)(), detector=detector) == [], name


def test_haars_default_cascade_sees_faces_in_coins():
    assert len(HaarDetector(cascade="default").detect(skimage_data.coins())) > 0  # why alt2 is Haar's default


def test_real_face_photographs_pasted_into_larger_pictures_are_found_where_they_were(photos):
    lfw = (skimage_data.lfw_subset()[:18] * 255).round().astype(np.uint8)  # the first 100 of 200 are faces
    score = DetectionScore()
    for detector in (HaarDetector(min_size=24), None):
        score = DetectionScore()
        for composite in _composites(lfw, photos, seed=1):
            score.add(composite.boxes, [f.box for f in detect_faces(composite.image, 24, detector=detector)], min_iou=0.3)
        assert score.recall >= 0.8 and score.mean_iou >= 0.6 and score.false_positives <= 1, (detector, score)


def test_drawn_faces_pasted_into_larger_pictures_are_found_too(photos):
    drawn, _ = make_faces(12, seed=3)
    score = DetectionScore()
    for composite in _composites(drawn, photos, seed=2):
        score.add(composite.boxes, HaarDetector(min_size=24).boxes(composite.image))
    assert score.recall >= 0.8 and score.mean_iou >= 0.7, score


@pytest.mark.real_data
def test_fer2013_faces_pasted_and_detected_again_keep_their_predictions(real_data, photos, model):
    from fer_runtime.io import load_source
    from fer_runtime.splits import make_splits

    val = make_splits(load_source(real_data), val_fraction=0.1, seed=0).val
    faces = val.images[:36]
    score = DetectionScore()
    found, originals = [], []
    for index, composite in enumerate(_composites(faces, photos, seed=4)):
        detected = detect_faces(composite.image, 24)
        for i, (j, _) in enumerate(score.add(composite.boxes, [f.box for f in detected], min_iou=0.3)):
            if j is not None:
                found.append(detected[j].crop)
                originals.append(faces[3 * index + i])
    # benchmarks/face_detection.py on 900 faces: recall about 94 %, IoU about 0.71
    assert score.recall >= 0.8 and score.mean_iou >= 0.6, score
    agree = (model.predict_logits(np.stack(found)).argmax(1) == model.predict_logits(np.stack(originals)).argmax(1)).mean()
    assert agree >= 0.6


def test_a_very_large_picture_is_scaled_down_to_detect_and_boxes_come_back_in_its_pixels(astronaut):
    import cv2

    scale = 9  # 4,608 × 4,608: 21 megapixels
    big = cv2.resize(astronaut, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    for detector in (HaarDetector(min_size=200), None):  # detected at 1,600 px (Haar) or 1,280 px (CenterFace)
        faces = detect_faces(big, 200, detector=detector)
        assert box_iou(largest(faces).box, tuple(v * scale for v in ASTRONAUT_FACE)) > 0.55


def test_min_size_drops_smaller_faces(astronaut):
    assert len(detect_faces(astronaut, min_size=80)) == 1
    assert detect_faces(astronaut, min_size=160) == []  # her face is about 100 px


def test_crop_face_squares_the_box_adds_the_margin_and_repeats_edges():
    gray = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8)
    exact = crop_face(gray, (10, 20, 48, 48), margin=0.0)
    np.testing.assert_array_equal(exact, gray[20:68, 10:58])
    wider = crop_face(gray, (26, 26, 48, 48), margin=0.25, size=72)  # 48 · 1.5 = 72 px around the same centre
    np.testing.assert_array_equal(wider, gray[14:86, 14:86])
    corner = crop_face(np.pad(np.full((50, 50), 200, np.uint8), ((0, 50), (0, 50))), (0, 0, 40, 40), margin=0.25)
    assert corner.shape == (IMAGE_SIZE, IMAGE_SIZE) and (corner[:8, :8] == 200).all()  # outside the picture: its edge repeated
    with pytest.raises(ValueError, match="margin"):
        crop_face(gray, (0, 0, 10, 10), margin=-0.5)


def test_the_default_margin_is_the_measured_one():
    assert -0.1 <= DEFAULT_MARGIN <= 0.1  # FER2013's crops are the detector's box (benchmarks/face_crop_margin.py)


def test_match_boxes_pairs_each_box_once_best_first():
    truth = [(0, 0, 10, 10), (100, 100, 10, 10)]
    found = [(1, 1, 10, 10), (0, 0, 10, 10), (300, 300, 5, 5)]
    assert match_boxes(truth, found) == [(1, 1.0), (None, 0.0)]


def test_largest_is_the_biggest_box():
    faces = [Face((0, 0, 10, 10), np.zeros((48, 48), np.uint8)), Face((5, 5, 30, 30), np.zeros((48, 48), np.uint8))]
    assert largest(faces).box == (5, 5, 30, 30) and largest([]) is None


def test_an_unreadable_path_raises_a_media_error_naming_it(tmp_path, model):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(MediaError, match="broken.jpg"):
        predict_faces(bad, model)
