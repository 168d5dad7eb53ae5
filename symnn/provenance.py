"""Which lines of an emitted file each derivation step produced.

A backend knows, for every piece of text it prints, the plan statements it came from
(:attr:`symnn.lower.Stmt.origin`: the id of a derivation equation, "z1", "delta2",
"dL_dW1"...). The template then places those pieces among its own lines. Rather than parse
the rendered code back (fragile, and a second parser of each language), :func:`locate` looks
for the backend's own strings, in the order they were printed, inside the one function that
prints them: an exact, sequential match. A template change that breaks the contract (a
piece re-indented, split or dropped) fails loudly instead of leaving the report empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CodeLine:
    """One line of an emitted file: the equation it computes (``None`` where the program does
    not know), its 1-based line number in the file, and its text stripped of indentation."""

    origin: str | None
    line: int
    text: str


def locate(source: str, header: str, end: str,
           blocks: Iterable[tuple[str, Sequence[str | None]]]) -> list[CodeLine]:
    """The lines of ``blocks``, each a ``(text, origins)`` pair, found in order in ``source``.

    ``header`` starts the searched region (it must begin exactly one line of ``source``: the
    function's signature) and the first ``end`` after it closes the region. Each block's text
    must appear as whole lines, at or after the end of the previous block's match. A block
    computed for several equations (a fused loop) gives each of its lines once per distinct
    origin, so that a report listing one equation's code shows the whole loop; a block with no
    known origin gives its lines with origin ``None``. Line numbers never decrease.

    Raises AssertionError when the header or a block is not where the contract says: the
    backend and its template disagree, which is a bug in symnn, not in the user's input.
    """
    starts = list(_line_starts(source, header))
    if len(starts) != 1:  # raised, not asserted: the check must hold under ``python -O`` too
        raise AssertionError(f"{header!r} begins {len(starts)} lines of the emitted source, "
                             "not one")
    stop = source.find(end, starts[0] + len(header))
    if stop < 0:
        raise AssertionError(f"no {end!r} after {header!r} in the emitted source")
    region = source[:stop + 1]  # keeps the newline that ``end`` starts with: it closes a line
    pos = starts[0] + len(header)
    line_no, counted = 1 + source.count("\n", 0, starts[0]), starts[0]
    out: list[CodeLine] = []
    for text, origins in blocks:
        at = region.find("\n" + text + "\n", pos - 1) + 1
        if at == 0:
            raise AssertionError(f"emitted text not found in order after {header!r}: {text!r}")
        line_no += region.count("\n", counted, at)
        counted = at
        tags = list(dict.fromkeys(o for o in origins if o is not None)) or [None]
        for k, piece in enumerate(text.split("\n")):
            out += [CodeLine(tag, line_no + k, piece.strip()) for tag in tags]
        pos = at + len(text)
    return out


def _line_starts(source: str, prefix: str) -> Iterable[int]:
    """Offsets of the lines of ``source`` that begin with ``prefix``."""
    if source.startswith(prefix):
        yield 0
    at = source.find("\n" + prefix)
    while at >= 0:
        yield at + 1
        at = source.find("\n" + prefix, at + 1)
