"""Rebuilding the relight setup, the operators and their errors, in a real Blender (subprocess)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from test_relight_compositor import PYTHONS, main, make_video, random_normals, run_blender, write_normals, write_rgb

pytestmark = pytest.mark.blender


@pytest.mark.parametrize("python", PYTHONS)
def test_rebuild_updates_in_place_and_keeps_user_work(tmp_path, python):
    rng = np.random.default_rng(0)
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
        for i in range(2):
            write_normals(tmp_path / folder / f"normal.{i:05d}.exr", random_normals(rng))
    write_rgb(tmp_path / "plate.exr", rng.uniform(size=(6, 8, 3)))

    r = run_blender(python, "scenario_rebuild", {"root": str(tmp_path)}, tmp_path, script=__file__)

    first, second, third = r["first"], r["second"], r["third"]
    # One of each owned node, the same nodes (by name) after every rebuild.
    assert sorted(first["roles"]) == ["frame", "normals", "plate", "relight", "viewer"]  # the user's output is used
    assert second["nodes"] == third["nodes"] and set(first["nodes"]) <= set(second["nodes"])
    assert first["groups"] == second["groups"] == third["groups"] == 1
    # The user's nodes and links are all still there.
    assert set(r["user_nodes"]) <= set(third["nodes"])
    assert third["glare_from"] == "Light" and third["intensity_from"] == "Alpha"
    assert third["output_from"] == ["NC Relight", "Image"] and third["outputs"] == first["outputs"] == 1
    # Values and the light link survive; the new options apply.
    assert third["strength"] == pytest.approx(0.3)
    assert third["drivers"] == 3
    assert "Light 2 Wrap" in third["inputs"] and "Rim Power" not in third["inputs"]
    assert "Rim Power" in first["inputs"] and "Light 2 Wrap" not in first["inputs"]
    assert third["normals"].endswith("second/normal.00000.exr")
    assert third["blend"] == "SCREEN"


@pytest.mark.parametrize("python", PYTHONS)
def test_operators_and_errors(tmp_path, python):
    rng = np.random.default_rng(1)
    write_normals(tmp_path / "normal.00000.exr", random_normals(rng, (16, 16)))
    write_normals(tmp_path / "normal.00001.exr", random_normals(rng, (16, 16)))
    write_rgb(tmp_path / "rgb_only.exr", rng.uniform(size=(16, 16, 3)))
    make_video(tmp_path / "plate.mp4", 4)

    r = run_blender(python, "scenario_operators", {"root": str(tmp_path)}, tmp_path, script=__file__)

    assert r["build_from_strip"] == ["FINISHED"]
    assert r["clip_timing"] == [5, 2]  # the strip's start and animation offset
    assert r["normals_timing"] == [5 - 2 + 0, -1, 2]  # input frame 0 at timeline frame 3
    assert r["link"] == ["FINISHED"] and r["drivers"] == 3
    assert r["unlink"] == ["FINISHED"] and r["drivers_after_unlink"] == 0
    errors = r["errors"]
    assert "no normal.<frame>.exr files" in errors["empty folder"]
    assert "no such file or folder" in errors["missing normals"]
    assert "no N.X/N.Y/N.Z channels" in errors["rgb exr as normals"]
    assert "plate not found" in errors["missing plate"]
    assert "lights must be 1..4" in errors["five lights"]
    assert "has no camera" in errors["no camera"]
    assert "not light 3" in errors["light 3 of 1"]
    assert "choose the normal pass" in errors["operator without normals"]
    assert "no strip named" in errors["operator bad strip"]
    assert all("\n" not in message.strip() for message in errors.values())
    # A failed build leaves the existing setup as it was: nodes, normal pass, light link, values.
    assert r["nodes_after_errors"] == r["nodes_before_errors"]
    assert r["nodes_before_errors"][2] == 3
    assert r["movie_image_plate"] == "CompositorNodeMovieClip" and r["use_compositing"] is True


# ---------------------------------------------------------- Blender side

def _facts(bpy, relight, scene) -> dict:
    from normalcrafter_blender.relight import setup as setup_module

    found = relight.find_setup(scene)
    tree, node = found.tree, found.node
    output = next(n for n in tree.nodes if n.bl_idname in ("CompositorNodeComposite", "NodeGroupOutput"))
    glare = tree.nodes.get("My Glare")
    intensity = node.inputs.get("Light 1 Intensity")
    return {
        "nodes": sorted(n.name for n in tree.nodes),
        "roles": sorted(setup_module.owned_nodes(tree)),
        "groups": sum(1 for g in bpy.data.node_groups if g.get("normalcrafter_relight")),
        "outputs": sum(1 for n in tree.nodes if n.bl_idname in ("CompositorNodeComposite", "NodeGroupOutput")),
        "output_from": next(((k.from_node.name, k.from_socket.name) for k in tree.links if k.to_node == output),
                            None),
        "glare_from": glare.inputs[0].links[0].from_socket.name if glare and glare.inputs[0].is_linked else None,
        "intensity_from": intensity.links[0].from_socket.name if intensity.is_linked else None,
        "strength": node.inputs["Strength"].default_value,
        "drivers": len(tree.animation_data.drivers) if tree.animation_data else 0,
        "inputs": [s.name for s in node.inputs],
        "normals": setup_module.owned_nodes(tree)["normals"].image.filepath,
        "blend": found.blend,
    }


def _user_tree(bpy, scene):
    """A compositor the user already made: Render Layers into the output."""
    if bpy.app.version < (5, 0, 0):
        scene.use_nodes = True  # Blender adds Render Layers -> Composite
        return scene.node_tree
    tree = bpy.data.node_groups.new("My Compositor", "CompositorNodeTree")
    tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    layers = tree.nodes.new("CompositorNodeRLayers")
    output = tree.nodes.new("NodeGroupOutput")
    tree.links.new(layers.outputs["Image"], output.inputs[0])
    scene.compositing_node_group = tree
    return tree


def scenario_rebuild(config: dict) -> dict:
    from test_relight_compositor import _blender, _data_image

    bpy, relight = _blender()
    scene = bpy.context.scene
    root = Path(config["root"])
    tree = _user_tree(bpy, scene)
    plate = _data_image(bpy, str(root / "plate.exr"))
    setup = relight.build_relight(scene, str(root / "first"), plate, lights=1, rim=True)
    first = _facts(bpy, relight, scene)

    glare = tree.nodes.new("CompositorNodeGlare")
    glare.name = "My Glare"
    tree.links.new(setup.node.outputs["Light"], glare.inputs[0])
    layers = next(n for n in tree.nodes if n.bl_idname == "CompositorNodeRLayers")
    tree.links.new(layers.outputs["Alpha"], setup.node.inputs["Light 1 Intensity"])
    setup.node.inputs["Strength"].default_value = 0.3
    empty = bpy.data.objects.new("Key", None)
    scene.collection.objects.link(empty)
    relight.link_light(scene, 1, empty)
    user_nodes = [n.name for n in tree.nodes if "normalcrafter_relight" not in n]

    relight.build_relight(scene, str(root / "second" / "normal.00001.exr"), plate, lights=2, rim=False,
                          blend="SCREEN")
    second = _facts(bpy, relight, scene)
    relight.build_relight(scene, str(root / "second"), plate, lights=2, rim=False, blend="SCREEN")
    third = _facts(bpy, relight, scene)
    return {"first": first, "second": second, "third": third, "user_nodes": user_nodes,
            "version": list(bpy.app.version[:2])}


def scenario_operators(config: dict) -> dict:
    from test_relight_compositor import _blender, _error

    bpy, relight = _blender()
    for cls in relight.classes:
        bpy.utils.register_class(cls)
    scene = bpy.context.scene
    root = config["root"]
    editor = scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    strip = strips.new_movie("Shot", f"{root}/plate.mp4", 1, 5)
    strip.animation_offset_start = 2

    result = {"build_from_strip": sorted(bpy.ops.normalcrafter.relight_build(
        normals_path=f"{root}/normal.00000.exr", plate_source="STRIP", plate_strip="Shot", lights=1))}
    found = relight.find_setup(scene)
    from normalcrafter_blender.relight import setup as setup_module

    owned = setup_module.owned_nodes(found.tree)
    clip = owned["plate"].clip
    normals = owned["normals"]
    result["clip_timing"] = [clip.frame_start, clip.frame_offset]
    result["normals_timing"] = [normals.frame_start, normals.frame_offset, normals.frame_duration]

    empty = bpy.data.objects.new("Sun Stand-in", None)
    scene.collection.objects.link(empty)
    result["link"] = sorted(bpy.ops.normalcrafter.relight_link_light(light=1, object_name=empty.name))
    result["drivers"] = len(found.tree.animation_data.drivers)
    result["unlink"] = sorted(bpy.ops.normalcrafter.relight_unlink_light(light=1))
    result["drivers_after_unlink"] = len(found.tree.animation_data.drivers)

    relight.link_light(scene, 1, empty)
    found.node.inputs["Strength"].default_value = 0.7

    def fingerprint():
        owned_now = setup_module.owned_nodes(found.tree)
        return [sorted(n.name for n in found.tree.nodes), owned_now["normals"].image.filepath,
                len(found.tree.animation_data.drivers), found.node.inputs["Strength"].default_value,
                len(found.node.inputs)]

    result["nodes_before_errors"] = fingerprint()
    plate = f"{root}/plate.mp4"
    empty_folder = Path(root) / "empty"
    empty_folder.mkdir()
    errors = {
        "empty folder": lambda: relight.build_relight(scene, str(empty_folder), plate),
        "missing normals": lambda: relight.build_relight(scene, f"{root}/nope/normal.00000.exr", plate),
        "rgb exr as normals": lambda: relight.build_relight(scene, f"{root}/rgb_only.exr", plate),
        "missing plate": lambda: relight.build_relight(scene, root, f"{root}/missing.mp4"),
        "five lights": lambda: relight.build_relight(scene, root, plate, lights=5),
        "light 3 of 1": lambda: relight.link_light(scene, 3, empty),
        "operator without normals": lambda: bpy.ops.normalcrafter.relight_build(plate_source="FILE",
                                                                               plate_path=plate),
        "operator bad strip": lambda: bpy.ops.normalcrafter.relight_build(normals_path=root, plate_source="STRIP",
                                                                         plate_strip="Nope"),
    }
    result["errors"] = {name: _error(relight, call) for name, call in errors.items()}
    scene.camera = None
    result["errors"]["no camera"] = _error(relight, lambda: relight.link_light(scene, 1, empty))
    result["nodes_after_errors"] = fingerprint()
    scene.render.use_compositing = False
    movie_image = bpy.data.images.load(plate)  # a video opened as an image: used as a movie clip
    relight.build_relight(scene, root, movie_image)
    result["movie_image_plate"] = setup_module.owned_nodes(found.tree)["plate"].bl_idname
    result["use_compositing"] = scene.render.use_compositing
    for cls in reversed(relight.classes):  # bpy 4.2 crashes on exit with operators still registered
        bpy.utils.unregister_class(cls)
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main(globals())
