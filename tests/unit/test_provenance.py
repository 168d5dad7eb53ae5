"""Provenance: both backends say which lines of each emitted kernel every plan statement (and so
every derivation equation) produced, by locating their own printed text in the rendered file."""

from __future__ import annotations

import dataclasses
import importlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import sympy as sp

import symnn as sn
from symnn import ir, naming, render
from symnn.driver import derive_program
from symnn.backends.numpy.emit import emit_numpy
from symnn.backends.c.emit import emit_c
from symnn.lower import KernelPlan
from symnn.program import Program
from symnn.provenance import CodeLine, locate

_z = sp.Symbol("z", real=True)


def _nets() -> dict[str, tuple[sn.Network, sn.Optimizer | None]]:
    """Small networks covering each statement kind and fusion of both backends: sigmoid-BCE,
    softmax-CE with penalties (row statistics, column sums), a user activation, and dropout
    with an optimiser (the training kernel)."""
    return {
        "xor": (sn.Network([sn.Dense(2, 4, "tanh"), sn.Dense(4, 1, "sigmoid")], loss="bce",
                           name="pv_xor"), None),
        "cls": (sn.Network([sn.Dense(5, 16, "relu"), sn.Dense(16, 8, "relu"),
                            sn.Dense(8, 3, "softmax")],
                           loss="cross_entropy", l1=0.01, l2=0.02, name="pv_cls"), None),
        "user": (sn.Network([sn.Dense(3, 6, sn.Activation("cubic", _z**3 / 3 + _z, var=_z)),
                            sn.Dense(6, 2, "identity")], loss="mse", name="pv_user"), None),
        "drop": (sn.Network([sn.Dense(4, 8, "relu", dropout=0.25), sn.Dense(8, 2, "identity")],
                            loss="mse", name="pv_drop"), sn.Adam(lr=1e-3)),
    }


NETS = _nets()
BACKENDS = ("numpy", "c")


def _emit(key: str, backend: str, prog: Program | None = None,
          train: Program | None = None) -> tuple[str, dict[str, list[CodeLine]]]:
    """(source, provenance) of one network on one backend, from ``prog`` (default: derived)."""
    net, opt = NETS[key]
    prog = prog or derive_program(net).program
    if opt is not None and net.has_dropout:
        train = train or derive_program(net, training=True).program
    if backend == "numpy":
        r = emit_numpy(net, prog, "float64", opt, train)
        return r.source, r.provenance
    rc = emit_c(net, prog, "float64", opt, train)
    return rc.source, rc.provenance


def _kernels(key: str) -> list[str]:
    net, opt = NETS[key]
    train = ["loss_and_grad_train"] if opt is not None and net.has_dropout else []
    return ["forward", "loss", "loss_and_grad", *train]


def _check_lines(source: str, provenance: dict[str, list[CodeLine]]) -> None:
    """Every line is the source's line at its number, in file order, inside one kernel."""
    lines = source.split("\n")
    for kname, cls in provenance.items():
        assert cls, kname
        assert [c.line for c in cls] == sorted(c.line for c in cls), kname
        for c in cls:
            assert c.text == lines[c.line - 1].strip(), (kname, c)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", list(NETS))
def test_each_line_is_the_source_line_at_its_number(key: str, backend: str) -> None:
    source, provenance = _emit(key, backend)
    assert list(provenance) == _kernels(key)
    _check_lines(source, provenance)
    # the kernels' lines are apart: each kernel's lines lie in its own function
    spans = [(cls[0].line, cls[-1].line) for cls in provenance.values()]
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))


def _tagging(plans: list[KernelPlan], real: Callable[..., KernelPlan]) -> Callable[..., KernelPlan]:
    """``plan_kernel`` whose statements get the distinct origins "s0", "s1", ... (kept in
    ``plans``): what every statement printed can then be told apart in the provenance."""
    def plan_kernel(prog: Program, kernel: str) -> KernelPlan:
        plan = real(prog, kernel)
        plan.stmts = [dataclasses.replace(st, origin=f"s{i}") for i, st in enumerate(plan.stmts)]
        plans.append(plan)
        return plan
    return plan_kernel


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", list(NETS))
def test_every_statement_is_represented_and_origins_never_reach_the_code(
        key: str, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, _ = _emit(key, backend)
    plans: list[KernelPlan] = []
    module = importlib.import_module("symnn.backends.numpy.emit" if backend == "numpy" else "symnn.backends.c.emit")
    monkeypatch.setattr(module, "plan_kernel", _tagging(plans, module.plan_kernel))
    source, provenance = _emit(key, backend)
    assert source == plain  # an origin is a label for the report, never code
    _check_lines(source, provenance)
    assert len(plans) == len(provenance)
    for plan, (kname, cls) in zip(plans, provenance.items()):
        # each statement, fused into another's loop or printed lazily by a later one, has
        # lines, and no line is without a statement
        assert {c.origin for c in cls} == {f"s{i}" for i in range(len(plan.stmts))}, kname


def test_a_line_finishing_a_deferred_statement_is_listed_for_both(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # NumPy prints the softmax-CE rows lazily, inside the loss total: that line computes both
    plans: list[KernelPlan] = []
    module = importlib.import_module("symnn.backends.numpy.emit")
    monkeypatch.setattr(module, "plan_kernel", _tagging(plans, module.plan_kernel))
    _, provenance = _emit("cls", "numpy")
    plan, cls = plans[1], provenance["loss"]
    ce = next(i for i, st in enumerate(plan.stmts) if st.kind is ir.Op.SOFTMAX_CE)
    total = next(i for i, st in enumerate(plan.stmts)
                 if st.kind is ir.Op.SUM and st.operands[0] == plan.stmts[ce].target)
    line = next(c.line for c in cls if c.origin == f"s{total}")
    assert {c.origin for c in cls if c.line == line} == {f"s{ce}", f"s{total}"}


def _owned(prog: Program) -> Program:
    """``prog`` with the derivation's equation ids. Until the derivation fills
    ``Program.owners`` a stand-in does: each output's equation is its output name (``loss``,
    ``dL_dW1``...), every other node belongs to an equation "eq"."""
    if prog.owners:
        return prog
    owners = {id(prog.origin(n)): "eq" for n in prog.nodes()}
    owners.update({id(prog.origin(v)): k for k, v in prog.outputs.items()})
    return dataclasses.replace(prog, owners=owners)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", list(NETS))
def test_gradient_lines_carry_their_equation(key: str, backend: str) -> None:
    net, opt = NETS[key]
    train = None
    if opt is not None and net.has_dropout:
        train = _owned(derive_program(net, training=True).program)
    _, provenance = _emit(key, backend, _owned(derive_program(net).program), train)
    for kname in ("loss_and_grad",) + (("loss_and_grad_train",) if train else ()):
        cls = provenance[kname]
        assert all(c.origin is not None for c in cls), [c for c in cls if c.origin is None]
        at = {}
        for c in cls:
            at.setdefault(c.line, set()).add(c.origin)
        for p in net.param_shapes():
            g = naming.grad(p)
            writes = [c for c in cls if re.search(rf"\b{g}\b", c.text)]
            assert writes, (kname, g)  # the line computing the gradient is there
            assert all(g in at[c.line] for c in writes), (kname, g, writes)


@pytest.fixture
def edited_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A copy of ``templates/`` the test edits, used by :mod:`symnn.render` while it runs."""
    root = tmp_path / "templates"
    shutil.copytree(render.template_dir(), root)
    monkeypatch.setattr(render, "template_dir", lambda: root)
    render.environment.cache_clear()
    yield root
    render.environment.cache_clear()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("backend", BACKENDS)
def test_edited_template_comments_are_followed(backend: str, edited_templates: Path) -> None:
    # every statement block's comment changed, and a comment line put before each body
    _edit(edited_templates / "c" / "_macros.jinja", "{ /* ", "{ /* (edited) ")
    _edit(edited_templates / "numpy" / "module.py.jinja", "{% for line in k.body %}",
          "    # (edited) the body\n{% for line in k.body %}")
    source, provenance = _emit("cls", backend)
    assert "(edited)" in source
    _check_lines(source, provenance)
    if backend == "c":
        assert any("(edited)" in c.text for c in provenance["loss_and_grad"])


def test_a_template_that_breaks_the_contract_fails_loudly(edited_templates: Path) -> None:
    # the statements' blocks indented by 2, not 4: the C still compiles, the contract is broken
    _edit(edited_templates / "c" / "model.c.jinja", '| trim | indent(4 + 4 * s.get("depth", 0)) }}',
          '| trim | indent(2 + 4 * s.get("depth", 0)) }}')
    with pytest.raises(AssertionError, match="not found in order"):
        _emit("xor", "c")


def test_locate_matches_whole_lines_in_order_inside_the_function() -> None:
    source = "def f(\n    a = 1\n    b = a\n    return b\ndef g(\n    c = 2\n    return c\n"
    found = locate(source, "def f(", "\n    return ",
                   [("    a = 1", ["x"]), ("    b = a", ["y", "x", None])])
    # a line computed for two equations is listed for each
    assert found == [CodeLine("x", 2, "a = 1"), CodeLine("y", 3, "b = a"),
                     CodeLine("x", 3, "b = a")]
    with pytest.raises(AssertionError):  # out of order
        locate(source, "def f(", "\n    return ", [("    b = a", []), ("    a = 1", [])])
    with pytest.raises(AssertionError):  # only in another function
        locate(source, "def f(", "\n    return ", [("    c = 2", [])])
    with pytest.raises(AssertionError):  # part of a line
        locate(source, "def f(", "\n    return ", [("    a =", [])])
    with pytest.raises(AssertionError):  # no such function
        locate(source, "def h(", "\n    return ", [])
