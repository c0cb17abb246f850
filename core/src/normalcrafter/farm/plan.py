"""A farm job as data: shots (one input, one output folder each), cut into
chunks at the clip's best cut points, with what is already on disk.

Planning reads only frame counts and file names, never pixels, so it runs on
the submitting machine in seconds even for hundreds of shots.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import errors
from ..chunks import chunk_ranges
from ..errors import NormalCrafterError
from ..io.readers import open_source
from ..io.writers import frame_path
from ..job import MANIFEST, EstimateSettings
from ..model.loading import default_model


@dataclass(frozen=True)
class Chunk:
    shot: int  # index into the job's shots
    start: int  # frames [start, end) of the shot's input, counted from 0
    end: int

    @property
    def key(self) -> str:
        return f"{self.shot}:{self.start}:{self.end}"


@dataclass
class Shot:
    input: str
    output: Path
    numbers: list[int]  # the input's frame numbers (output file names)
    chunks: list[Chunk] = field(default_factory=list)
    done: set[int] = field(default_factory=set)  # frame numbers already written

    def missing(self, chunk: Chunk) -> list[int]:
        return [n for n in self.numbers[chunk.start : chunk.end] if n not in self.done]


def shot_name(path: str | os.PathLike) -> str:
    """A folder name for an input: the file's stem, or a sequence pattern's
    name without its frame token (``plate.####.exr`` -> ``plate``)."""
    p = Path(path)
    name = p.stem if p.suffix and not p.is_dir() else p.name
    name = re.sub(r"%0?\d*d|#+", "", name)
    return name.strip("._- ") or "shot"


def plan_job(
    inputs: list[str], output: str | os.PathLike, settings: EstimateSettings, chunk_frames: int
) -> list[Shot]:
    """One shot per input: into ``output`` itself for a single input, else into
    ``output/<name>``. Refuses folders that hold another job's frames."""
    if not inputs:
        raise NormalCrafterError(errors.BAD_REQUEST, "no inputs given")
    root = Path(output).expanduser()
    names = [shot_name(i) for i in inputs]
    if len(inputs) > 1:
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise NormalCrafterError(
                errors.BAD_REQUEST, f"several inputs would write to {root / dupes[0]}; give them distinct names"
            )
    model = settings.model or default_model()
    shots = []
    for k, (path, name) in enumerate(zip(inputs, names)):
        src = open_source(path, None, settings.max_res)
        folder = root if len(inputs) == 1 else root / name
        _check_manifest(folder, src.path, settings.identity(model))
        shot = Shot(str(path), folder, list(src.numbers))
        shot.chunks = [Chunk(k, a, b) for a, b in chunk_ranges(
            len(src), chunk_frames, settings.window, settings.stride, settings.decode_chunk)]
        if folder.is_dir():
            shot.done = {n for n in shot.numbers if frame_path(folder, n, settings.format).exists()}
        shots.append(shot)
    return shots


def _check_manifest(folder: Path, input_path: Path, settings_identity: dict) -> None:
    """Fail before any work is sent out when the folder belongs to another
    job (the chunks would each fail the same way on the workers)."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        return
    try:
        old = json.loads(manifest.read_text())
    except (OSError, ValueError):
        old = {}
    same_input = old.get("input", {}).get("path") == str(input_path.resolve())
    if not same_input or old.get("settings") != settings_identity:
        raise NormalCrafterError(
            errors.OUTPUT_CONFLICT,
            f"{folder} holds frames of another job; use another output folder or empty this one",
        )
