"""The Relight section of the NormalCrafter sidebar panel."""
from __future__ import annotations

import bpy

from . import camera as cam
from . import group, setup


def draw_panel(layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
    box = layout.box()
    box.label(text="Relight", icon="LIGHT_SUN")
    found = setup.find_setup(context.scene)
    if found is None:
        box.operator("normalcrafter.relight_build", text="Build Relight Setup", icon="NODETREE")
        return
    box.operator("normalcrafter.relight_build", text="Rebuild Relight Setup", icon="FILE_REFRESH")
    node = found.node
    column = box.column(align=True)
    for name in (group.STRENGTH, group.TINT):
        _socket(column, node, name)
    active = context.active_object
    can_aim = active is not None and active != context.scene.camera and active.type in {"EMPTY", "LIGHT"}
    for k in range(1, found.lights + 1):
        light = box.box()
        header = light.row()
        header.label(text=f"Light {k}")
        linked = cam.linked_object(node, k)
        if linked is not None:
            header.label(text=linked.name, icon="LINKED")
            header.operator("normalcrafter.relight_unlink_light", text="", icon="UNLINKED").light = k
        elif can_aim:
            aim = header.operator("normalcrafter.relight_link_light", text=f"Aim from {active.name}", icon="LIGHT_SUN")
            aim.light, aim.object_name = k, active.name
        for name in (group.light_direction(k), group.light_color(k), group.light_intensity(k), group.light_wrap(k)):
            _socket(light.column(), node, name)
    if found.rim:
        rim = box.box()
        rim.label(text="Rim")
        for name in (group.RIM_COLOR, group.RIM_INTENSITY, group.RIM_POWER):
            _socket(rim.column(), node, name)


def _socket(layout: bpy.types.UILayout, node: bpy.types.Node, name: str) -> None:
    socket = node.inputs.get(name)
    if socket is not None and not socket.is_linked:
        layout.prop(socket, "default_value", text=name.split(" ", 2)[-1] if name.startswith("Light ") else name)
