"""Camera-space directions from scene objects, and per-frame camera rotations.

Blender camera space is OpenGL-style (+X right, +Y up, +Z toward the viewer),
the space NormalCrafter's normals are in. A light (or an Empty standing in
for one) shines along its local -Z axis, so the direction *toward* it is its
+Z axis; in camera space that is ``R_cam^T @ z_obj``.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping

import bpy
from mathutils import Vector

from .errors import RelightError

_LINK_KEY = "nc_light_{}_object"


def direction_in_camera(obj: bpy.types.Object, camera: bpy.types.Object) -> Vector:
    """Unit camera-space direction toward ``obj`` as a directional light, at the current frame."""
    toward_light = obj.matrix_world.to_3x3().normalized() @ Vector((0.0, 0.0, 1.0))
    return (camera.matrix_world.to_3x3().normalized().transposed() @ toward_light).normalized()


def link_direction(node: bpy.types.Node, socket_name: str, key: int, obj: bpy.types.Object,
                   camera: bpy.types.Object) -> None:
    """Drive a direction input from ``obj``'s rotation relative to ``camera``, every frame.

    The drivers are simple expressions (no Python), so they run even with
    auto-run scripts off.
    """
    socket = node.inputs[socket_name]
    socket.driver_remove("default_value")
    for i in range(3):
        driver = socket.driver_add("default_value", i).driver
        driver.type = "SCRIPTED"
        # RNA paths index matrix_world as [column][row]: the camera's column i
        # is its axis i in world space; the object's column 2 is its +Z axis.
        terms = []
        for j in range(3):
            _variable(driver, f"c{j}", camera, f"matrix_world[{i}][{j}]")
            _variable(driver, f"o{j}", obj, f"matrix_world[2][{j}]")
            terms.append(f"c{j}*o{j}")
        driver.expression = " + ".join(terms)
    node[_LINK_KEY.format(key)] = obj.name
    node["nc_camera"] = camera.name


def unlink_direction(node: bpy.types.Node, socket_name: str, key: int) -> None:
    """Stop driving a direction input; it keeps its current value."""
    if socket_name in node.inputs:
        node.inputs[socket_name].driver_remove("default_value")
    node.pop(_LINK_KEY.format(key), None)


def linked_object(node: bpy.types.Node, key: int) -> bpy.types.Object | None:
    name = node.get(_LINK_KEY.format(key))
    return bpy.data.objects.get(name) if name else None


def linked_camera(node: bpy.types.Node) -> bpy.types.Object | None:
    name = node.get("nc_camera")
    return bpy.data.objects.get(name) if name else None


def _variable(driver: bpy.types.Driver, name: str, obj: bpy.types.Object, path: str) -> None:
    variable = driver.variables.new()
    variable.name = name
    variable.type = "SINGLE_PROP"
    variable.targets[0].id_type = "OBJECT"
    variable.targets[0].id = obj
    variable.targets[0].data_path = path


def scene_camera(scene: bpy.types.Scene) -> bpy.types.Object:
    if scene.camera is None:
        raise RelightError(f"scene '{scene.name}' has no camera")
    return scene.camera


def camera_rotations(scene: bpy.types.Scene, frame_map: Mapping[int, int],
                     camera: bpy.types.Object | None = None) -> dict[int, list[list[float]]]:
    """Camera-to-world rotations per input frame, evaluated at each mapped timeline frame.

    ``frame_map`` maps timeline frames to input frame numbers. The scene is
    evaluated frame by frame, so constraints (a Camera Solver) and parents count.
    """
    camera = camera or scene_camera(scene)
    if camera.type != "CAMERA":
        raise RelightError(f"'{camera.name}' is not a camera")
    original = (scene.frame_current, scene.frame_subframe)
    rotations = {}
    try:
        for timeline_frame, input_frame in sorted(frame_map.items()):
            scene.frame_set(timeline_frame)
            evaluated = camera.evaluated_get(bpy.context.evaluated_depsgraph_get())
            matrix = evaluated.matrix_world.to_3x3().normalized()
            rotations[int(input_frame)] = [list(row) for row in matrix]
    finally:
        scene.frame_set(original[0], subframe=original[1])
    return rotations


def export_camera_rotations(scene: bpy.types.Scene, path: str, frame_map: Mapping[int, int],
                            camera: bpy.types.Object | None = None) -> str:
    """Write the JSON that ``normalcrafter.world_space.load_camera_rotations`` reads; returns its path.

    The file appears complete or not at all (written under a temporary name, then renamed).
    """
    if not frame_map:
        raise RelightError("no frames to export camera rotations for")
    camera = camera or scene_camera(scene)
    payload = {
        "convention": "opengl",
        "camera": camera.name,
        "frames": {str(k): v for k, v in camera_rotations(scene, frame_map, camera).items()},
    }
    path = bpy.path.abspath(path)
    folder = os.path.dirname(path) or "."
    temporary = None
    try:
        os.makedirs(folder, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".camera_rotations.", suffix=".tmp", dir=folder)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(payload, stream, indent=1)
        os.replace(temporary, path)
    except OSError as exc:
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)
        raise RelightError(f"cannot write camera rotations to {path}: {exc.strerror or exc}") from None
    return path


def strip_frame_map(strip: bpy.types.Strip) -> dict[int, int]:
    """Timeline frame -> input frame number for the frames a movie or image strip shows.

    Frames where a handle is dragged past the content (Blender holds the
    first or last frame there) are left out, as the estimation leaves them out.
    """
    start = int(round(strip.frame_start))
    offset = int(strip.animation_offset_start)
    # Blender shows source frame T - frame_start + animation_offset_start at timeline frame T.
    frames = {t: t - start + offset for t in range(int(strip.frame_final_start), int(strip.frame_final_end))}
    if strip.type == "MOVIE":
        return {t: i for t, i in frames.items() if offset <= i < offset + strip.frame_duration}
    if strip.type == "IMAGE":
        names = [element.filename for element in strip.elements]
        mapping = {}
        for t, i in frames.items():
            if 0 <= i < len(names):
                match = re.search(r"(\d+)\D*$", names[i])
                mapping[t] = int(match.group(1)) if match else i
        return mapping
    raise RelightError(f"strip '{strip.name}' is a {strip.type.lower()} strip, not a movie or image sequence")


def clip_frame_map(clip: bpy.types.MovieClip) -> dict[int, int]:
    """Timeline frame -> video frame (0-based) for the frames a movie clip shows."""
    shift = clip.frame_start - clip.frame_offset
    return {i + shift: i for i in range(max(clip.frame_offset, 0), clip.frame_duration)}
