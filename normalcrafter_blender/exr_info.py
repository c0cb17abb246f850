"""Channel names and size of an OpenEXR file, read from its header with the
standard library (Blender's Python has no OpenEXR module, and loading the
image through bpy would decode every pixel).

Blender's sequencer can only show a Combined or RGB(A) pass of a multilayer
EXR and crashes (5.0.1) on a file that has neither, so an image strip is only
made from files that pass :func:`sequencer_can_show`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = 20000630
_MAX_HEADER = 1 << 20  # our headers are ~2 KB; a bigger one is not a normal pass


@dataclass(frozen=True)
class ExrInfo:
    channels: tuple[str, ...]
    width: int
    height: int


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode("latin-1"), end + 1


def _channel_names(value: bytes) -> tuple[str, ...]:
    names, pos = [], 0
    while pos < len(value) and value[pos] != 0:
        name, pos = _cstring(value, pos)
        names.append(name)
        pos += 16  # pixel type, pLinear, reserved, x/y sampling
    return tuple(names)


def read_exr_info(path: str) -> ExrInfo:
    """Raise ValueError if ``path`` is not a readable EXR (OSError if unreadable)."""
    with open(path, "rb") as fh:
        data = fh.read(_MAX_HEADER)
    if len(data) < 8 or struct.unpack_from("<i", data, 0)[0] != MAGIC:
        raise ValueError(f"{path} is not an OpenEXR file")
    pos, channels, window = 8, None, None
    try:
        while data[pos] != 0:
            name, pos = _cstring(data, pos)
            _kind, pos = _cstring(data, pos)
            (size,) = struct.unpack_from("<i", data, pos)
            value = data[pos + 4 : pos + 4 + size]
            pos += 4 + size
            if name == "channels":
                channels = _channel_names(value)
            elif name == "dataWindow":
                window = struct.unpack("<4i", value)
    except (IndexError, ValueError, struct.error):
        raise ValueError(f"{path}: damaged OpenEXR header") from None
    if channels is None or window is None:
        raise ValueError(f"{path}: OpenEXR header without channels or data window")
    x0, y0, x1, y1 = window
    return ExrInfo(channels, x1 - x0 + 1, y1 - y0 + 1)


def sequencer_can_show(channels: tuple[str, ...]) -> bool:
    """True when Blender's sequencer finds a colour pass: plain R,G,B or
    ``<layer>.R/G/B`` channels."""
    layers: dict[str, set[str]] = {}
    for name in channels:
        layer, _, chan = name.rpartition(".")
        layers.setdefault(layer, set()).add(chan.upper())
    return any({"R", "G", "B"} <= chans for chans in layers.values())
