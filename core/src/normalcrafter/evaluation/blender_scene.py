"""Build a scene spec in Blender and render it with Cycles on the CPU.

Imports bpy: only the generator's own subprocess imports this module, so
bpy's global state never leaks into a caller.

Each frame is rendered twice: once for the data (Normal and Position passes,
one sample with a 0.01-pixel filter, so every value belongs to the surface
under the pixel centre, no edge mixing) and once for the RGB picture (a few
samples with the normal pixel filter, so edges are antialiased, then denoised).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

SPHERE_SEGMENTS = (128, 64)  # fine enough that interpolated normals stay well under a degree
DATA_FILTER_WIDTH = 0.01


@dataclass
class FrameData:
    normal_cam: np.ndarray  # (H, W, 3) float32, OpenGL camera space, zero where nothing was hit
    position: np.ndarray  # (H, W, 3) float64 world space
    valid: np.ndarray  # (H, W) bool


def build(spec: dict) -> bpy.types.Object:
    """Reset Blender and create the spec's scene; returns the camera object."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.sample_clamp_indirect = 1.0  # at a few samples, unclamped indirect light is mostly fireflies
    scene.cycles.seed = int(spec["seed"])
    scene.render.resolution_x = int(spec["width"])
    scene.render.resolution_y = int(spec["height"])
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"  # plain sRGB: textures keep their colours
    scene.render.dither_intensity = 0.0  # dithering noise would make the PNGs depend on more than the seed
    for name in dir(scene.render):  # no date, time or host name written into the files either
        if name.startswith("use_stamp_"):
            setattr(scene.render, name, False)
    layer = scene.view_layers[0]
    layer.use_pass_normal = True
    layer.use_pass_position = True

    world = bpy.data.worlds.new("world")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (*spec["world_color"], 1.0)
    scene.world = world

    for i, light in enumerate(spec["lights"]):
        data = bpy.data.lights.new(f"light{i}", light["type"])
        data.energy = light["energy"]
        if light["type"] == "POINT":
            data.shadow_soft_size = 0.0  # a true point: its direct light has no sampling noise
        obj = bpy.data.objects.new(f"light{i}", data)
        if "rotation_deg" in light:
            obj.rotation_euler = [math.radians(a) for a in light["rotation_deg"]]
        if "location" in light:
            obj.location = light["location"]
        scene.collection.objects.link(obj)

    for i, spec_obj in enumerate(spec["objects"]):
        _add_object(spec_obj, f"object{i}")

    cam_data = bpy.data.cameras.new("camera")
    cam_data.lens = spec["lens_mm"]
    cam_data.sensor_width = spec["sensor_mm"]
    cam_data.sensor_fit = "AUTO"
    cam_data.clip_start = 0.01
    cam_data.clip_end = 1000.0
    camera = bpy.data.objects.new("camera", cam_data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    return camera


def _add_object(spec_obj: dict, name: str) -> None:
    shape = spec_obj["shape"]
    loc = spec_obj["location"]
    size = spec_obj.get("size", 1.0)
    ops = bpy.ops.mesh
    if shape == "plane":
        ops.primitive_plane_add(size=spec_obj["size"], location=loc)
    elif shape == "sphere":
        ops.primitive_uv_sphere_add(segments=SPHERE_SEGMENTS[0], ring_count=SPHERE_SEGMENTS[1],
                                    radius=spec_obj.get("radius", size), location=loc)
    elif shape == "cube":
        ops.primitive_cube_add(size=2 * size, location=loc)
    elif shape == "box":
        ops.primitive_cube_add(size=1.0, location=loc)
        bpy.context.object.scale = spec_obj["dimensions"]
    elif shape == "cylinder":
        ops.primitive_cylinder_add(vertices=64, radius=0.7 * size, depth=2 * size, location=loc)
    elif shape == "torus":
        ops.primitive_torus_add(major_radius=0.7 * size, minor_radius=0.3 * size, major_segments=64,
                                minor_segments=24, location=loc, rotation=(math.pi / 2, 0, 0))
    elif shape == "monkey":
        ops.primitive_monkey_add(size=1.4 * size, location=loc)
    elif shape == "room":
        _add_room(spec_obj, name)
        return
    else:
        raise ValueError(f"unknown shape {shape!r}")
    obj = bpy.context.object
    obj.name = name
    rot = spec_obj.get("rotation_deg")
    if rot:
        obj.rotation_euler = [a + math.radians(r) for a, r in zip(obj.rotation_euler, rot)]
    mesh = obj.data
    if shape in ("sphere", "torus"):
        mesh.shade_smooth()
    elif shape in ("cylinder", "monkey"):
        mesh.shade_smooth()
        mesh.set_sharp_from_angle(angle=math.radians(45 if shape == "cylinder" else 60))
    else:
        mesh.shade_flat()
    mesh.materials.append(_material(spec_obj["material"], name))


def _add_room(spec_obj: dict, name: str) -> None:
    """Floor, ceiling and four walls as one mesh, faces wound to point inward."""
    width, depth, h = spec_obj["dimensions"]
    hw, hd = width / 2, depth / 2
    verts = [(-hw, -hd, 0), (hw, -hd, 0), (hw, hd, 0), (-hw, hd, 0),
             (-hw, -hd, h), (hw, -hd, h), (hw, hd, h), (-hw, hd, h)]
    faces = [(0, 1, 2, 3),  # floor, normal +Z
             (4, 7, 6, 5),  # ceiling, normal -Z
             (0, 4, 5, 1), (1, 5, 6, 2), (2, 6, 7, 3), (3, 7, 4, 0)]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    mesh.update()
    mesh.shade_flat()
    mesh.materials.append(_material(spec_obj["floor_material"], name + "_floor"))
    mesh.materials.append(_material(spec_obj["material"], name + "_walls"))
    for poly in mesh.polygons:
        poly.material_index = 0 if poly.index == 0 else 1
    obj = bpy.data.objects.new(name, mesh)
    obj.location = spec_obj["location"]
    bpy.context.scene.collection.objects.link(obj)


def _material(spec_mat: dict, name: str) -> bpy.types.Material:
    """Principled BSDF whose base colour is a procedural texture; geometry
    (hence the normal) is never perturbed, so the Normal pass stays exact."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Roughness"].default_value = spec_mat["roughness"]
    coords = nodes.new("ShaderNodeTexCoord")
    c1, c2 = (*spec_mat["color1"], 1.0), (*spec_mat["color2"], 1.0)
    kind = spec_mat["texture"]
    if kind == "checker":
        tex = nodes.new("ShaderNodeTexChecker")
        tex.inputs["Color1"].default_value = c1
        tex.inputs["Color2"].default_value = c2
        color = tex.outputs["Color"]
    else:
        tex = nodes.new({"noise": "ShaderNodeTexNoise", "wave": "ShaderNodeTexWave",
                         "voronoi": "ShaderNodeTexVoronoi"}[kind])
        ramp = nodes.new("ShaderNodeValToRGB")
        ramp.color_ramp.elements[0].color = c1
        ramp.color_ramp.elements[1].color = c2
        links.new(tex.outputs["Distance" if kind == "voronoi" else "Fac"], ramp.inputs["Fac"])
        color = ramp.outputs["Color"]
    tex.inputs["Scale"].default_value = spec_mat["scale"]
    links.new(coords.outputs["Object"], tex.inputs["Vector"])
    links.new(color, bsdf.inputs["Base Color"])
    return mat


def render_frames(spec: dict, camera: bpy.types.Object, samples: int, work: Path,
                  rgb_paths: list[Path]) -> Iterator[FrameData]:
    """Render every frame of the spec: the RGB picture straight to
    ``rgb_paths[f]`` (8-bit PNG) and the data passes, yielded per frame."""
    import OpenEXR

    scene = bpy.context.scene
    settings = scene.render.image_settings
    data_exr = work / "data.exr"
    for f, pose in enumerate(spec["camera_to_world"]):
        camera.matrix_world = Matrix(pose)

        scene.cycles.samples = 1
        scene.cycles.use_denoising = False
        scene.cycles.filter_width = DATA_FILTER_WIDTH
        scene.cycles.max_bounces = 0
        settings.media_type = "MULTI_LAYER_IMAGE"
        settings.file_format = "OPEN_EXR_MULTILAYER"
        settings.color_depth = "32"
        scene.render.filepath = str(data_exr)
        bpy.ops.render.render(write_still=True)
        with OpenEXR.File(str(data_exr), separate_channels=True) as exr:
            ch = {name: np.array(c.pixels) for part in exr.parts for name, c in part.channels.items()}
        layer = scene.view_layers[0].name
        normal_world = np.stack([ch[f"{layer}.Normal.{a}"] for a in "XYZ"], axis=-1).astype(np.float64)
        position = np.stack([ch[f"{layer}.Position.{a}"] for a in "XYZ"], axis=-1).astype(np.float64)

        scene.cycles.samples = samples
        scene.cycles.use_denoising = True  # OpenImageDenoise: clean frames from a few samples (deterministic on CPU)
        scene.cycles.filter_width = 1.5
        scene.cycles.max_bounces = 2
        settings.media_type = "IMAGE"
        settings.file_format = "PNG"
        settings.color_mode = "RGB"
        settings.color_depth = "8"
        scene.render.filepath = str(rgb_paths[f])
        bpy.ops.render.render(write_still=True)

        # World to camera: n_cam = R^T n_world, with R the camera's rotation
        # (the columns of its world matrix are its right, up and back axes).
        rot = np.asarray(pose, dtype=np.float64)[:3, :3]
        normal_cam = normal_world @ rot
        length = np.linalg.norm(normal_cam, axis=-1)
        valid = length > 0.5
        normal_cam[valid] /= length[valid, None]
        normal_cam[~valid] = 0.0
        yield FrameData(normal_cam.astype(np.float32), position, valid)
