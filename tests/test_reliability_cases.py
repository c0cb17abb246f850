"""Bad and odd inputs as real files, shared by the CLI, worker and add-on suites
(tests/test_reliability_*.py), plus the checks every failure must pass.

Each bad case names the error code and the words its one-line message must
hold; each odd case names the frames it must write and the warning it must
give. Builders write into a fresh folder, so a case never sees another's files.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from media import moving_clip, write_video

# Small windows keep every job to a fraction of a second on the tiny model.
FAST = {"window": 4, "stride": 3, "decode_chunk": 2, "max_res": 64}
# A folder name no shell would take literally: were any of it ever passed
# through a shell, the command substitution would create ``PWNED``.
# Video frames fit FAST's max_res, so only the "large" case is downscaled.
H, W = 40, 64
HOSTILE_DIR = "in $(touch PWNED) `touch PWNED` ; & | 'q' \"dq\" ü 日本 #1 %d"


@dataclass
class Case:
    input: Path
    output: Path
    model: Path
    code: str | None = None  # None: the job must succeed
    words: tuple[str, ...] = ()  # in the error message, or in a warning of a successful job
    settings: dict = field(default_factory=dict)  # job settings on top of FAST, in the worker's names
    frames: list[int] | None = None  # the output frame numbers a successful job writes
    size: tuple[int, int] | None = None  # (height, width) of its output frames

    def cli_args(self) -> list[str]:
        s = {**FAST, **self.settings}
        args = [str(self.input), "-o", str(self.output), "--model", str(self.model)]
        for key, value in s.items():
            if key == "frames":
                args += ["--frames", f"{value[0]}:{'' if value[1] is None else value[1]}"]
            else:
                args += [f"--{key.replace('_', '-')}", str(value)]
        return args

    def job(self) -> dict:
        return {"input": str(self.input), "output_dir": str(self.output), "model": str(self.model),
                **FAST, **self.settings}


def sandbox_env(root: Path) -> dict[str, str]:
    """Environment for worker and CLI processes: no network, an empty hub
    cache, logs in tmp, and one torch thread (two threads on a busy 2-core
    machine run the tiny model many times slower, spinning against each other)."""
    return {"HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf"), "NORMALCRAFTER_LOG_DIR": str(root / "logs"),
            "OMP_NUM_THREADS": "1"}


@contextmanager
def one_torch_thread():
    """This process's torch on one thread, as the worker and CLI processes run
    (the thread count may change float sums, and outputs are compared bitwise)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# -- media ---------------------------------------------------------------------

def faststart_mp4(path: Path, n: int, h: int = H, w: int = W) -> Path:
    """An mp4 with its index first, as cameras and editors write them: cut
    short, it still opens and announces frames whose data is gone."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for f in moving_clip(n, h, w):
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(s.encode(None))
    return path


def damaged_mp4(path: Path) -> Path:
    """Bytes flipped inside the frame data: the container is intact, the
    decoder either fails or conceals the damage."""
    data = bytearray(faststart_mp4(path.with_name("intact.mp4"), 30).read_bytes())
    rng = np.random.default_rng(4)
    for i in rng.integers(len(data) // 2, len(data) - 10, 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def header_only_mkv(path: Path) -> Path:
    """A video stream declared, no frame ever written."""
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        out.start_encoding()
    return path


def lying_avi(path: Path, n: int = 4, claim: int = 500) -> Path:
    """An AVI whose headers (avih dwTotalFrames, strh dwLength) claim ``claim`` frames."""
    import struct

    data = bytearray(write_video(path.with_name("honest.avi"), moving_clip(n, H, W)).read_bytes())
    avih = data.find(b"avih")
    strh = data.find(b"strh")
    data[avih + 24: avih + 28] = struct.pack("<I", claim)
    data[strh + 40: strh + 44] = struct.pack("<I", claim)
    path.write_bytes(bytes(data))
    return path


def vfr_mp4(path: Path, n: int = 6) -> Path:
    """Frames 40 ms apart, every third one 120 ms: a variable frame rate."""
    import av

    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.time_base = tb
        t = 0
        for i, f in enumerate(moving_clip(n, H, W)):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts, frame.time_base = t, tb
            t += 120 if i % 3 == 2 else 40
            out.mux(s.encode(frame))
        out.mux(s.encode(None))
    return path


def lossless_video(path: Path, pix_fmt: str, n: int = 3) -> Path:
    """FFV1 in Matroska: a grayscale or 16-bit video as masters are kept."""
    import av

    frames = moving_clip(n, H, W)
    with av.open(str(path), "w") as out:
        s = out.add_stream("ffv1", rate=24)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for f in frames:
            out.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format=pix_fmt)))
        out.mux(s.encode(None))
    return path


def write_image(path: Path, pixels: np.ndarray) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".exr":
        import OpenEXR

        channels = {c: np.ascontiguousarray(pixels[:, :, i], np.float32) for i, c in enumerate("RGB")}
        with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, channels) as f:
            f.write(str(path))
        return path
    bgr = pixels[:, :, [2, 1, 0, *range(3, pixels.shape[2])]] if pixels.ndim == 3 else pixels
    if not cv2.imwrite(str(path), bgr):
        raise OSError(f"cannot write {path}")
    return path


def image_sequence(folder: Path, numbers: list[int], make: Callable[[np.ndarray], np.ndarray] = lambda f: f,
                   ext: str = "png", h: int = 40, w: int = 56) -> Path:
    for n, frame in zip(numbers, moving_clip(len(numbers), h, w)):
        write_image(folder / f"plate.{n:04d}.{ext}", make(frame))
    return folder


def model_copy(tiny_model: Path, dest: Path, damage: Callable[[Path], None]) -> Path:
    shutil.copytree(tiny_model, dest)
    damage(dest)
    return dest


def _truncate_weights(model: Path) -> None:
    f = model / "unet" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _drop_a_weight(model: Path) -> None:
    from safetensors.torch import load_file, save_file

    f = model / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(f)
    del tensors[sorted(tensors)[0]]
    save_file(tensors, f)


def _pickle_weights(model: Path) -> None:
    st = model / "unet" / "diffusion_pytorch_model.safetensors"
    st.rename(st.with_suffix(".bin"))


def _bad_config(model: Path) -> None:
    config = {"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": "many"}
    (model / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))


# -- the cases -------------------------------------------------------------------

def bad_cases(root: Path, tiny_model: Path) -> dict[str, Case]:
    """Inputs, outputs and models that must fail with a specific one-line error."""
    def folder(name: str) -> Path:
        d = root / name
        d.mkdir(parents=True)
        return d

    def case(name: str, inp: Path, code: str, *words: str, model: Path = tiny_model, output: Path | None = None,
             **settings) -> Case:
        return Case(inp, output or root / name / "out", model, code, words, settings)

    d = {name: folder(name) for name in (
        "missing", "empty", "truncated", "random_bytes", "damaged", "no_frames_video", "no_frames_folder",
        "one_by_one", "too_large", "mixed_sizes", "duplicate_numbers", "corrupt_frame", "under_a_file",
        "output_is_a_file", "output_on_procfs", "output_is_input", "incomplete_model", "truncated_weights",
        "weights_with_holes", "pickle_weights", "bad_model_config", "negative_frames")}
    good_clip = write_video(d["missing"] / "good.mp4", moving_clip(6, H, W))
    (d["empty"] / "empty.mp4").write_bytes(b"")
    cut = faststart_mp4(d["truncated"] / "whole.mp4", 30)
    (d["truncated"] / "cut.mp4").write_bytes(cut.read_bytes()[: cut.stat().st_size * 6 // 10])
    (d["random_bytes"] / "noise.mov").write_bytes(np.random.default_rng(0).bytes(5000))
    write_image(d["one_by_one"] / "dot.png", np.zeros((1, 1, 3), np.uint8))
    write_image(d["too_large"] / "strip.png", np.zeros((8, 17000, 3), np.uint8))
    image_sequence(d["mixed_sizes"] / "seq", [1, 2, 3])
    write_image(d["mixed_sizes"] / "seq" / "plate.0004.png", np.zeros((40, 60, 3), np.uint8))
    image_sequence(d["duplicate_numbers"] / "seq", [1, 2])
    write_image(d["duplicate_numbers"] / "seq" / "other.0002.png", np.zeros((40, 56, 3), np.uint8))
    image_sequence(d["corrupt_frame"] / "seq", [1, 2, 3, 4, 5, 6])
    (d["corrupt_frame"] / "seq" / "plate.0005.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (d["under_a_file"] / "a-file").write_text("not a folder")
    (d["output_is_a_file"] / "taken").write_text("not a folder")
    image_sequence(d["output_is_input"] / "seq", [1, 2])
    return {
        "missing": case("missing", d["missing"] / "nope.mp4", "input_unreadable", "no such file"),
        "empty": case("empty", d["empty"] / "empty.mp4", "input_unreadable", "empty"),
        "truncated": case("truncated", d["truncated"] / "cut.mp4", "input_unreadable", "truncated"),
        "random_bytes": case("random_bytes", d["random_bytes"] / "noise.mov", "input_unreadable",
                             "not a readable video"),
        # Fails where the decoder meets the damage, after the frames before it.
        "damaged": case("damaged", damaged_mp4(d["damaged"] / "damaged.mp4"), "input_unreadable", "at frame"),
        "no_frames_video": case("no_frames_video", header_only_mkv(d["no_frames_video"] / "none.mkv"),
                                "input_unreadable", "no frames"),
        "no_frames_folder": case("no_frames_folder", d["no_frames_folder"], "input_invalid", "no image files"),
        "one_by_one": case("one_by_one", d["one_by_one"] / "dot.png", "input_invalid", "1x1", "at least"),
        "too_large": case("too_large", d["too_large"] / "strip.png", "input_invalid", "17000x8", "max-res",
                          max_res=0),
        "mixed_sizes": case("mixed_sizes", d["mixed_sizes"] / "seq", "input_invalid", "plate.0004.png", "one size"),
        "duplicate_numbers": case("duplicate_numbers", d["duplicate_numbers"] / "seq", "input_invalid",
                                  "both have frame number 2"),
        "corrupt_frame": case("corrupt_frame", d["corrupt_frame"] / "seq", "input_unreadable", "plate.0005.png"),
        "under_a_file": case("under_a_file", good_clip, "output_not_writable", "not writable",
                             output=d["under_a_file"] / "a-file" / "out"),
        "output_is_a_file": case("output_is_a_file", good_clip, "output_not_writable", "not writable",
                                 output=d["output_is_a_file"] / "taken"),
        # The kernel's own read-only tree: refused even to root.
        "output_on_procfs": case("output_on_procfs", good_clip, "output_not_writable", "not writable",
                                 output=Path("/proc/normalcrafter-out")),
        "output_is_input": case("output_is_input", d["output_is_input"] / "seq", "output_conflict", "input sequence",
                                output=d["output_is_input"] / "seq"),
        "incomplete_model": case("incomplete_model", good_clip, "model_missing", "incomplete", "vae/",
                                 model=model_copy(tiny_model, d["incomplete_model"] / "m",
                                                  lambda m: shutil.rmtree(m / "vae"))),
        "truncated_weights": case("truncated_weights", good_clip, "model_invalid", "corrupt",
                                  model=model_copy(tiny_model, d["truncated_weights"] / "m", _truncate_weights)),
        "weights_with_holes": case("weights_with_holes", good_clip, "model_invalid", "vae weights are incomplete",
                                   model=model_copy(tiny_model, d["weights_with_holes"] / "m", _drop_a_weight)),
        "pickle_weights": case("pickle_weights", good_clip, "model_invalid", "pickle", "safetensors",
                               model=model_copy(tiny_model, d["pickle_weights"] / "m", _pickle_weights)),
        "bad_model_config": case("bad_model_config", good_clip, "model_invalid", "corrupt",
                                 model=model_copy(tiny_model, d["bad_model_config"] / "m", _bad_config)),
        "negative_frames": case("negative_frames", good_clip, "bad_request", "0 <= start", frames=[-3, 4]),
    }


def odd_cases(root: Path, tiny_model: Path) -> dict[str, Case]:
    """Inputs that are unusual but valid: each must give every frame, at the
    right numbers and size, and say what is unusual about it."""
    def case(name: str, inp: Path, frames: list[int], size: tuple[int, int], *words: str, **settings) -> Case:
        return Case(inp, root / name / "out", tiny_model, None, words, settings, frames, size)

    for name in ("one_frame", "odd_size", "large", "gray", "rgba", "deep", "float_tiff", "float_exr", "gray_video",
                 "deep_video", "vfr", "lying_avi", "gaps", "hostile_path", "output_in_input", "hash_folder"):
        (root / name).mkdir(parents=True)
    hostile = root / "hostile_path" / HOSTILE_DIR
    hostile.mkdir()
    to16 = lambda f: f.astype(np.uint16) * 257  # noqa: E731
    return {
        "one_frame": case("one_frame", write_video(root / "one_frame" / "one.mp4", moving_clip(1, H, W)), [0], (H, W)),
        "odd_size": case("odd_size", image_sequence(root / "odd_size" / "seq", [1, 2, 3], h=23, w=37),
                         [1, 2, 3], (23, 37)),
        "large": case("large", write_image(root / "large" / "wide.png", np.full((300, 2000, 3), 90, np.uint8)),
                      [0], (10, 64), "downscaled from 2000x300 to 64x10"),
        "gray": case("gray", image_sequence(root / "gray" / "seq", [1, 2], lambda f: f[:, :, 0]), [1, 2], (40, 56)),
        "rgba": case("rgba", image_sequence(root / "rgba" / "seq", [1, 2], lambda f: np.dstack([f, f[:, :, :1]])),
                     [1, 2], (40, 56)),
        "deep": case("deep", image_sequence(root / "deep" / "seq", [1, 2], to16), [1, 2], (40, 56)),
        "float_tiff": case("float_tiff", image_sequence(root / "float_tiff" / "seq", [1, 2],
                                                        lambda f: f.astype(np.float32) / 255, ext="tif"),
                           [1, 2], (40, 56)),
        "float_exr": case("float_exr", image_sequence(root / "float_exr" / "seq", [7, 8],
                                                      lambda f: (f.astype(np.float32) / 255) ** 2.2, ext="exr"),
                          [7, 8], (40, 56)),
        "gray_video": case("gray_video", lossless_video(root / "gray_video" / "g.mkv", "gray"), [0, 1, 2], (H, W)),
        "deep_video": case("deep_video", lossless_video(root / "deep_video" / "d.mkv", "rgb48le"), [0, 1, 2], (H, W)),
        "vfr": case("vfr", vfr_mp4(root / "vfr" / "vfr.mp4"), list(range(6)), (H, W), "variable frame rate"),
        "lying_avi": case("lying_avi", lying_avi(root / "lying_avi" / "lies.avi"), [0, 1, 2, 3], (H, W),
                          "states 500 frames but holds 4"),
        "gaps": case("gaps", image_sequence(root / "gaps" / "seq", [1, 2, 5, 6, 9]), [1, 2, 5, 6, 9], (40, 56),
                     "skips 4 frame number(s)", "first missing is 3"),
        # The output folder inside the sequence's folder: never read back as input.
        "output_in_input": Case(image_sequence(root / "output_in_input" / "seq", [1, 2]),
                                root / "output_in_input" / "seq" / "normals", tiny_model, None, (), {}, [1, 2],
                                (40, 56)),
        # A sequence folder named like a pattern is still the folder.
        "hash_folder": case("hash_folder", image_sequence(root / "hash_folder" / "take #3 %d", [1, 2]), [1, 2],
                            (40, 56)),
        "hostile_path": Case(write_video(hostile / "clip #2 $HOME.mp4", moving_clip(3, H, W)), hostile / "out $(id)",
                             tiny_model, None, (), {}, [0, 1, 2], (H, W)),
    }


# -- checks ----------------------------------------------------------------------

def assert_one_line(message: str, case: Case) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    for w in case.words:
        assert w in message, f"{w!r} not in {message!r}"


def assert_only_complete_outputs(folder: Path) -> list[int]:
    """Every file under a final name reads back whole; no temporary is left.
    Returns the frame numbers found."""
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir()]
    assert not [n for n in names if n.endswith(".part")], names
    frames = []
    for p in sorted(folder.glob("normal.*.exr")):
        n = read_exr_fully(p)
        assert np.isfinite(n).all() and np.abs(n).max() <= 1.0 + 1e-3, p
        frames.append(int(p.name.split(".")[1]))
    if (folder / "normalcrafter_job.json").exists():
        json.loads((folder / "normalcrafter_job.json").read_text())
    return frames


def read_exr_fully(path: Path) -> np.ndarray:
    """All pixels of every channel, as OpenEXR decodes them (a cut file raises)."""
    import OpenEXR

    with OpenEXR.File(str(path), separate_channels=True) as f:
        ch = f.channels()
        assert {"N.X", "N.Y", "N.Z", "R", "G", "B"} <= set(ch), sorted(ch)
        return np.stack([ch[f"N.{a}"].pixels.astype(np.float32) for a in "XYZ"], axis=-1)


def assert_odd_case_output(case: Case, warnings: list[str]) -> None:
    assert assert_only_complete_outputs(case.output) == case.frames
    first = read_exr_fully(case.output / f"normal.{case.frames[0]:05d}.exr")
    assert first.shape[:2] == case.size
    for w in case.words:
        assert any(w in m for m in warnings), (w, warnings)
    if not case.words:
        assert not [m for m in warnings if "unverified" not in m], warnings
