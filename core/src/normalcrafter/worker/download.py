"""Fetch model weights from the hub into the standard hub cache or a chosen
folder, with byte progress and cancel.

Only safetensors weights and JSON configs are fetched (never pickles, never
the SVD UNet the published model replaces). ``huggingface_hub`` resumes
partial files by itself, so a cancelled or interrupted download continues
where it stopped when requested again.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .. import errors
from ..errors import Cancelled, NormalCrafterError
from ..io.atomic import atomic_write_bytes
from ..model.loading import KNOWN_MODELS, MODEL_INFO_FILE, PUBLISHED_UNET_REPO, SUBFOLDERS, SVD_REPO

OnEvent = Callable[[dict], None]

_VARIANTS = ["*.fp16.*", "*.bf16.*", "*.fp32.*"]  # the loader reads the plain names only


def _files_of(subfolders) -> list[str]:
    return [f"{sub}/{pattern}" for sub in subfolders for pattern in ("*.json", "*.safetensors")]


def plan(model: str) -> list[tuple[str, list[str]]]:
    """(repository, file patterns) to fetch for one model id; the published
    model takes its UNet and VAE from its own repository, the rest from SVD-xt
    (as ``model.loading`` reads them)."""
    if model == PUBLISHED_UNET_REPO:
        return [
            (PUBLISHED_UNET_REPO, _files_of(("unet", "vae"))),
            (SVD_REPO, ["model_index.json", *_files_of(("image_encoder", "feature_extractor", "scheduler"))]),
        ]
    return [(model, ["model_index.json", MODEL_INFO_FILE, *_files_of(SUBFOLDERS)])]


@dataclass
class DownloadRequest:
    model: str = PUBLISHED_UNET_REPO
    dir: str | None = None  # None: the hub cache

    @classmethod
    def from_body(cls, body: dict) -> "DownloadRequest":
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        unknown = sorted(set(body) - {"model", "dir"})
        if unknown:
            raise NormalCrafterError(errors.BAD_REQUEST, f"unknown download option(s): {', '.join(unknown)}")
        model = body.get("model") or PUBLISHED_UNET_REPO
        folder = body.get("dir")
        if not isinstance(model, str) or (folder is not None and (not isinstance(folder, str) or not folder)):
            raise NormalCrafterError(errors.BAD_REQUEST, '"model" must be a hub id and "dir" a folder path or null')
        try:
            validate_repo_id(model)
        except HFValidationError:
            raise NormalCrafterError(errors.BAD_REQUEST, f"{model!r} is not a hub repository id (owner/name)") from None
        if "/" not in model:
            raise NormalCrafterError(errors.BAD_REQUEST, f"{model!r} is not a hub repository id (owner/name)")
        return cls(model, folder)


def _progress_bar_class(repo: str, on_event: OnEvent, should_cancel: Callable[[], bool]) -> type:
    """A tqdm class for ``snapshot_download`` that reports byte progress as
    events (at most twice a second) and stops the download on cancel."""
    state = {"bar": None, "last": 0.0, "start": time.monotonic()}

    class EventBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = True  # nothing drawn; events instead
            counts_bytes = kwargs.get("unit") == "B"
            super().__init__(*args, **kwargs)
            self.count = kwargs.get("initial") or 0
            # The hub keeps two byte bars (received, written) with the same
            # total; one of them is enough.
            if counts_bytes and state["bar"] is None:
                state["bar"] = self

        def update(self, n=1):
            if should_cancel():
                raise Cancelled("download cancelled (partial files are kept and resumed next time)")
            self.count += n or 0
            now = time.monotonic()
            if self is state["bar"] and now - state["last"] >= 0.5:
                state["last"] = now
                rate = self.count / max(now - state["start"], 1e-6)
                total = self.total or None
                on_event({
                    "type": "progress", "unit": "bytes", "repo": repo, "done": int(self.count), "total": total,
                    "bytes_per_s": round(rate), "eta_s": round((total - self.count) / rate, 1) if total and rate else None,
                })
            return True

    return EventBar


def _hub_failure(repo: str, exc: Exception) -> NormalCrafterError:
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, GatedRepoError):
        why = "it is gated: accept its licence on huggingface.co and log in (`hf auth login`) where the worker runs"
    elif isinstance(exc, RepositoryNotFoundError):
        why = "no such repository on the hub (or it is private and you are not logged in)"
    elif isinstance(exc, LocalEntryNotFoundError):
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        why = ("HF_HUB_OFFLINE is set" if offline else "the hub is unreachable") + " and it is not in the cache"
    elif isinstance(exc, HfHubHTTPError):
        why = first
    else:  # connection errors raised by the HTTP library during a transfer
        why = f"network error: {type(exc).__name__}: {first}"
    return NormalCrafterError(errors.MODEL_MISSING, f"cannot download {repo}: {why}")


def download_model(request: DownloadRequest, on_event: OnEvent, should_cancel: Callable[[], bool]) -> dict:
    """Fetch ``request.model`` and return where it is and what to pass as a
    job's ``model`` setting to use it."""
    from huggingface_hub import snapshot_download

    folder = Path(request.dir).expanduser() if request.dir else None
    steps = plan(request.model)
    paths = {}
    for number, (repo, patterns) in enumerate(steps, 1):
        where = str(folder) if folder else "the hub cache"
        on_event({"type": "stage", "stage": "downloading",
                  "message": f"fetching {repo} into {where} ({number}/{len(steps)})"})
        try:
            paths[repo] = snapshot_download(
                repo, allow_patterns=patterns, ignore_patterns=_VARIANTS, local_dir=folder,
                tqdm_class=_progress_bar_class(repo, on_event, should_cancel),
            )
        except NormalCrafterError:
            raise
        except OSError as exc:
            from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

            if isinstance(exc, (HfHubHTTPError, LocalEntryNotFoundError, ConnectionError)):
                raise _hub_failure(repo, exc) from None
            raise NormalCrafterError(
                errors.OUTPUT_NOT_WRITABLE, f"cannot store {repo} in {where}: {exc.strerror or exc}"
            ) from None
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in ("httpx", "httpcore", "huggingface_hub"):
                raise _hub_failure(repo, exc) from None
            raise
    if folder is not None and not (folder / MODEL_INFO_FILE).exists():
        # The loader reads per-model facts (axis convention) from this file in a folder.
        info = {**KNOWN_MODELS.get(request.model, {}), "downloaded_from": [repo for repo, _ in steps]}
        atomic_write_bytes(folder / MODEL_INFO_FILE, (json.dumps(info, indent=2) + "\n").encode())
    on_event({"type": "stage", "stage": "done", "message": f"{request.model} is ready"})
    return {
        "model": request.model,
        "source": str(folder) if folder else request.model,
        "paths": paths,
    }
