"""The relight node group: plate + camera-space normals in, relit plate out.

Per light k (direction L, colour C, intensity I, wrap w), with N the normal:

    lambert_k = max((N . L/|L| + w) / (1 + w), 0)
    light     = sum_k C * I * lambert_k  +  rim colour * rim intensity * clamp(1 - N.z, 0, 1) ** rim power
    tinted    = light * mix(1, plate, tint by plate)
    added     = tinted * strength
    image     = plate + added                   (blend ADD)
              = 1 - (1 - plate) * (1 - added)   (blend SCREEN)

Only scalar math, separate-XYZ and colour-mix nodes are used, so one
description builds on both compositor APIs (see ``compat``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import bpy

from . import compat

GROUP_TAG = "normalcrafter_relight"
MAX_LIGHTS = 4
BLENDS = ("ADD", "SCREEN")

IMAGE = "Image"
NORMAL = "Normal"
STRENGTH = "Strength"
TINT = "Tint By Plate"
RIM_COLOR = "Rim Color"
RIM_INTENSITY = "Rim Intensity"
RIM_POWER = "Rim Power"
LIGHT_OUT = "Light"


def light_direction(k: int) -> str:
    return f"Light {k} Direction"


def light_color(k: int) -> str:
    return f"Light {k} Color"


def light_intensity(k: int) -> str:
    return f"Light {k} Intensity"


def light_wrap(k: int) -> str:
    return f"Light {k} Wrap"


def _unit(v: Sequence[float]) -> tuple[float, float, float]:
    length = math.sqrt(sum(c * c for c in v))
    return tuple(c / length for c in v)


# Key from upper right, then fill, kicker, under light: distinct starting points
# an artist then aims (camera space: +X right, +Y up, +Z toward the camera).
_DEFAULT_DIRECTIONS = [_unit(v) for v in ((0.6, 0.5, 0.6), (-0.8, 0.1, 0.6), (-0.3, 0.4, -0.85), (0.0, -0.9, 0.4))]
_DEFAULT_COLORS = [(1.0, 0.9, 0.75, 1.0), (0.55, 0.7, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0), (1.0, 0.6, 0.4, 1.0)]


def build_group(group: bpy.types.NodeTree, lights: int, rim: bool, blend: str) -> None:
    """Replace the contents and interface of ``group`` with the relight graph."""
    if not 1 <= lights <= MAX_LIGHTS:
        raise ValueError(f"lights must be 1..{MAX_LIGHTS}, got {lights}")
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
    group.nodes.clear()
    group.interface.clear()
    group[GROUP_TAG] = 1
    _declare_interface(group, lights, rim)
    graph = _Graph(group)
    inputs = graph.node("NodeGroupInput").outputs
    plate = inputs[IMAGE]
    nx, ny, nz = graph.separate(inputs[NORMAL])

    light = None
    for k in range(1, lights + 1):
        lx, ly, lz = graph.separate(inputs[light_direction(k)])
        dot = graph.math("MULTIPLY_ADD", nz, lz, graph.math("MULTIPLY_ADD", ny, ly, graph.math("MULTIPLY", nx, lx)))
        length_sq = graph.math("MULTIPLY_ADD", lz, lz,
                               graph.math("MULTIPLY_ADD", ly, ly, graph.math("MULTIPLY", lx, lx)))
        length = graph.math("MAXIMUM", graph.math("SQRT", length_sq), 1e-6)
        wrap = inputs[light_wrap(k)]
        wrapped = graph.math("DIVIDE", graph.math("ADD", graph.math("DIVIDE", dot, length), wrap),
                             graph.math("ADD", wrap, 1.0))
        amount = graph.math("MULTIPLY", graph.math("MAXIMUM", wrapped, 0.0), inputs[light_intensity(k)])
        contribution = graph.mix("MULTIPLY", inputs[light_color(k)], amount)
        light = contribution if light is None else graph.mix("ADD", light, contribution)

    if rim:
        facing_away = graph.math("SUBTRACT", 1.0, nz, clamp=True)
        rim_amount = graph.math("MULTIPLY", graph.math("POWER", facing_away, inputs[RIM_POWER]), inputs[RIM_INTENSITY])
        light = graph.mix("ADD", light, graph.mix("MULTIPLY", inputs[RIM_COLOR], rim_amount))

    tinted = graph.mix("MULTIPLY", light, plate, factor=inputs[TINT])
    added = graph.mix("MULTIPLY", tinted, inputs[STRENGTH])
    result = graph.mix(blend, plate, added)

    outputs = graph.node("NodeGroupOutput").inputs
    group.links.new(result, outputs[IMAGE])
    group.links.new(added, outputs[LIGHT_OUT])


def _declare_interface(group: bpy.types.NodeTree, lights: int, rim: bool) -> None:
    def socket(name, kind, default, minimum=None, maximum=None, description=""):
        item = group.interface.new_socket(name, in_out="INPUT", socket_type=kind, description=description)
        item.default_value = default
        if minimum is not None:
            item.min_value = minimum
        if maximum is not None:
            item.max_value = maximum
        return item

    group.interface.new_socket(IMAGE, in_out="OUTPUT", socket_type="NodeSocketColor",
                               description="The plate with the added light")
    group.interface.new_socket(LIGHT_OUT, in_out="OUTPUT", socket_type="NodeSocketColor",
                               description="Only the added light (after tint and strength)")
    socket(IMAGE, "NodeSocketColor", (0.0, 0.0, 0.0, 1.0), description="The plate")
    socket(NORMAL, "NodeSocketVector", (0.0, 0.0, 1.0),
           description="Camera-space normals (OpenGL: +X right, +Y up, +Z toward the camera)")
    socket(STRENGTH, "NodeSocketFloat", 1.0, 0.0, 100.0, "How much of the light is added to the plate")
    socket(TINT, "NodeSocketFloat", 1.0, 0.0, 1.0,
           "0: add the light as is; 1: multiply it by the plate (the plate stands in for the surface colour)")
    for k in range(1, lights + 1):
        direction = socket(light_direction(k), "NodeSocketVector", _DEFAULT_DIRECTIONS[k - 1],
                           description="Camera-space direction toward the light")
        try:
            direction.subtype = "DIRECTION"  # a direction widget; 4.2 has no subtypes on interface sockets
        except (AttributeError, TypeError):
            pass
        socket(light_color(k), "NodeSocketColor", _DEFAULT_COLORS[k - 1])
        socket(light_intensity(k), "NodeSocketFloat", 1.0 if k == 1 else 0.5, 0.0, 1000.0)
        socket(light_wrap(k), "NodeSocketFloat", 0.0, 0.0, 1.0,
               "Light reaching past the terminator: 0 is Lambert, 1 lights all but the far side")
    if rim:
        socket(RIM_COLOR, "NodeSocketColor", (1.0, 1.0, 1.0, 1.0))
        socket(RIM_INTENSITY, "NodeSocketFloat", 0.5, 0.0, 1000.0,
               "Light on surfaces turned away from the camera (edges)")
        socket(RIM_POWER, "NodeSocketFloat", 3.0, 0.01, 100.0, "Higher: a thinner rim")


class _Graph:
    """Adds nodes to a tree, linking socket arguments and setting number arguments.

    Nodes are laid out in columns by their distance from the group input.
    """

    def __init__(self, tree: bpy.types.NodeTree) -> None:
        self.tree = tree
        self.depth: dict[str, int] = {}
        self.rows: dict[int, int] = {}

    def node(self, idname: str) -> bpy.types.Node:
        node = self.tree.nodes.new(idname)
        self._place(node, column=0 if idname == "NodeGroupInput" else max(self.depth.values(), default=0) + 1)
        return node

    def _place(self, node: bpy.types.Node, column: int) -> None:
        self.depth[node.name] = column
        row = self.rows.get(column, 0)
        self.rows[column] = row + 1
        node.location = (column * 200.0, -row * 180.0)

    def _column(self, values) -> int:
        sources = [v.node.name for v in values if isinstance(v, bpy.types.NodeSocket)]
        return 1 + max((self.depth.get(name, 0) for name in sources), default=0)

    def _feed(self, socket: bpy.types.NodeSocket, value) -> None:
        if isinstance(value, bpy.types.NodeSocket):
            self.tree.links.new(value, socket)
        else:
            socket.default_value = value

    def separate(self, vector: bpy.types.NodeSocket) -> tuple[bpy.types.NodeSocket, ...]:
        node = self.tree.nodes.new(compat.SEPARATE_XYZ)
        self._place(node, self._column([vector]))
        self._feed(node.inputs[0], vector)
        return node.outputs["X"], node.outputs["Y"], node.outputs["Z"]

    def math(self, operation: str, *values, clamp: bool = False) -> bpy.types.NodeSocket:
        node = self.tree.nodes.new(compat.MATH)
        self._place(node, self._column(values))
        node.operation = operation
        node.use_clamp = clamp
        for socket, value in zip(node.inputs, values):
            self._feed(socket, value)
        return node.outputs[0]

    def mix(self, blend: str, a, b, factor=1.0) -> bpy.types.NodeSocket:
        node, fac, in_a, in_b, result = compat.new_mix(self.tree.nodes, blend)
        self._place(node, self._column([a, b, factor]))
        self._feed(fac, factor)
        self._feed(in_a, a)
        self._feed(in_b, b)
        return result
