"""The C lowering records what each statement context prints (backends/c/config.py, ``Uses``):
the emitter decides which parameter views to declare, which arguments are unused and what a
shared helper takes from these records, never by searching the printed text. These tests hold
the records to the text the template prints for each context."""

from __future__ import annotations

import re
import warnings

import pytest

import symnn as sn
from symnn import naming
from symnn.backends.c.config import CConfig, KernelLayout, lower_kernel, share_helpers
from symnn.backends.c.kinds import CKind
from symnn.driver import derive_program
from symnn.lower import KERNELS, plan_kernel
from symnn.render import macros
from tests.catalogue import CATALOGUE

_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_WORD = re.compile(r"[A-Za-z_]\w*")


def _layouts(net: sn.Network, dtype: str = "float64", shared: bool | None = None) -> dict[str, KernelLayout]:
    """Every kernel of ``net`` lowered as emit_c lowers it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = derive_program(net).program
    printer = CConfig(dtype=dtype, prefix=net.name).printer()
    shapes = net.param_shapes()
    out = {}
    for kname in KERNELS:
        inputs = {"X": (naming.N, int(net.n_in))} | ({} if kname == "forward" else {"Y": (naming.N, int(net.n_out))})
        outputs = {"yhat": "out_yhat"} if kname == "forward" else {"loss": "out_loss"}
        if kname == "loss_and_grad":
            outputs |= {naming.grad(p): "out_grad" for p in shapes}
        out[kname] = lower_kernel(plan_kernel(prog, kname), printer, shapes, inputs, outputs, shared=shared)
    return out


def _printer(net: sn.Network, dtype: str = "float64"):
    """The statement macros as model.c.jinja calls them."""
    fsuf = "f" if dtype == "float32" else ""
    return macros("c/_macros.jinja", "c/model.c.jinja", prefix=net.name, real=f"{net.name}_real",
                  lit0="0.0" + fsuf.upper(), lit1="1.0" + fsuf.upper(), fsuf=fsuf)


def _code_words(text: str) -> set[str]:
    """The identifiers of ``text`` outside its comments."""
    return set(_WORD.findall(_COMMENT.sub(" ", text)))


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_each_statement_records_exactly_the_names_its_code_prints(name: str) -> None:
    net = CATALOGUE[name]
    m = _printer(net)
    for kname, lay in _layouts(net).items():
        kernel_names = (set(net.param_shapes()) | {"X", "Y"} | {p["name"] for p in lay.pointers}
                        | set(lay.scalars))
        assert len(lay.uses) == len(lay.stmts)
        for ctx, uses in zip(lay.stmts, lay.uses):
            printed = _code_words(str(getattr(m, ctx["kind"])(ctx))) & kernel_names
            assert printed == set(uses.names), (kname, ctx["kind"], printed, uses)
            assert uses.writes <= uses.names and uses.order == tuple(dict.fromkeys(uses.order))
            assert uses.nr == ("Nr" in _code_words(str(getattr(m, ctx["kind"])(ctx))))


def _deep(depth: int) -> sn.Network:
    return sn.Network([sn.Dense(3, 5, "elu")] + [sn.Dense(5, 5, "softplus")] * depth + [sn.Dense(5, 3, "softmax")],
                      loss="cross_entropy", l2=1e-3, name="deepnet")


def test_shared_helpers_take_exactly_what_their_statements_print() -> None:
    net = _deep(4)
    m = _printer(net)
    layouts = _layouts(net, shared=True)
    helpers = share_helpers(list(layouts.values()), net.name)
    by_name = {h["name"]: h for h in helpers}
    calls = 0
    for lay in layouts.values():
        for ctx, uses in zip(lay.stmts, lay.uses):
            if ctx["kind"] is not CKind.CALL:
                # a statement that assigns a scalar local stays in the kernel's body
                assert uses.writes & set(lay.scalars) or ctx["kind"] is CKind.COPY, ctx
                continue
            calls += 1
            helper = by_name[ctx["fn"]]
            words = _code_words(str(getattr(m, helper["ctx"]["kind"])(helper["ctx"])))
            params = [f"p{i}" for i in range(len(uses.order))]
            # p0, p1, ... are the names it prints, in order, then n and Nr where printed
            assert {w for w in words if re.fullmatch(r"p\d+", w)} == set(params)
            assert ctx["args"].split(", ") == [*uses.order, *(["n"] if uses.batch else []),
                                               *(["Nr"] if uses.nr else [])]
            assert ("n" in words) == uses.batch and ("Nr" in words) == uses.nr
            assert len(helper["params"]) == len(ctx["args"].split(", "))
            for decl, name in zip(helper["params"], uses.order):
                assert decl.startswith("const ") == (name not in uses.writes and name not in lay.scalars)
    # one helper per distinct statement: the four middle layers share theirs
    assert calls > 3 * len(helpers) // 2 and len(helpers) == len({(str(h["params"]), str(h["ctx"])) for h in helpers})


def test_layers_alike_share_helpers_whatever_the_depth() -> None:
    """The helpers of a network are those of its distinct layers: as many for 6 layers as for
    12, so the compiler's work on them does not grow with depth (the calls do, one line each)."""
    counts = []
    for depth in (6, 12):
        layouts = _layouts(_deep(depth), shared=True)
        counts.append(len(share_helpers(list(layouts.values()), "deepnet")))
    assert counts[0] == counts[1] > 0


def test_a_reshape_of_a_reshape_is_one_view() -> None:
    """A gradient that reshapes a sequence's stacked steps to a matrix and back is the stored
    value itself, and a chain of reshapes one view of the first operand: no copy, no storage."""
    from symnn import ir

    x = ir.param("x", (naming.N, 12))
    steps = ir.reshape(x, (3 * naming.N, 4))
    assert ir.reshape(steps, (naming.N, 12)) is x
    flat = ir.reshape(steps, (6 * naming.N, 2))
    assert flat.op is ir.Op.RESHAPE and flat.src == (x,)
