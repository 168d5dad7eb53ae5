"""The constants of an expression folded into 17-digit floats, as every printer prints them.

``sp.nfloat`` walks and rebuilds the whole expression, and was most of a printer's time (4.7
of 6.5 s of the NumPy backend's printing over 200 random networks); the same maps are printed
again for every dtype, backend and kernel of a network, so the result is remembered.
"""

from __future__ import annotations

import functools

import sympy as sp


@functools.lru_cache(maxsize=8192)
def folded(expr: sp.Expr) -> sp.Expr:
    """``expr`` with every constant one 17-digit Float (integer exponents stay integers)."""
    return sp.nfloat(expr, 17, exponent=False)
