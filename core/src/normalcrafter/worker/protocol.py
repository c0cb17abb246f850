"""The worker's wire format: one JSON object per line (docs/protocol.md).

Requests go to the worker's stdin, events come back on its stdout. This
module only parses and encodes; it imports nothing heavy so that a malformed
line is answered even while torch is busy elsewhere.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

# Bump only for changes an old client cannot ignore (a renamed or removed
# field, a changed meaning). New optional fields, new request and event types
# keep the number: clients must ignore what they do not know.
PROTOCOL_VERSION = 1

REQUEST_TYPES = ("hello", "estimate", "download", "cancel", "status", "shutdown")
EVENT_TYPES = ("hello", "queued", "stage", "progress", "file", "warning", "done", "error", "log", "status", "bye")
JOB_KINDS = ("estimate", "download")

# A request line longer than this is refused unread: no legitimate request
# comes near it, and an unbounded line would be held in memory whole.
MAX_LINE_BYTES = 1 << 20


class ProtocolError(Exception):
    """A request that cannot be acted on; answered with a ``bad_request`` error."""

    def __init__(self, message: str, request_id: str | None = None, job: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.job = job


@dataclass
class Request:
    type: str
    id: str | None = None
    job: str | None = None
    body: dict = field(default_factory=dict)


def _optional_str(msg: dict, key: str, request_id: str | None) -> str | None:
    value = msg.get(key)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f'"{key}" must be a string or null, not {type(value).__name__}', request_id)
    if value == "":
        raise ProtocolError(f'"{key}" must not be empty', request_id)
    return value


def decode_request(line: bytes) -> Request:
    """Parse one request line; raise :class:`ProtocolError` with a one-line reason."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(f"request line is longer than the limit of {MAX_LINE_BYTES} bytes")
    try:
        msg = json.loads(line)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"request is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"request must be a JSON object, not {type(msg).__name__}")
    request_id = _optional_str(msg, "id", None)
    kind = msg.get("type")
    if not isinstance(kind, str):
        raise ProtocolError('request has no "type" string', request_id)
    if kind not in REQUEST_TYPES:
        raise ProtocolError(f"unknown request type {kind!r}; known: {', '.join(REQUEST_TYPES)}", request_id)
    job = _optional_str(msg, "job", request_id)
    body = {k: v for k, v in msg.items() if k not in ("type", "id", "job")}
    return Request(kind, request_id, job, body)


def _finite(value):
    """JSON has no NaN or infinity; a rate or an estimate that is not finite
    is sent as null instead of producing a line a strict parser rejects."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def encode_event(event: dict) -> bytes:
    """One event as one ASCII line (non-ASCII text is escaped, so no host's
    pipe encoding can garble a path)."""
    if event.get("type") not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event.get('type')!r}")
    event = {"type": event["type"], "job": None, **event}
    return (json.dumps(_finite(event), ensure_ascii=True, allow_nan=False, default=str) + "\n").encode("ascii")
