"""The real `normalcrafter` command in a subprocess on the tiny model."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from media import moving_clip, write_sequence, write_video
from normalcrafter.io.writers import read_exr_normals


def cli(*args, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "normalcrafter", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=300)


def assert_clean_failure(r, *words):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("normalcrafter estimate: error:"), r.stderr
    for w in words:
        assert w in last, last


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("in") / "shot 01 ü.mp4", moving_clip(18, 48, 80))


def test_estimate_writes_exr_frames_with_header(video, tiny_model, tmp_path):
    out = tmp_path / "out"
    r = cli("estimate", video, "-o", out, "--model", tiny_model, "--frames", "2:17", "--renormalize")
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in out.glob("normal.*.exr"))
    assert files == [f"normal.{i:05d}.exr" for i in range(2, 17)]
    n, hdr = read_exr_normals(out / "normal.00002.exr")
    assert n.shape == (48, 80, 3)
    assert np.allclose(np.linalg.norm(n, axis=-1), 1, atol=2e-3)
    assert hdr["normalcrafter_convention"] == "RUB" and str(tiny_model) in hdr["normalcrafter_model"]
    assert "frames" in r.stderr and "wrote 15 frame(s)" in r.stderr


def test_formats_and_conventions(video, tiny_model, tmp_path):
    assert cli("estimate", video, "-o", tmp_path / "npy", "--model", tiny_model, "--format", "npy").returncode == 0
    raw = np.load(tmp_path / "npy" / "normals.npy")
    assert raw.shape == (18, 48, 80, 3) and raw.dtype == np.float32 and np.abs(raw).max() <= 1
    r = cli("estimate", video, "-o", tmp_path / "cv", "--model", tiny_model, "--convention", "opencv",
            "--format", "png")
    assert r.returncode == 0, r.stderr
    import cv2

    png = cv2.imread(str(tmp_path / "cv" / "normal.00000.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    n = png.astype(np.float64) / 65535 * 2 - 1
    # opencv = opengl with Y and Z flipped; the model output here is in opengl
    assert np.abs(n[..., 0] - raw[0, ..., 0]).max() < 1e-4
    assert np.abs(n[..., 1] + raw[0, ..., 1]).max() < 1e-4 and np.abs(n[..., 2] + raw[0, ..., 2]).max() < 1e-4


def test_image_sequence_keeps_frame_numbers(tiny_model, tmp_path):
    write_sequence(tmp_path / "plate", moving_clip(5, 40, 40), "plate_{:04d}.png", first=1001)
    r = cli("estimate", tmp_path / "plate" / "plate_####.png", "-o", tmp_path / "o", "--model", tiny_model)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "o").glob("*.exr")) == [f"normal.{i:05d}.exr" for i in range(1001, 1006)]


def test_resume_is_identical_and_conflicts_are_refused(video, tiny_model, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli("estimate", video, "-o", full, "--model", tiny_model).returncode == 0
    assert cli("estimate", video, "-o", part, "--model", tiny_model).returncode == 0
    for n in (3, 9, 17):  # as if killed: later frames missing, plus a stale temporary
        (part / f"normal.{n:05d}.exr").unlink()
    (part / ".normal.00017.exr.999.part").write_bytes(b"partial")
    r = cli("estimate", video, "-o", part, "--model", tiny_model)
    assert r.returncode == 0 and "15 already done" in r.stderr, r.stderr
    for n in range(18):
        a, _ = read_exr_normals(full / f"normal.{n:05d}.exr")
        b, _ = read_exr_normals(part / f"normal.{n:05d}.exr")
        assert np.array_equal(a, b)
    assert not list(part.glob(".*part"))
    assert_clean_failure(cli("estimate", video, "-o", part, "--model", tiny_model, "--max-res", "40"), "max_res")


@pytest.mark.parametrize("case", ["missing", "corrupt", "zero_frames", "one_by_one", "unwritable", "incomplete_model",
                                  "pickle_model", "bad_range", "bad_stride"])
def test_bad_input_gives_one_line_error(case, video, tiny_model, tmp_path):
    model, inp, out, extra = tiny_model, video, tmp_path / "out", []
    if case == "missing":
        inp = tmp_path / "nope.mp4"
    elif case == "corrupt":
        inp = tmp_path / "bad.mov"
        inp.write_bytes(os.urandom(4000))
    elif case == "zero_frames":
        (tmp_path / "empty").mkdir()
        inp = tmp_path / "empty"
    elif case == "one_by_one":
        write_sequence(tmp_path / "tiny", np.zeros((2, 1, 1, 3), np.uint8))
        inp = tmp_path / "tiny"
    elif case == "unwritable":
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = blocker / "sub"
    elif case in ("incomplete_model", "pickle_model"):
        model = tmp_path / "model"
        shutil.copytree(tiny_model, model)
        if case == "incomplete_model":
            shutil.rmtree(model / "vae")
        else:
            st = next((model / "unet").glob("*.safetensors"))
            st.rename(model / "unet" / "diffusion_pytorch_model.bin")
    elif case == "bad_range":
        extra = ["--frames", "50:60"]
    elif case == "bad_stride":
        extra = ["--stride", "20"]
    r = cli("estimate", inp, "-o", out, "--model", model, *extra)
    words = {"missing": ["no such file"], "corrupt": ["not a readable video"], "zero_frames": ["no image files"],
             "one_by_one": ["1x1"], "unwritable": ["not writable"], "incomplete_model": ["incomplete", "vae/"],
             "pickle_model": ["pickle"], "bad_range": ["selects none"], "bad_stride": ["stride"]}[case]
    assert_clean_failure(r, *words)
    if out.exists():
        assert not [p for p in out.iterdir() if p.suffix == ".exr"]


def test_hub_model_offline_is_a_clear_error(video, tmp_path):
    r = cli("estimate", video, "-o", tmp_path / "o", "--model", "Yanrui95/NormalCrafter",
            env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert_clean_failure(r, "Yanrui95/NormalCrafter")


def test_help_explains_options():
    r = cli("estimate", "--help")
    assert r.returncode == 0
    for opt in ("--model", "--format", "--device", "--dtype", "--window", "--stride", "--decode-chunk", "--max-res",
                "--frames", "--renormalize", "--convention"):
        assert opt in r.stdout


def test_download_offline_is_a_clear_error(tmp_path):
    r = cli("download", "--to", tmp_path / "m", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("normalcrafter download: error: cannot download")
