"""Make docs/relighting/before_after.jpg: before / normal pass / relit, two rows.

    python docs/relighting/make_figure.py      (about half a minute on 2 CPU cores)

Runs the project's own code end to end: the frame reader, the EXR writer,
the ground-truth scene renderer, the relight compositor setup (Blender 5.0
as the ``bpy`` module) and a headless render. No normal pass here comes
from NormalCrafter (the bundled model is not trained yet):

* top: a frame of the bundled sample clip with a SYNTHETIC normal pass, the
  frame's blurred luminance taken as a height field (an emboss);
* bottom: a scene rendered by Cycles with its ground-truth normal pass.
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


# Grazing lights: an emboss faces the camera almost everywhere and shows its
# relief best when lit from the side.
EMBOSS_LIGHTS = {
    "Tint By Plate": 1.0,
    "Light 1 Direction": (-0.9, 0.35, 0.25), "Light 1 Color": (1.0, 0.7, 0.4, 1.0),
    "Light 1 Intensity": 1.6, "Light 1 Wrap": 0.0,
    "Light 2 Direction": (0.9, -0.25, 0.2), "Light 2 Color": (0.35, 0.55, 1.0, 1.0),
    "Light 2 Intensity": 0.9, "Light 2 Wrap": 0.0,
    "Rim Color": (1.0, 0.9, 0.8, 1.0), "Rim Intensity": 0.25, "Rim Power": 3.0,
}
# A warm key from the left, a cool fill from the right, a thin rim; kept low
# (and nearly level) so the bright, upward-facing floor does not clip.
SCENE_LIGHTS = {
    "Tint By Plate": 1.0,
    "Light 1 Direction": (-0.95, 0.1, 0.3), "Light 1 Color": (1.0, 0.55, 0.25, 1.0),
    "Light 1 Intensity": 1.0, "Light 1 Wrap": 0.0,
    "Light 2 Direction": (0.95, -0.05, 0.3), "Light 2 Color": (0.25, 0.45, 1.0, 1.0),
    "Light 2 Intensity": 0.8, "Light 2 Wrap": 0.0,
    "Rim Color": (1.0, 1.0, 1.0, 1.0), "Rim Intensity": 0.5, "Rim Power": 4.0,
}


def relight_module():
    # The relight sub-package without the add-on's __init__ (it needs build-time files).
    package = types.ModuleType("normalcrafter_blender")
    package.__path__ = [str(REPO / "normalcrafter_blender")]
    sys.modules["normalcrafter_blender"] = package
    return importlib.import_module("normalcrafter_blender.relight")


def render(normals_dir: Path, plate: Path, frame: int, values: dict, out_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The plate through the relight setup at timeline ``frame``: with strength 0 (before) and 1."""
    import bpy

    scene = bpy.context.scene
    setup = relight_module().build_relight(scene, str(normals_dir), str(plate), lights=2, blend="ADD", rim=True)
    for name, value in values.items():
        setup.node.inputs[name].default_value = value
    settings = scene.render.image_settings
    settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    settings.color_mode = "RGB"
    settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    scene.frame_set(frame)
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


def shown(normals: np.ndarray) -> np.ndarray:
    return ((normals * 0.5 + 0.5).clip(0, 1) * 255).round().astype(np.uint8)


def main() -> None:
    from normalcrafter.evaluation.blender_gt import render_clip
    from normalcrafter.io.writers import exr_header, frame_path, read_exr_normals, write_exr

    rgb = read_frame(FRAME)
    normals = synthetic_normals(rgb)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        header = exr_header("opengl", "synthetic: luminance as height", {}, FRAME)
        write_exr(frame_path(tmp, FRAME, "exr"), normals, header)
        # The clip starts at timeline frame 1 (video frame 0).
        before, after = render(tmp, CLIP, FRAME + 1, EMBOSS_LIGHTS, tmp)
        top = [label(before, "before: Big Buck Bunny, frame 20"),
               label(shown(normals), "SYNTHETIC normal pass (an emboss)"),
               label(after, "after: relit (warm key, cool fill, rim)")]

        scene_clip = render_clip(tmp / "scene", "objects", width=rgb.shape[1], height=rgb.shape[0], frames=1,
                                 samples=16)
        truth, _ = read_exr_normals(scene_clip / "normal" / "normal.00000.exr")
        # A still plate starts at the scene's first frame.
        before, after = render(scene_clip / "normal", scene_clip / "rgb" / "rgb.00000.png", 1, SCENE_LIGHTS, tmp)
        bottom = [label(before, "before: Cycles render"),
                  label(shown(truth), "ground-truth normal pass (Cycles)"),
                  label(after, "after: relit (warm key, cool fill, rim)")]
    figure = np.concatenate([np.concatenate(top, axis=1), np.concatenate(bottom, axis=1)], axis=0)
    cv2.imwrite(str(OUT), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
