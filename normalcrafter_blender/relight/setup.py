"""Build or update the relight setup in a scene's compositor.

Every node the setup owns carries a custom property ``normalcrafter_relight``
naming its role, and sits in one frame. A rebuild finds them by role and
updates them in place: values typed into the relight node, links the user
drew to or from it and light-object links survive; nodes without the tag are
never removed (the output node is only re-linked).
"""
from __future__ import annotations

from dataclasses import dataclass

import bpy

from . import camera as cam
from . import compat, group, sources
from .errors import RelightError

TAG = "normalcrafter_relight"
FRAME_LABEL = "NormalCrafter Relight"
GROUP_NAME = "NC Relight"

# Roles of owned nodes in the scene's compositor tree.
FRAME, PLATE, NORMALS, NORMALS_SCALE, RELIGHT, VIEWER, OUTPUT = (
    "frame", "plate", "normals", "normals_scale", "relight", "viewer", "output")


@dataclass(frozen=True)
class RelightSetup:
    tree: bpy.types.NodeTree
    node: bpy.types.Node  # the relight group node: its inputs are the controls
    lights: int
    rim: bool
    blend: str


def _node_name(role: str) -> str:
    return f"NC {role.replace('_', ' ').title()}"


def owned_nodes(tree: bpy.types.NodeTree) -> dict[str, bpy.types.Node]:
    """The setup's nodes by role. A node the user duplicated carries the tag
    too; the one with the setup's own name wins."""
    owned: dict[str, bpy.types.Node] = {}
    for node in tree.nodes:
        role = node.get(TAG)
        if isinstance(role, str) and (role not in owned or node.name == _node_name(role)):
            owned[role] = node
    return owned


def find_setup(scene: bpy.types.Scene) -> RelightSetup | None:
    """The scene's relight setup, if it has one."""
    tree = compat.compositor_tree(scene, create=False)
    if tree is None:
        return None
    node = owned_nodes(tree).get(RELIGHT)
    if node is None or node.node_tree is None:
        return None
    settings = node.node_tree
    return RelightSetup(tree, node, int(settings.get("nc_lights", 1)), bool(settings.get("nc_rim", True)),
                        str(settings.get("nc_blend", "ADD")))


def build_relight(scene: bpy.types.Scene, normals: str, plate: bpy.types.MovieClip | bpy.types.Image | str, *,
                  lights: int = 1, blend: str = "ADD", rim: bool = True, frame_shift: int | None = None,
                  match_resolution: bool = True) -> RelightSetup:
    """Create or update the relight setup.

    ``normals``: one EXR of the normal pass, or its folder. ``plate``: a movie
    clip, an image, or a file path (a video loads as a movie clip).
    ``frame_shift``: timeline frame T shows input frame ``T - frame_shift``;
    a movie clip plate always sets it from its own timing, an image plate
    defaults to starting at the scene's first frame.
    """
    if not 1 <= lights <= group.MAX_LIGHTS:
        raise RelightError(f"lights must be 1..{group.MAX_LIGHTS}, got {lights}")
    if blend not in group.BLENDS:
        raise RelightError(f"blend must be one of {', '.join(group.BLENDS)}, got {blend!r}")
    normals_image, normal_files = sources.load_normals(normals)
    if isinstance(plate, str):
        plate = sources.load_plate(plate)
    elif isinstance(plate, bpy.types.Image) and plate.source == "MOVIE":
        plate = sources.load_plate(plate.filepath)  # a movie clip has the timing the normal pass follows
    width, height = sources.plate_size(plate)
    if isinstance(plate, bpy.types.MovieClip):
        shift = sources.clip_shift(plate)
    else:
        plate_files = sources.find_sequence(plate.filepath) if plate.source == "SEQUENCE" else None
        default_shift = scene.frame_start - (plate_files.first if plate_files else 0)
        shift = frame_shift if frame_shift is not None else default_shift

    tree = compat.compositor_tree(scene, create=True)
    owned = owned_nodes(tree)
    relight = owned.get(RELIGHT)
    kept = _Snapshot.take(tree, relight) if relight is not None else None

    frame = _ensure(tree, owned, FRAME, "NodeFrame")
    frame.label = FRAME_LABEL

    plate_idname = "CompositorNodeMovieClip" if isinstance(plate, bpy.types.MovieClip) else "CompositorNodeImage"
    plate_node = _ensure(tree, owned, PLATE, plate_idname)
    if plate_idname == "CompositorNodeMovieClip":
        plate_node.clip = plate
    else:
        plate_node.image = plate
        if plate_files is not None:
            sources.set_sequence_timing(plate_node, plate_files, shift)
    plate_node.label = "Plate"

    normals_node = _ensure(tree, owned, NORMALS, "CompositorNodeImage")
    normals_node.image = normals_image
    normals_node.label = "Normal Pass"
    sources.set_sequence_timing(normals_node, normal_files, shift)
    normals_out = normals_node.outputs["N"]
    if tuple(normals_image.size[:]) != (width, height):
        scale = _ensure(tree, owned, NORMALS_SCALE, "CompositorNodeScale",
                        lambda: compat.new_scale_to(tree.nodes, width, height))
        scale.inputs["X"].default_value = width
        scale.inputs["Y"].default_value = height
        tree.links.new(normals_out, scale.inputs[0])
        normals_out = scale.outputs[0]
    elif NORMALS_SCALE in owned:
        tree.nodes.remove(owned.pop(NORMALS_SCALE))

    relight = _ensure(tree, owned, RELIGHT, "CompositorNodeGroup")
    if relight.node_tree is None or relight.node_tree.get(group.GROUP_TAG) is None:
        relight.node_tree = bpy.data.node_groups.new(GROUP_NAME, "CompositorNodeTree")
    settings = relight.node_tree
    group.build_group(settings, lights, rim, blend)
    settings["nc_lights"], settings["nc_rim"], settings["nc_blend"] = lights, rim, blend
    relight.label = "Relight"
    relight.width = 240

    tree.links.new(plate_node.outputs["Image"], relight.inputs[group.IMAGE])
    tree.links.new(normals_out, relight.inputs[group.NORMAL])
    output = compat.find_output(tree) or _ensure(tree, owned, OUTPUT, None, lambda: compat.new_output(tree))
    tree.links.new(relight.outputs[group.IMAGE], compat.output_input(tree, output))
    viewer = _ensure(tree, owned, VIEWER, "CompositorNodeViewer")
    tree.links.new(relight.outputs[group.IMAGE], viewer.inputs[0])

    if kept is not None:
        kept.restore(tree, relight, lights)
    _layout(frame, plate_node, normals_node, owned.get(NORMALS_SCALE), relight, viewer)
    scene.render.use_compositing = True
    if match_resolution:
        scene.render.resolution_x, scene.render.resolution_y = width, height
        scene.render.resolution_percentage = 100
    return RelightSetup(tree, relight, lights, rim, blend)


def link_light(scene: bpy.types.Scene, k: int, obj: bpy.types.Object, live: bool = True) -> None:
    """Aim light ``k`` from ``obj`` (its -Z is the light's travel direction) seen from the scene camera.

    ``live``: drivers follow the object and the camera every frame;
    otherwise the direction is set once from the current frame.
    """
    setup = _require_setup(scene, k)
    camera = cam.scene_camera(scene)
    socket_name = group.light_direction(k)
    if obj == camera:
        raise RelightError("aim a light from an Empty or a light object, not the camera itself")
    if live:
        cam.link_direction(setup.node, socket_name, k, obj, camera)
    else:
        cam.unlink_direction(setup.node, socket_name, k)
        setup.node.inputs[socket_name].default_value = cam.direction_in_camera(obj, camera)


def unlink_light(scene: bpy.types.Scene, k: int) -> None:
    setup = _require_setup(scene, k)
    cam.unlink_direction(setup.node, group.light_direction(k), k)


def _require_setup(scene: bpy.types.Scene, k: int) -> RelightSetup:
    setup = find_setup(scene)
    if setup is None:
        raise RelightError("build the relight setup first")
    if not 1 <= k <= setup.lights:
        raise RelightError(f"the setup has {setup.lights} light(s), not light {k}")
    return setup


def _ensure(tree, owned, role, idname, factory=None) -> bpy.types.Node:
    """The owned node of ``role``, replaced when it has the wrong type."""
    node = owned.get(role)
    if node is not None and (idname is None or node.bl_idname == idname):
        return node
    if node is not None:
        tree.nodes.remove(node)
    node = factory() if factory else tree.nodes.new(idname)
    node[TAG] = role
    node.name = _node_name(role)
    owned[role] = node
    return node


@dataclass
class _Snapshot:
    """What the user set on the relight node, kept across a rebuild by socket name."""

    values: dict
    inbound: list  # (from node name, from socket identifier, to socket name)
    outbound: list  # (from socket name, to node name, to socket identifier)
    light_objects: dict
    camera: str | None

    @classmethod
    def take(cls, tree: bpy.types.NodeTree, node: bpy.types.Node) -> _Snapshot:
        owned = {n.name for n in tree.nodes if isinstance(n.get(TAG), str)}
        values = {s.name: _copy(s.default_value) for s in node.inputs
                  if hasattr(s, "default_value") and not s.is_linked}
        output = compat.find_output(tree)
        inbound = [(link.from_node.name, link.from_socket.identifier, link.to_socket.name)
                   for link in tree.links if link.to_node == node and link.from_node.name not in owned]
        outbound = [(link.from_socket.name, link.to_node.name, link.to_socket.identifier)
                    for link in tree.links if link.from_node == node and link.to_node.name not in owned
                    and link.to_node != output]
        light_objects = {k: cam.linked_object(node, k) for k in range(1, group.MAX_LIGHTS + 1)}
        snapshot = cls(values, inbound, outbound, {k: o.name for k, o in light_objects.items() if o},
                       node.get("nc_camera"))
        # Drivers address sockets by index; the rebuild renumbers them.
        for k in range(1, group.MAX_LIGHTS + 1):
            cam.unlink_direction(node, group.light_direction(k), k)
        return snapshot

    def restore(self, tree: bpy.types.NodeTree, node: bpy.types.Node, lights: int) -> None:
        for socket in node.inputs:
            if socket.name in self.values and not socket.is_linked:
                try:
                    socket.default_value = self.values[socket.name]
                except (TypeError, ValueError):
                    pass  # the socket changed type; its new default stands
        for from_name, from_id, to_name in self.inbound:
            source = tree.nodes.get(from_name)
            socket = next((s for s in source.outputs if s.identifier == from_id), None) if source else None
            if socket is not None and to_name in node.inputs:
                tree.links.new(socket, node.inputs[to_name])
        for from_name, to_name, to_id in self.outbound:
            target = tree.nodes.get(to_name)
            socket = next((s for s in target.inputs if s.identifier == to_id), None) if target else None
            if socket is not None and from_name in node.outputs:
                tree.links.new(node.outputs[from_name], socket)
        camera = bpy.data.objects.get(self.camera) if self.camera else None
        for k, name in self.light_objects.items():
            obj = bpy.data.objects.get(name)
            if k <= lights and obj is not None and camera is not None:
                cam.link_direction(node, group.light_direction(k), k, obj, camera)


def _copy(value):
    return value if isinstance(value, (int, float, bool, str)) else tuple(value)


def _layout(frame, plate, normals, scale, relight, viewer) -> None:
    """Place owned nodes left to right inside the frame, left of the output."""
    placed = [(plate, (-900, 300)), (normals, (-900, -50)), (relight, (-450, 150)), (viewer, (-150, -150))]
    if scale is not None:
        placed.append((scale, (-650, -100)))
    for node, location in placed:
        node.parent = frame
        node.location = location
