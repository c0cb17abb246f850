"""Make docs/relighting/before_after.jpg: a frame of the bundled sample clip, relit.

    python docs/relighting/make_figure.py

Runs the project's own code end to end: the frame reader, the EXR writer,
the relight compositor setup (Blender 5.0 as the ``bpy`` module) and a
headless render. The normal pass is SYNTHETIC: the bundled model is not
trained yet, so the normals come from the frame's blurred luminance taken as
a height field (an emboss). It shows what the relight setup does with a
normal pass, not what NormalCrafter estimates.
"""
from __future__ import annotations

import importlib
import sys
import tempfile
import types
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
CLIP = REPO / "core/src/normalcrafter/data/sample/big_buck_bunny_40f.mp4"
OUT = Path(__file__).resolve().parent / "before_after.jpg"
FRAME = 20  # input frame number (0-based video frame)


def synthetic_normals(rgb: np.ndarray) -> np.ndarray:
    """Camera-space (OpenGL) normals of the height field h = blurred luminance."""
    luminance = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    height = cv2.GaussianBlur(luminance, (0, 0), 3.0) * 90.0
    d_col = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    d_row = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    # Image rows run down, camera +Y runs up.
    normals = np.stack([-d_col, d_row, np.ones_like(height)], axis=-1)
    return normals / np.linalg.norm(normals, axis=-1, keepdims=True)


def read_frame(number: int) -> np.ndarray:
    from normalcrafter.io.readers import open_source

    source = open_source(CLIP, frames=(number, number + 1), max_res=0)
    return next(iter(source))


def render(normals_dir: Path, out_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    import bpy

    # The relight sub-package without the add-on's __init__ (it needs build-time files).
    package = types.ModuleType("normalcrafter_blender")
    package.__path__ = [str(REPO / "normalcrafter_blender")]
    sys.modules["normalcrafter_blender"] = package
    relight = importlib.import_module("normalcrafter_blender.relight")

    scene = bpy.context.scene
    setup = relight.build_relight(scene, str(normals_dir), str(CLIP), lights=2, blend="ADD", rim=True)
    values = {
        "Tint By Plate": 1.0,
        # Grazing lights: a normal pass facing the camera almost everywhere
        # shows its relief best when lit from the side.
        "Light 1 Direction": (-0.9, 0.35, 0.25), "Light 1 Color": (1.0, 0.7, 0.4, 1.0),
        "Light 1 Intensity": 1.6, "Light 1 Wrap": 0.0,
        "Light 2 Direction": (0.9, -0.25, 0.2), "Light 2 Color": (0.35, 0.55, 1.0, 1.0),
        "Light 2 Intensity": 0.9, "Light 2 Wrap": 0.0,
        "Rim Color": (1.0, 0.9, 0.8, 1.0), "Rim Intensity": 0.25, "Rim Power": 3.0,
    }
    for name, value in values.items():
        setup.node.inputs[name].default_value = value
    settings = scene.render.image_settings
    settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    settings.color_mode = "RGB"
    settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    # The clip starts at timeline frame 1 (video frame 0).
    scene.frame_set(FRAME + 1)
    images = []
    for name, strength in (("before", 0.0), ("after", 1.0)):
        setup.node.inputs["Strength"].default_value = strength
        scene.render.filepath = str(out_dir / f"{name}.png")
        bpy.ops.render.render(write_still=True)
        images.append(cv2.cvtColor(cv2.imread(str(out_dir / f"{name}.png")), cv2.COLOR_BGR2RGB))
    return images[0], images[1]


def label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 26), (0, 0, 0), -1)
    cv2.putText(out, text, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main() -> None:
    from normalcrafter.io.writers import exr_header, frame_path, write_exr

    rgb = read_frame(FRAME)
    normals = synthetic_normals(rgb)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        header = exr_header("opengl", "synthetic: luminance as height", {}, FRAME)
        write_exr(frame_path(tmp, FRAME, "exr"), normals, header)
        before, after = render(tmp, tmp)
    shown_normals = ((normals * 0.5 + 0.5) * 255).round().astype(np.uint8)
    figure = np.concatenate([label(before, "before: plate (Big Buck Bunny, frame 20)"),
                             label(shown_normals, "synthetic normal pass (not the model's)"),
                             label(after, "after: relit (warm key, cool fill, rim)")], axis=1)
    cv2.imwrite(str(OUT), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
