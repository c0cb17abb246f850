"""The two compositor APIs behind one small interface.

Blender 4.2/4.4: ``scene.use_nodes`` + ``scene.node_tree``, compositor-only
math nodes (``CompositorNodeMath``, ``CompositorNodeMixRGB``), a Composite
node as the output. Blender 5.0: ``scene.compositing_node_group`` is a node
group whose Group Output is the result, and the compositor uses the shader
math nodes (``ShaderNodeMath``, ``ShaderNodeMix``).
"""
from __future__ import annotations

import bpy

LEGACY = bpy.app.version < (5, 0, 0)

MATH = "CompositorNodeMath" if LEGACY else "ShaderNodeMath"
SEPARATE_XYZ = "CompositorNodeSeparateXYZ" if LEGACY else "ShaderNodeSeparateXYZ"


def new_mix(nodes: bpy.types.Nodes, blend: str) -> tuple[bpy.types.Node, bpy.types.NodeSocket,
                                                          bpy.types.NodeSocket, bpy.types.NodeSocket,
                                                          bpy.types.NodeSocket]:
    """A colour mix node: (node, factor, A, B, result) for ``blend`` (MIX, ADD, MULTIPLY, SCREEN...)."""
    if LEGACY:
        node = nodes.new("CompositorNodeMixRGB")
        node.blend_type = blend
        node.use_clamp = False
        return node, node.inputs[0], node.inputs[1], node.inputs[2], node.outputs[0]
    node = nodes.new("ShaderNodeMix")
    node.data_type = "RGBA"
    node.blend_type = blend
    node.clamp_factor = False
    node.clamp_result = False
    # The Mix node's sockets share names across data types; identifiers are unique.
    by_id = {s.identifier: s for s in (*node.inputs, *node.outputs)}
    return node, by_id["Factor_Float"], by_id["A_Color"], by_id["B_Color"], by_id["Result_Color"]


def new_scale_to(nodes: bpy.types.Nodes, width: int, height: int) -> bpy.types.Node:
    """A Scale node that stretches its input to ``width`` x ``height`` pixels."""
    node = nodes.new("CompositorNodeScale")
    if LEGACY:
        node.space = "ABSOLUTE"
        node.frame_method = "STRETCH"
    else:
        node.inputs["Type"].default_value = "Absolute"
        node.inputs["Frame Type"].default_value = "Stretch"
    node.inputs["X"].default_value = width
    node.inputs["Y"].default_value = height
    return node


def compositor_tree(scene: bpy.types.Scene, create: bool) -> bpy.types.NodeTree | None:
    """The scene's compositor node tree, made (and switched on) when ``create``."""
    if LEGACY:
        if create and not scene.use_nodes:
            scene.use_nodes = True
        return scene.node_tree
    if scene.compositing_node_group is None and create:
        scene.compositing_node_group = bpy.data.node_groups.new(f"{scene.name} Compositor", "CompositorNodeTree")
    return scene.compositing_node_group


def find_output(tree: bpy.types.NodeTree) -> bpy.types.Node | None:
    """The node that receives the composited image (Composite in 4.x, Group Output in 5.0)."""
    idname = "CompositorNodeComposite" if LEGACY else "NodeGroupOutput"
    candidates = [n for n in tree.nodes if n.bl_idname == idname and not n.mute]
    for node in candidates:
        if LEGACY or node.is_active_output:
            return node
    return candidates[0] if candidates else None


def new_output(tree: bpy.types.NodeTree) -> bpy.types.Node:
    return tree.nodes.new("CompositorNodeComposite" if LEGACY else "NodeGroupOutput")


def output_input(tree: bpy.types.NodeTree, node: bpy.types.Node) -> bpy.types.NodeSocket:
    """The socket of the output node that takes the final image."""
    if LEGACY:
        return node.inputs["Image"]
    # The compositor writes the group's first colour output; add one to a
    # tree that has none (a new or hand-made tree).
    colour = [item for item in tree.interface.items_tree
              if item.item_type == "SOCKET" and item.in_out == "OUTPUT" and item.socket_type == "NodeSocketColor"]
    if not colour:
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        return node.inputs[len(node.inputs) - 2]  # the last one is the virtual "add socket" slot
    return next(s for s in node.inputs if s.identifier == colour[0].identifier)



def all_strips(scene: bpy.types.Scene) -> list:
    editor = scene.sequence_editor
    if editor is None:
        return []
    return list(editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all)
