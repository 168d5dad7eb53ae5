"""The report's C excerpts: a fused loop shows its statements, not only its comment line."""

from __future__ import annotations

import symnn as sn
from symnn.driver import derive_program
from symnn.emit_c import emit_c
from symnn.report_doc import _c_lines


def test_fused_blocks_show_the_statements_that_compute_each_target() -> None:
    net = sn.Network([sn.Dense(8, 20, "relu"), sn.Dense(20, 3, "softmax")], loss="cross_entropy", name="rep")
    c = _c_lines(emit_c(net, derive_program(net).program, "float64").source, net.name)
    # the forward bias add and ReLU: one loop, the stored value is the max
    assert c["a1"][0].startswith("/* a1 = f(z1)")
    assert any(line.startswith("a1[i*20 + j] = ") and "max(" in line for line in c["a1"])
    assert any("biased = z1[" in line for line in c["a1"])
    # delta of the hidden layer and its column sums (dL_db1) share a loop: each gets its own lines
    delta = next(t for t, lines in c.items() if lines[0].startswith(f"/* {t} = element-wise map") and
                 any(line.startswith(f"{t}[i*20 + j] = value") for line in lines))
    assert any("a1_e > 0" in line for line in c[delta])
    assert c["dL_db1"][0] == f"/* dL_db1 = {delta}.sum(axis=0) */"
    assert "dL_db1[j] += value;" in c["dL_db1"] and not any("dL_db1" in line for line in c[delta])
    # a plain statement, and a gemm call with its comment
    assert any(line.startswith("loss = ") for line in c["loss"])
    assert c["z1"][0].endswith("/* z1 = X @ W1.T */")
