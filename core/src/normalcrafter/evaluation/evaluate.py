"""Evaluate prediction clips against ground-truth clips: accuracy, flicker, pictures."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import errors
from ..errors import NormalCrafterError
from .clips import Clip, Pairing, pair_clips, pair_frames
from .flicker import FLOW_METHODS, FlickerStats, estimate_flow, pair_flicker
from .metrics import ErrorStats, angular_error, unit, valid_mask
from .plots import SheetRow, contact_sheet, save_png, temporal_profile

FLOW_CHOICES = ("auto", "gt", *FLOW_METHODS, "none")
PROTOCOL = ("DSINE: angle between unit prediction and unit ground truth at every valid ground-truth pixel "
            "(finite, length > 0.5), pooled over all pixels of a clip / of all clips")


@dataclass
class PlotOptions:
    folder: Path
    sheet_rows: int = 4
    column: float = 0.5  # the temporal profile's image column, as a fraction of the width


@dataclass
class InputFrames:
    """The input RGB frames (by their frame numbers) when the ground truth has none."""

    frames: list[int]
    read: Callable[[int], np.ndarray]  # position -> (H, W, 3) uint8


@dataclass
class _ClipResult:
    stats: ErrorStats = field(default_factory=ErrorStats)
    flicker: FlickerStats = field(default_factory=FlickerStats)
    per_frame: list[float] = field(default_factory=list)


def evaluate(preds: list[Clip], gts: list[Clip], *, flow: str = "auto", plots: PlotOptions | None = None,
             rgb: InputFrames | None = None, on_clip: Callable[[dict], None] | None = None) -> dict:
    """Accuracy (and flicker, and pictures) of every prediction clip.

    ``rgb`` supplies input frames (by prediction frame number) when the ground
    truth has none, for flow estimation and the pictures. Returns the JSON-able
    report; ``on_clip`` is called with each clip's entry as it completes.
    """
    if flow not in FLOW_CHOICES:
        raise NormalCrafterError(errors.BAD_REQUEST, f"flow {flow!r}: choose {', '.join(FLOW_CHOICES)}")
    pairs = pair_clips(preds, gts)
    if rgb is not None and len(pairs) > 1:
        raise NormalCrafterError(errors.BAD_REQUEST, "input frames can be given for a single clip only")
    overall, overall_flicker = ErrorStats(), FlickerStats()
    warnings: list[str] = []
    entries = []
    for pred, gt in pairs:
        entry, res = _evaluate_clip(pred, gt, flow, plots, rgb, warnings)
        overall.merge(res.stats)
        overall_flicker.merge(res.flicker)
        entries.append(entry)
        if on_clip is not None:
            on_clip(entry)
    return {
        "protocol": PROTOCOL,
        "convention": "opengl",
        "overall": {"frames": sum(e["frames"] for e in entries), **overall.summary(),
                    "flicker": overall_flicker.summary() if overall_flicker.pairs else None},
        "clips": entries,
        "warnings": warnings,
    }


def _rgb_reader(pred: Clip, gt: Clip, pairing: Pairing, rgb: InputFrames | None) -> Callable[[int], np.ndarray] | None:
    """Input frame of the k-th evaluated frame, from ``rgb`` or the ground truth."""
    if rgb is not None:
        wanted = [pred.frames[i] for i in pairing.pred_pos]
        index = {n: i for i, n in enumerate(rgb.frames)}
        if all(n in index for n in wanted):
            pos = [index[n] for n in wanted]
        elif len(rgb.frames) == len(wanted):
            pos = list(range(len(wanted)))
        else:
            raise NormalCrafterError(errors.INPUT_INVALID, f"input frames ({len(rgb.frames)}) do not match "
                                     f"the {len(wanted)} evaluated frames")
        return lambda k: rgb.read(pos[k])
    if gt.read_rgb is not None:
        return lambda k: gt.read_rgb(pairing.gt_pos[k])  # type: ignore[misc]
    return None


def _flow_plan(name: str, gt: Clip, pairing: Pairing, flow: str, has_rgb: bool, warnings: list[str]) -> str:
    """Which flow this clip's flicker uses: "gt", a method, or "none"."""
    if flow == "none" or len(pairing.gt_pos) < 2:
        return "none"
    if not gt.is_sequence:
        return "none"
    consecutive = all(b == a + 1 for a, b in zip(pairing.gt_pos, pairing.gt_pos[1:]))
    if flow == "gt":
        if gt.read_flow is None or not consecutive:
            raise NormalCrafterError(errors.INPUT_INVALID, f"clip {name!r}: the ground truth has no flow "
                                     "between the evaluated frames; use --flow dis")
        return "gt"
    if flow == "auto" and gt.read_flow is not None and consecutive:
        return "gt"
    if not has_rgb:
        if flow != "auto":
            raise NormalCrafterError(errors.INPUT_INVALID, f"clip {name!r}: flow estimation needs the input "
                                     "frames; pass them with --frames")
        warnings.append(f"clip {name!r}: no flow and no input frames, flicker skipped (pass --frames)")
        return "none"
    return "dis" if flow == "auto" else flow


def _match_size(pred: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    import cv2

    if pred.shape[:2] == shape[:2]:
        return pred
    resized = cv2.resize(pred, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return unit(resized).astype(np.float32)


def _evaluate_clip(pred: Clip, gt: Clip, flow: str, plots: PlotOptions | None, rgb: InputFrames | None,
                   warnings: list[str]) -> tuple[dict, _ClipResult]:
    pairing = pair_frames(pred, gt)
    if pairing.by_order:
        warnings.append(f"clip {pred.name!r}: frame numbers differ from the ground truth's; paired in order")
    read_rgb = _rgb_reader(pred, gt, pairing, rgb)
    plan = _flow_plan(pred.name, gt, pairing, flow, read_rgb is not None, warnings)
    n = len(pairing.frames)
    sheet_at = set(np.linspace(0, n - 1, min(plots.sheet_rows, n)).round().astype(int)) if plots else set()
    res = _ClipResult()
    sheet: list[SheetRow] = []
    profile: dict[str, list[np.ndarray]] = {"pred": [], "gt": [], "rgb": []}
    resized = False
    prev = None
    for k in range(n):
        g = gt.read_normal(pairing.gt_pos[k])
        p = pred.read_normal(pairing.pred_pos[k])
        if p.shape[:2] != g.shape[:2]:
            resized = True
            p = _match_size(p, g.shape)
        mask = valid_mask(g)
        if gt.read_mask is not None:
            mask &= gt.read_mask(pairing.gt_pos[k])
        err = angular_error(p[mask], g[mask])
        res.stats.add(err)
        res.per_frame.append(float(err.mean()) if err.size else float("nan"))
        frame_rgb = None
        if read_rgb is not None and (plan in FLOW_METHODS or plots):
            frame_rgb = _match_size_rgb(read_rgb(k), g.shape)
        if prev is not None and plan != "none":
            pp, pg, prgb, pmask = prev
            f = gt.read_flow(pairing.gt_pos[k - 1]) if plan == "gt" else estimate_flow(prgb, frame_rgb, plan)
            res.flicker.add(pair_flicker(pp, p, pg, g, f, pmask))
        prev = (p, g, frame_rgb, mask)
        if plots:
            if k in sheet_at:
                err_img = np.full(g.shape[:2], np.nan)
                err_img[mask] = err
                sheet.append(SheetRow(pairing.frames[k], frame_rgb, p, g, err_img))
            col = min(int(plots.column * g.shape[1]), g.shape[1] - 1)
            profile["pred"].append(p[:, col])
            profile["gt"].append(g[:, col])
            if frame_rgb is not None:
                profile["rgb"].append(frame_rgb[:, col])
    if resized:
        warnings.append(f"clip {pred.name!r}: prediction resized to the ground truth's size (bilinear)")
    entry = {
        "name": pred.name,
        "frames": n,
        "first_frame": pairing.frames[0],
        "last_frame": pairing.frames[-1],
        **res.stats.summary(),
        "flicker": res.flicker.summary() if plan != "none" else None,
        "flow": plan,
        "per_frame_mean": res.per_frame,
        "prediction": {"source": pred.source, "conventions": sorted(pred.conventions)},
        "ground_truth": {"source": gt.source, "conventions": sorted(gt.conventions)},
        "paired_by_order": pairing.by_order,
        "prediction_resized": resized,
    }
    if plots:
        entry["plots"] = _save_plots(plots, pred.name, sheet, profile)
    return entry, res


def _match_size_rgb(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    import cv2

    if img.shape[:2] == shape[:2]:
        return img
    return cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def _save_plots(plots: PlotOptions, name: str, sheet: list[SheetRow], profile: dict[str, list[np.ndarray]]) -> dict:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "clip"
    sheet_path = save_png(plots.folder / f"{safe}_sheet.png", contact_sheet(sheet, f"{name}"))
    cols = {key: np.stack(v) for key, v in profile.items() if v}
    column = min(int(plots.column * sheet[0].gt.shape[1]), sheet[0].gt.shape[1] - 1)
    prof_path = save_png(plots.folder / f"{safe}_profile.png",
                         temporal_profile(cols["pred"], cols["gt"], cols.get("rgb"), column, name))
    return {"sheet": str(sheet_path), "profile": str(prof_path)}
