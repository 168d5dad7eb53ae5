"""Sizes reach SymPy as ints or expressions symnn built (N, T), never as text: every helper that
reads a size (symnn.naming, the C backend's size printers) sympifies with ``strict=True``, so a
string, say a dimension name read from a spec or an ONNX file, is refused instead of parsed
(SymPy's parser evaluates Python), while ints and symbolic sizes pass."""

from __future__ import annotations

import pytest
import sympy as sp

from symnn import naming
from symnn.backends.c.config import coefficients, dim_code

READERS = [naming.concrete, naming.has_length, naming.length_form, dim_code,
           lambda size: coefficients(size, length=True)]


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("text", ["T", "3*T + 2", "__import__('os').getpid()"])
def test_a_size_given_as_text_is_refused(read, text: str) -> None:
    with pytest.raises(sp.SympifyError):
        read(text)


def test_ints_and_symbolic_sizes_pass() -> None:
    size = 3 * naming.T + 2
    assert naming.concrete(7) == 7 and naming.concrete(size) == size
    assert naming.has_length(size) and not naming.has_length(5)
    assert naming.length_form(size) == (3, 2)
    assert dim_code(size) == "(3*steps + 2)" and dim_code(4) == "4"
    assert coefficients(size * naming.N + 1, length=True) == (3, 2, 1)
