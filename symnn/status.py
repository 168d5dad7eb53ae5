"""The status codes of the emitted C API: one ``IntEnum`` that both sides read.

The C emitter passes :func:`c_table` to the templates, which define ``SYMNN_OK``,
``SYMNN_ERR_NULL``... and ``<model>_status_string`` from it; the cffi wrapper
(:mod:`symnn.backends.c.wrapper`) compares the returned code with the same members and maps
them to exceptions. A code added or renumbered here changes both at once, so the header and
the wrapper cannot disagree.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """A C kernel's return value. ``c_name`` is the macro the header defines, ``text`` the
    sentence ``<model>_status_string`` returns."""

    text: str

    def __new__(cls, code: int, text: str) -> "Status":
        member = int.__new__(cls, code)
        member._value_ = code
        member.text = text
        return member

    OK = 0, "ok"
    ERR_NULL = 1, "a required pointer is NULL"
    ERR_SIZE = 2, "batch size is negative or too large"
    ERR_EMPTY = 3, "empty batch (or every step padded): the mean loss is undefined"
    ERR_LABEL = 4, "class label out of range"
    ERR_ALIAS = 5, "an output buffer overlaps another buffer"
    ERR_WORK = 6, "work buffer too small"
    ERR_NONFINITE = 7, "non-finite value (NaN or infinity)"
    ERR_INDEX = 8, "index out of range (or not an integer)"
    ERR_ARG = 9, "invalid argument (a step count below 1)"

    @property
    def c_name(self) -> str:
        """The C macro: ``SYMNN_`` and the member's name (``SYMNN_ERR_LABEL``)."""
        return f"SYMNN_{self.name}"


def c_table() -> tuple[tuple[str, int, str], ...]:
    """``(macro, code, text)`` per status, in code order: the templates' ``statuses``."""
    return tuple((s.c_name, int(s), s.text) for s in Status)


__all__ = ["Status", "c_table"]
