"""fer-predict end to end: each output format, folders, a video the test writes, and every kind of bad input.

The command runs in this process (``main(argv)``) except once through ``python -m``; the photographs are
scikit-image's (inside its wheel), the video is made of them with cv2.VideoWriter.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="face detection needs opencv-python-headless (a base dependency)")
skimage_data = pytest.importorskip("skimage.data", reason="the test photographs come with scikit-image (the dev extra)")

from fer_runtime.annotate import CLASS_COLOURS  # noqa: E402
from fer_runtime.catalog import best_model, default_model_dirs, find_models, load_entry  # noqa: E402
from fer_runtime.contract import CLASS_NAMES  # noqa: E402
from fer_runtime.predict_cli import EXIT_CANNOT_RUN, EXIT_OK, EXIT_SOME_FAILED, main  # noqa: E402
from fer_runtime.records import csv_header  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAST = ["--model", str(REPO / "exported" / "fer-best.onnx"), "--no-progress", "--threads", "1"]
FPS, FACE_FRAMES, BLANK_FRAMES = 10, 8, 4


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares ``width``×``height`` gray pixels and holds none: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """The astronaut, a blank picture, a video of the astronaut, and one file of each kind of bad input."""
    from PIL import Image

    root = tmp_path_factory.mktemp("media")
    astronaut = skimage_data.astronaut()
    files = {"astronaut": root / "astronaut.png", "blank": root / "blank.png", "video": root / "clip.avi"}
    Image.fromarray(astronaut).save(files["astronaut"])
    Image.fromarray(np.full((200, 300, 3), 120, np.uint8)).save(files["blank"])
    writer = cv2.VideoWriter(str(files["video"]), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (320, 240))
    portrait = astronaut[0:300, 60:360]  # head and shoulders (at this size, the shuttle beside her passes for a face)
    face = cv2.cvtColor(cv2.resize(portrait, (240, 240), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    for i in range(FACE_FRAMES + BLANK_FRAMES):
        frame = np.full((240, 320, 3), 90, np.uint8)
        if i < FACE_FRAMES:
            frame[:, 4 * i:4 * i + 240] = face  # the face moves right, then leaves
        writer.write(frame)
    writer.release()

    bad = root / "bad"
    bad.mkdir()
    files["empty"] = bad / "empty.jpg"
    files["empty"].write_bytes(b"")
    files["truncated"] = bad / "truncated.png"
    files["truncated"].write_bytes(files["astronaut"].read_bytes()[:20000])
    files["not_an_image"] = bad / "letter.png"
    files["not_an_image"].write_text("Dear reader, this is not a picture.\n")
    files["other_type"] = bad / "notes.txt"
    files["other_type"].write_text("neither an image nor a video\n")
    files["corrupt_video"] = bad / "corrupt.mp4"
    files["corrupt_video"].write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    files["truncated_video"] = bad / "truncated.avi"
    files["truncated_video"].write_bytes(files["video"].read_bytes()[: files["video"].stat().st_size * 2 // 5])
    files["bomb"] = bad / "bomb.png"
    _png_header_only(files["bomb"], 30_000, 30_000)
    files["missing"] = bad / "missing.jpg"
    return files


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_jsonl_on_stdout_one_record_per_face(capsys, media):
    code, out, err = run(capsys, media["astronaut"], *FAST)
    assert code == EXIT_OK, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 1
    record = records[0]
    assert list(record) == ["source", "box", "landmarks", "detector", "label", "confidence", "probabilities"]
    assert record["source"] == str(media["astronaut"]) and record["label"] == "Happy" and record["detector"] == "centerface"
    assert list(record["probabilities"]) == list(CLASS_NAMES)
    assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    x, y, w, h = record["box"]
    assert 150 < x < 200 and 40 < y < 90 and 80 < w < 120
    (left_eye, right_eye, nose, left_mouth, right_mouth) = record["landmarks"]
    assert all(x <= px <= x + w and y <= py <= y + h for px, py in record["landmarks"])
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < right_mouth[0] and left_eye[1] < nose[1] < left_mouth[1]
    assert "1 image, 0 videos: 1 face" in err and "fer-best.onnx" in err


def test_csv_to_a_file(capsys, media, tmp_path):
    out_file = tmp_path / "out" / "faces.csv"
    code, out, err = run(capsys, media["astronaut"], "--format", "csv", "--out", out_file, *FAST)
    assert code == EXIT_OK and out == ""
    lines = out_file.read_text().splitlines()
    assert lines[0].split(",") == csv_header(CLASS_NAMES)
    row = dict(zip(lines[0].split(","), lines[1].split(",")))
    assert row["label"] == "Happy" and row["frame"] == "" and float(row["Happy"]) == float(row["confidence"])
    assert row["detector"] == "centerface" and float(row["eye1_x"]) < float(row["eye2_x"])


def test_folders_are_searched_recursively_and_annotated(capsys, media, tmp_path):
    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    (folder / "trip" / "day1.png").write_bytes(media["astronaut"].read_bytes())
    (folder / "portrait.png").write_bytes(media["astronaut"].read_bytes())
    (folder / "readme.txt").write_text("not a photo")
    (folder / ".hidden.png").write_bytes(b"skipped: hidden")
    annotated = tmp_path / "annotated"
    code, out, err = run(capsys, folder, "--annotate", annotated, *FAST)
    assert code == EXIT_OK, err
    assert sorted(json.loads(line)["source"] for line in out.splitlines()) == [str(folder / "portrait.png"), str(folder / "trip" / "day1.png")]
    assert f"passed over, neither an image nor a video: {folder / 'readme.txt'}" in err
    from PIL import Image

    x, y, w, h = json.loads(out.splitlines()[0])["box"]
    for name in ("portrait.png", "trip/day1.png"):
        with Image.open(annotated / name) as img:
            assert img.size == (512, 512)
            drawn = np.asarray(img.convert("RGB"))
        assert tuple(drawn[y + h // 2, x]) == CLASS_COLOURS[CLASS_NAMES.index("Happy")]  # the box's left edge, in Happy's colour


def test_a_video_gives_records_per_frame_a_timeline_and_a_summary(capsys, media, tmp_path):
    reports, annotated = tmp_path / "reports", tmp_path / "annotated"
    code, out, err = run(capsys, media["video"], "--stride", "2", "--report", reports, "--annotate", annotated, *FAST)
    assert code == EXIT_OK, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["frame"] for r in records] == list(range(0, FACE_FRAMES, 2))  # the face in each of the first frames, none after
    assert all(r["time"] == pytest.approx(r["frame"] / FPS) for r in records)
    assert all(r["label"] == "Happy" for r in records)
    assert [r["box"][0] for r in records] == sorted(r["box"][0] for r in records)  # the face moves right
    summary = json.loads((reports / "clip.summary.json").read_text())
    assert summary["frames_analysed"] == (FACE_FRAMES + BLANK_FRAMES) // 2 and summary["frames_with_face"] == FACE_FRAMES // 2
    assert summary["share"]["Happy"] == 1.0 and summary["timeline"] == "clip.timeline.png"
    assert summary["detector"].startswith("centerface")
    from PIL import Image

    with Image.open(reports / "clip.timeline.png") as img:
        assert img.size[0] >= 800
    assert "clip.avi: 6 frames analysed (one in 2) over 1.0 s, a face in 4: Happy 100%" in err
    videos = list(annotated.glob("clip.*"))
    assert len(videos) == 1
    copy = cv2.VideoCapture(str(videos[0]))
    assert int(copy.get(cv2.CAP_PROP_FRAME_COUNT)) == summary["frames_analysed"]
    copy.release()


def test_frames_limits_each_video(capsys, media):
    code, out, _ = run(capsys, media["video"], "--frames", "2", *FAST)
    assert code == EXIT_OK and [json.loads(line)["frame"] for line in out.splitlines()] == [0, 1]


BAD = {  # input → what the message must say
    "empty": "empty file (0 bytes)",
    "truncated": "truncated image",
    "not_an_image": "not an image that Pillow can read",
    "other_type": "unsupported format: neither an image that Pillow can read nor a video that OpenCV can open",
    "corrupt_video": "unsupported format or damaged file: not a video that OpenCV can open",
    "truncated_video": "the video stops at frame",
    "bomb": "image too large: 30000×30000 is 900 megapixels",
    "missing": "no such file or folder",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_input_is_named_and_the_rest_go_on(capsys, media, tmp_path, kind):
    out_file = tmp_path / "faces.jsonl"
    code, _, err = run(capsys, media[kind], media["astronaut"], "--out", out_file, *FAST)
    assert code == EXIT_SOME_FAILED
    assert f"error: {media[kind]}" in err and BAD[kind] in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].count(str(media[kind])) == 1, err  # named once
    assert "Error" not in err and "damaged image (" not in errors[0].replace(BAD[kind], ""), err  # no exception's name, no wrapping
    sources = [json.loads(line)["source"] for line in out_file.read_text().splitlines()]
    assert str(media["astronaut"]) in sources  # the good input after it was still read, and its record written


def test_records_written_before_a_failure_are_kept(capsys, media, tmp_path):
    out_file = tmp_path / "faces.jsonl"
    code, _, err = run(capsys, media["astronaut"], media["truncated_video"], media["empty"], "--out", out_file, *FAST)
    assert code == EXIT_SOME_FAILED and "2 failed" in err
    sources = [json.loads(line)["source"] for line in out_file.read_text().splitlines()]
    assert sources[0] == str(media["astronaut"]) and str(media["truncated_video"]) in sources  # its frames before the damage


def test_a_picture_without_a_face_is_listed_not_failed(capsys, media):
    code, out, err = run(capsys, media["blank"], *FAST)
    assert code == EXIT_OK and out == ""
    assert f"no face found: {media['blank']}" in err and "1 without a face; 0 failed" in err


def test_the_pixel_limit_can_be_lowered(capsys, media):
    code, _, err = run(capsys, media["astronaut"], "--max-megapixels", "0.1", *FAST)
    assert code == EXIT_SOME_FAILED and "512×512" in err and "--max-megapixels" in err


def test_no_camera_is_a_clear_error(capsys):
    index = 9
    if cv2.VideoCapture(index).isOpened():
        pytest.skip(f"this machine has a camera {index}")
    code, out, err = run(capsys, "--camera", index, *FAST)
    assert code == EXIT_CANNOT_RUN and out == ""
    assert f"no camera at index {index}" in err


@pytest.mark.parametrize("args, message", [([], "give images, videos or folders"),
                                           (["x.png", "--model", "nowhere.onnx"], "no such model file"),
                                           (["x.png", "--stride", "0"], "--stride must be at least 1")])
def test_nothing_to_run_exits_2(capsys, args, message):
    code, _, err = run(capsys, *args, "--no-progress")
    assert code == EXIT_CANNOT_RUN and message in err


def test_the_default_model_is_the_most_accurate_shipped_one():
    entries = [load_entry(p, threads=1) for p in find_models(default_model_dirs())]
    recorded = {e.path: e.metric("val") for e in entries if e.ok}
    chosen = best_model(threads=1)
    assert chosen is not None and recorded[chosen.path] == max(recorded.values())
    assert not any(".grad." in p.name or ".layers." in p.name or ".filters." in p.name for p in recorded)


def test_python_m_runs_it_and_the_console_script_is_declared(media):
    done = subprocess.run([sys.executable, "-m", "fer_runtime.predict_cli", str(media["astronaut"]), *FAST, "--format", "csv"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("source,frame,time,x,y,width,height,detector,label,confidence")
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fer-predict"] == "fer_runtime.predict_cli:main"


def test_it_runs_the_fastest_variant_that_passed_the_gate_unless_told(capsys, media):
    model = Path(__file__).resolve().parents[1] / "exported" / "cnn.onnx"
    code, out, err = run(capsys, media["astronaut"], "--model", model, "--threads", "1", "--no-progress")
    assert code == EXIT_OK and "running cnn.int8.onnx" in err, err
    int8 = json.loads(out.splitlines()[0])
    code, out, err = run(capsys, media["astronaut"], "--model", model, "--threads", "1", "--no-progress", "--variant", "fp32")
    assert code == EXIT_OK and "running" not in err, err
    fp32 = json.loads(out.splitlines()[0])
    assert int8["box"] == fp32["box"] and int8["label"] == fp32["label"] == "Happy"
    assert int8["confidence"] == pytest.approx(fp32["confidence"], abs=0.05)  # the gate allows 0.5 points; a face moves little


# -- what fer-predict says about files and folders it cannot read (issue 31) --------------------------------


def _without_root_privilege() -> None:
    """In the child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so that
    root obeys file modes like anyone else (a root process reads a file of mode 000 otherwise)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _run_unprivileged(*args) -> subprocess.CompletedProcess:
    preexec = None
    if os.geteuid() == 0:
        try:
            subprocess.run(["true"], preexec_fn=_without_root_privilege, check=True)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE ({exc}): root reads files of any mode here")
        preexec = _without_root_privilege
    return subprocess.run([sys.executable, "-m", "fer_runtime.predict_cli", *map(str, args), *FAST], capture_output=True, text=True,
                          timeout=180, cwd=REPO, preexec_fn=preexec)


def test_unreadable_files_and_folders_are_failures_named_with_the_cause(media, tmp_path):
    folder = tmp_path / "photos"
    (folder / "locked-away").mkdir(parents=True)
    (folder / "astronaut.png").write_bytes(media["astronaut"].read_bytes())
    (folder / "locked-away" / "inside.png").write_bytes(media["astronaut"].read_bytes())
    (folder / "secret.png").write_bytes(media["astronaut"].read_bytes())
    (folder / "holiday.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    named = tmp_path / "named.jpg"
    named.write_bytes(media["astronaut"].read_bytes())
    for path in (folder / "locked-away", folder / "secret.png", named):
        path.chmod(0)
    try:
        done = _run_unprivileged(folder, named)
    finally:
        for path in (folder / "locked-away", folder / "secret.png", named):
            path.chmod(0o700)
    err = done.stderr
    assert done.returncode == EXIT_SOME_FAILED, err
    assert f"error: {folder / 'locked-away'}: cannot read the folder: permission denied" in err
    assert f"error: {folder / 'secret.png'}: cannot read the file: permission denied" in err
    assert f"error: {named}: cannot read the file: permission denied" in err
    assert "3 failed" in err and f"passed over, neither an image nor a video: {folder / 'holiday.heic'}" in err
    assert "damaged" not in err and "Errno" not in err
    assert [json.loads(line)["source"] for line in done.stdout.splitlines()] == [str(folder / "astronaut.png")]


def test_names_with_brackets_are_printed_as_they_are(capsys, tmp_path):
    bad = tmp_path / "[bold red]holiday.jpg"
    bad.write_bytes(b"")
    code, _, err = run(capsys, bad, *FAST)
    assert code == EXIT_SOME_FAILED and f"error: {bad}: empty file (0 bytes)" in err  # not taken as Rich markup


def test_haar_stays_as_a_choice_and_its_records_say_so(capsys, media):
    code, out, err = run(capsys, media["astronaut"], "--detector", "haar", *FAST)
    assert code == EXIT_OK, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["detector"] == "haar" and "landmarks" not in record and record["label"] == "Happy"


@pytest.mark.parametrize("args, message", [(["--margin", "0.1"], "--margin is not for --detector centerface"),
                                           (["--detector", "haar", "--no-align"], "--no-align is not for --detector haar"),
                                           (["--track-every", "0"], "--track-every must be at least 1")])
def test_flags_of_the_other_detector_are_refused(capsys, media, args, message):
    code, _, err = run(capsys, media["astronaut"], *args, *FAST)
    assert code == EXIT_CANNOT_RUN and message in err
