"""Scene recipes for the Blender ground-truth generator, as plain data.

A recipe turns (seed, size, length, motion) into a JSON-serialisable scene
spec: objects with materials, lights and one camera pose per frame. Keeping
this free of bpy makes the scene reproducible, testable and recorded next to
the renders (``scene.json``), where the analytic checks read it back.
"""
from __future__ import annotations

import numpy as np

from .camera import intrinsics, look_at

RECIPES = ("analytic", "objects", "room")
MOTIONS = ("static", "orbit", "dolly", "pan", "handheld")
DEFAULT_MOTION = {"analytic": "orbit", "objects": "orbit", "room": "pan"}
TEXTURES = ("checker", "noise", "wave", "voronoi")  # all 3-D, so vertical faces get patterns too
LENS_MM = 35.0
SENSOR_MM = 36.0


def make_spec(recipe: str, seed: int, width: int, height: int, frames: int, motion: str | None = None) -> dict:
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    motion = motion or DEFAULT_MOTION[recipe]
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}: choose one of {', '.join(MOTIONS)}")
    rng = np.random.default_rng(seed)
    scene = {"analytic": _analytic, "objects": _objects, "room": _room}[recipe](rng)
    eye, target = scene.pop("eye"), scene.pop("target")
    poses = _camera_path(rng, motion, eye, target, frames)
    return {
        "recipe": recipe,
        "motion": motion,
        "seed": seed,
        "width": width,
        "height": height,
        "frames": frames,
        "lens_mm": LENS_MM,
        "sensor_mm": SENSOR_MM,
        "intrinsics": intrinsics(width, height, LENS_MM, SENSOR_MM),
        "camera_to_world": [p.tolist() for p in poses],
        **scene,
    }


def _color(rng: np.random.Generator, lo: float = 0.15, hi: float = 0.9) -> list[float]:
    return [float(c) for c in rng.uniform(lo, hi, 3)]


def _material(rng: np.random.Generator, texture: str | None = None) -> dict:
    return {
        "texture": texture or str(rng.choice(TEXTURES)),
        "color1": _color(rng),
        "color2": _color(rng),
        "scale": float(rng.uniform(2.0, 8.0)),
        "roughness": float(rng.uniform(0.3, 0.9)),
    }


def _sun(rng: np.random.Generator) -> dict:
    return {"type": "SUN", "rotation_deg": [float(rng.uniform(20, 50)), 0.0, float(rng.uniform(0, 360))], "energy": 3.0}


def _analytic(rng: np.random.Generator) -> dict:
    """A sphere resting on a plane: both have closed-form normals."""
    radius = 1.0
    return {
        "world_color": [0.4, 0.45, 0.5],
        "lights": [_sun(rng)],
        "objects": [
            {"shape": "plane", "location": [0.0, 0.0, 0.0], "size": 60.0, "material": _material(rng, "checker"),
             "analytic": {"type": "plane", "point": [0.0, 0.0, 0.0], "normal": [0.0, 0.0, 1.0]}},
            {"shape": "sphere", "location": [0.0, 0.0, radius], "radius": radius, "material": _material(rng, "noise"),
             "analytic": {"type": "sphere", "center": [0.0, 0.0, radius], "radius": radius}},
        ],
        "eye": _spherical([0.0, 0.0, 0.8], 5.5, float(rng.uniform(0, 360)), 25.0),
        "target": [0.0, 0.0, 0.8],
    }


def _objects(rng: np.random.Generator) -> dict:
    shapes = ("sphere", "cube", "cylinder", "torus", "monkey")
    objects = [{"shape": "plane", "location": [0.0, 0.0, 0.0], "size": 60.0, "material": _material(rng)}]
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(4, 8))):
        size = float(rng.uniform(0.5, 1.0))
        for _try in range(50):  # rejection sampling keeps objects apart
            x, y = rng.uniform(-3.0, 3.0, 2)
            if all(np.hypot(x - px, y - py) > size + ps + 0.2 for px, py, ps in placed):
                break
        placed.append((float(x), float(y), size))
        shape = str(rng.choice(shapes))
        objects.append({
            "shape": shape,
            "location": [float(x), float(y), size],
            "size": size,
            "rotation_deg": [0.0, 0.0, float(rng.uniform(0, 360))],
            "material": _material(rng),
        })
    return {
        "world_color": _color(rng, 0.3, 0.6),
        "lights": [_sun(rng)],
        "objects": objects,
        "eye": _spherical([0.0, 0.0, 0.5], float(rng.uniform(8.0, 10.0)), float(rng.uniform(0, 360)),
                          float(rng.uniform(20, 35))),
        "target": [0.0, 0.0, 0.5],
    }


def _room(rng: np.random.Generator) -> dict:
    w, d, h = float(rng.uniform(6, 9)), float(rng.uniform(6, 9)), float(rng.uniform(2.8, 3.4))
    objects = [{"shape": "room", "location": [0.0, 0.0, 0.0], "dimensions": [w, d, h],
                "material": _material(rng, "noise"), "floor_material": _material(rng, "checker")}]
    for _ in range(int(rng.integers(3, 6))):
        dims = [float(v) for v in rng.uniform([0.5, 0.5, 0.4], [1.6, 1.2, 1.2])]
        x = float(rng.uniform(-w / 2 + 1.0, w / 2 - 1.0))
        y = float(rng.uniform(-d / 2 + 1.0, d / 2 - 1.0))
        shape = str(rng.choice(("box", "box", "sphere", "cylinder")))
        objects.append({
            "shape": shape,
            "location": [x, y, dims[2] / 2 if shape == "box" else min(dims) / 2],
            "dimensions": dims,
            "size": min(dims) / 2,
            "rotation_deg": [0.0, 0.0, float(rng.uniform(0, 90))],
            "material": _material(rng),
        })
    angle = float(rng.uniform(0, 2 * np.pi))
    eye = [0.3 * w * np.cos(angle), 0.3 * d * np.sin(angle), 1.6]
    return {
        "world_color": [0.05, 0.05, 0.05],
        "lights": [{"type": "POINT", "location": [0.0, 0.0, h - 0.4], "energy": 3.0 * w * d},
                   {"type": "POINT", "location": [-eye[0], -eye[1], h - 0.6], "energy": 1.0 * w * d}],
        "objects": objects,
        "eye": eye,
        "target": [-eye[0], -eye[1], 1.0],
    }


def _spherical(target: list[float], dist: float, azimuth_deg: float, elevation_deg: float) -> list[float]:
    a, e = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    return [target[0] + dist * np.cos(e) * np.cos(a), target[1] + dist * np.cos(e) * np.sin(a),
            target[2] + dist * np.sin(e)]


def _camera_path(rng: np.random.Generator, motion: str, eye: list[float], target: list[float],
                 frames: int) -> list[np.ndarray]:
    eye0, target0 = np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)
    s = np.linspace(-0.5, 0.5, frames) if frames > 1 else np.zeros(1)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    sweep = np.deg2rad(sign * rng.uniform(25, 45))
    # Smooth random jitter for the hand-held camera: a few slow sinusoids.
    freqs, phases = rng.uniform(0.5, 2.5, (3, 5)), rng.uniform(0, 2 * np.pi, (3, 5))
    poses = []
    for si in s:
        e, t, roll = eye0.copy(), target0.copy(), 0.0
        if motion == "orbit":
            e = target0 + _rot_z(sweep * si) @ (eye0 - target0)
        elif motion == "dolly":
            e = eye0 + (target0 - eye0) * 0.25 * (si + 0.5) + _rot_z(np.pi / 2) @ (target0 - eye0) * 0.1 * si
        elif motion == "pan":
            t = eye0 + _rot_z(sweep * 0.6 * si) @ (target0 - eye0)
        elif motion == "handheld":
            j = np.sin(2 * np.pi * freqs * (si + 0.5) + phases).mean(axis=0)
            scale = np.linalg.norm(target0 - eye0)
            e = eye0 + 0.02 * scale * j[:3]
            t = target0 + 0.03 * scale * np.array([j[3], -j[3], j[4]])
            roll = 1.5 * j[4]
        poses.append(look_at(e, t, roll))
    return poses


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
