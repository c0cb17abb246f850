"""Readers and writers on real files."""
import numpy as np
import OpenEXR
import pytest

from media import moving_clip, write_sequence, write_video
from normalcrafter.errors import NormalCrafterError
from normalcrafter.io.readers import open_source, parse_range
from normalcrafter.io.writers import NpyWriter, read_exr_normals, write_exr, write_png16


def test_video_reader_counts_selects_and_downscales(tmp_path):
    frames = moving_clip(20, 48, 80)
    path = write_video(tmp_path / "clip.mp4", frames)
    src = open_source(path, (5, 12), max_res=40)
    assert src.kind == "video" and src.numbers == list(range(5, 12)) and src.fps == 24
    assert src.source_size == (48, 80) and src.size == (24, 40) and src.downscaled
    out = list(src)
    assert len(out) == 7 and out[0].shape == (24, 40, 3) and out[0].dtype == np.uint8
    full = list(open_source(path))
    assert len(full) == 20
    # lossy codec: frame 5 of the selection is the 6th frame of the clip
    assert np.abs(full[5].astype(int) - frames[5].astype(int)).mean() < 12


@pytest.mark.parametrize("pattern", ["seq", "plate.%04d.png", "plate.####.png"])
def test_sequence_by_folder_printf_and_hash(tmp_path, pattern):
    frames = moving_clip(6)
    write_sequence(tmp_path / "seq", frames, first=101)
    src = open_source(tmp_path / "seq" if pattern == "seq" else tmp_path / "seq" / pattern)
    assert src.numbers == list(range(101, 107))
    assert all(np.array_equal(a, b) for a, b in zip(src, frames))


def test_sequence_with_gaps_keeps_numbers(tmp_path):
    import cv2

    frames = moving_clip(3)
    for n, f in zip((1, 2, 7), frames):
        cv2.imwrite(str(tmp_path / f"f_{n:03d}.png"), f)
    assert open_source(tmp_path).numbers == [1, 2, 7]


def test_pixel_formats_become_rgb8(tmp_path):
    import cv2

    gray = np.full((20, 30), 100, np.uint8)
    rgba = np.dstack([np.full((20, 30, 3), 50, np.uint8), np.zeros((20, 30), np.uint8)])
    deep = np.full((20, 30, 3), 65535, np.uint16)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    cv2.imwrite(str(tmp_path / "d.tif"), deep)
    hdr = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    ch = {c: np.full((20, 30), 0.214, np.float32) for c in "RGB"}  # linear 0.214 ~ sRGB 0.5
    with OpenEXR.File(hdr, ch) as f:
        f.write(str(tmp_path / "e.exr"))
    assert list(open_source(tmp_path / "g.png"))[0][0, 0].tolist() == [100, 100, 100]
    assert list(open_source(tmp_path / "a.png"))[0][0, 0].tolist() == [50, 50, 50]
    assert list(open_source(tmp_path / "d.tif"))[0][0, 0].tolist() == [255, 255, 255]
    assert abs(int(list(open_source(tmp_path / "e.exr"))[0][0, 0, 0]) - 128) <= 2


def test_exr_channels_type_compression_header(tmp_path):
    n = np.random.default_rng(0).uniform(-1, 1, (10, 12, 3)).astype(np.float32)
    path = write_exr(tmp_path / "normal.00003.exr", n, {"normalcrafter_convention": "RUB"}, world=-n)
    with OpenEXR.File(str(path), separate_channels=True) as f:
        ch = f.channels()
        assert {"N.X", "N.Y", "N.Z", "Nworld.X", "Nworld.Y", "Nworld.Z"} <= set(ch)
        assert np.array_equal(ch["R"].pixels, ch["N.X"].pixels)  # RGB copy for viewers and the sequencer
        assert all(c.pixels.dtype == np.float16 for c in ch.values())
        assert f.header()["compression"] == OpenEXR.ZIP_COMPRESSION
        assert f.header()["normalcrafter_convention"] == "RUB"
    back, _ = read_exr_normals(path)
    assert np.abs(back - n).max() < 1e-3
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_exr_compresses_on_threads_into_the_same_file(tmp_path):
    """write_exr turns on OpenEXR's threads, and a file written on several
    threads is byte for byte the one written on one."""
    n = np.random.default_rng(1).uniform(-1, 1, (100, 64, 3)).astype(np.float32)
    before = OpenEXR.global_thread_count()
    try:
        OpenEXR.set_global_thread_count(0)
        write_exr(tmp_path / "a.exr", n, {})
        assert OpenEXR.global_thread_count() >= 1
        OpenEXR.set_global_thread_count(1)
        one = write_exr(tmp_path / "one.exr", n, {}).read_bytes()
        OpenEXR.set_global_thread_count(3)
        assert write_exr(tmp_path / "three.exr", n, {}).read_bytes() == one
    finally:
        OpenEXR.set_global_thread_count(before)


def test_png16_and_npy(tmp_path):
    import cv2

    n = np.array([[[-1.0, 0.0, 1.0]]], np.float32)
    write_png16(tmp_path / "p.png", n)
    img = cv2.imread(str(tmp_path / "p.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img[0, 0, ::-1].tolist() == [0, 32768, 65535]
    w = NpyWriter(tmp_path / "normals.npy", 2, 1, 1)
    assert not (tmp_path / "normals.npy").exists()  # only a hidden temporary until finished
    w.put(0, n)
    w.put(1, -n)
    w.finish()
    arr = np.load(tmp_path / "normals.npy")
    assert arr.shape == (2, 1, 1, 3) and arr[1, 0, 0].tolist() == [1.0, 0.0, -1.0]


def test_parse_range():
    assert parse_range("3:9") == (3, 9) and parse_range("4:") == (4, None) and parse_range(":5") == (0, 5)
    for bad in ("9:3", "a:b", "5"):
        with pytest.raises(NormalCrafterError):
            parse_range(bad)


def _file(name, data):
    def make(folder):
        (folder / name).write_bytes(data)
        return folder / name

    return make


def _empty_folder(folder):
    (folder / "e").mkdir()
    return folder / "e"


@pytest.mark.parametrize("make,code", [
    (lambda d: d / "missing.mp4", "input_unreadable"),
    (_file("empty.mp4", b""), "input_unreadable"),
    (_file("junk.mp4", b"\x00garbage" * 100), "input_unreadable"),
    (_empty_folder, "input_invalid"),
    (_file("bad.png", b"not a png"), "input_unreadable"),
])
def test_bad_inputs_raise_coded_errors(tmp_path, make, code):
    with pytest.raises(NormalCrafterError) as info:
        open_source(make(tmp_path))
    assert info.value.code == code and "\n" not in info.value.message


def test_tiny_and_truncated_inputs(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "one.png"), np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(NormalCrafterError, match="1x1"):
        open_source(tmp_path / "one.png")
    data = write_video(tmp_path / "c.mp4", moving_clip(30)).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(NormalCrafterError) as info:
        list(open_source(tmp_path / "cut.mp4"))
    assert info.value.code == "input_unreadable"
