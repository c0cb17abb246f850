"""One exception type with a stable machine-readable code.

Every failure a user can cause (bad input, missing model, unwritable folder)
is raised as :class:`NormalCrafterError`; the CLI and the worker turn it into
a one-line message, never a traceback.
"""
from __future__ import annotations

# Stable codes: the worker protocol and the CLI exit path expose them, so
# clients may switch on them. Never rename one.
INPUT_UNREADABLE = "input_unreadable"
INPUT_INVALID = "input_invalid"
MODEL_MISSING = "model_missing"
MODEL_INVALID = "model_invalid"
OUTPUT_NOT_WRITABLE = "output_not_writable"
OUTPUT_CONFLICT = "output_conflict"
OUT_OF_MEMORY = "out_of_memory"
BAD_REQUEST = "bad_request"
CANCELLED = "cancelled"
INTERNAL = "internal"

ERROR_CODES = (
    INPUT_UNREADABLE,
    INPUT_INVALID,
    MODEL_MISSING,
    MODEL_INVALID,
    OUTPUT_NOT_WRITABLE,
    OUTPUT_CONFLICT,
    OUT_OF_MEMORY,
    BAD_REQUEST,
    CANCELLED,
    INTERNAL,
)


# Control characters (a newline in a file name) are escaped, so a message
# stays one line whatever the paths in it hold.
_ESCAPES = {c: repr(chr(c))[1:-1] for c in (*range(32), 127)}


class NormalCrafterError(Exception):
    """A failure with a stable ``code`` and a one-line human ``message``."""

    def __init__(self, code: str, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        message = message.translate(_ESCAPES)
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


class Cancelled(NormalCrafterError):
    def __init__(self, message: str = "cancelled by the user") -> None:
        super().__init__(CANCELLED, message)
