"""Issue 18, items 5 and 9 (RELIABILITY.md U3, U4): PyTorch and ONNX files are untrusted input.

* A PyTorch file is read with ``torch.load(weights_only=True)``: a state_dict plus a symnn spec.
  A pickled object (a whole module, or a payload) is refused with a message that says why and
  how to convert, and no code from it runs, through ``sn.load_torch`` and ``symnn from-torch``;
  full unpickling only behind ``trust_pickle=True`` / ``--trust-pickle``. A ``torch.export``
  archive is refused (torch's loader for it unpickles).
* An ONNX file is parsed and checked against each op's spec before any weight is allocated and
  before anything is written: a 3-D Gemm weight or a wrong-size bias exits 2 with nothing
  written; dims that claim more values than the file holds are refused without allocating them;
  external data is read only from a regular file inside the model's folder; names from the file
  never reach emitted code, and error messages quote them on one line.
* The mutation fuzzer of fuzz/fuzz_onnx.py: a short seeded run, only symnn errors escape.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import symnn as sn
from symnn.cli import main
from symnn.errors import (
    ConfigError,
    ModelFormatError,
    SpecError,
    SpecTypeError,
    SymnnError,
    UntrustedInputError,
)

ROOT = Path(__file__).resolve().parents[2]
NEEDS_TORCH = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed")
NEEDS_ONNX = pytest.mark.skipif(importlib.util.find_spec("onnx") is None, reason="onnx not installed")

#: strings a hostile file puts where a name goes: quotes, comment closers, newlines, NUL,
#: unicode line separators, TeX control sequences, a very long name
HOSTILE_NAMES = st.one_of(
    st.sampled_from(['x"; system("id"); "', "*/ int pwn; /*", '"""\nimport os\n"""', "a\nb", "a\0b",
                     "a\u2028b", "a\u2029b", "\\input{/etc/passwd}", "\\write18{id}", "\x1b[31mred", "n" * 5000,
                     "9" * 5000, "\u00b2"]),
    st.text(st.sampled_from("\"'*/\\\n\r\0\u2028{}$#%` ;ab"), min_size=1, max_size=40),
)


class _Payload:
    """Unpickling this creates ``marker``: the stand-in for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    """Exit status and stderr of ``symnn ARGV`` run in this process."""
    status = main(list(argv))
    return status, capsys.readouterr().err


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("symnn: error: "), err
    return lines[0]


# -- PyTorch (item 5, U3) -------------------------------------------------------------------------------
def _torch_model():
    import torch

    torch.manual_seed(0)
    nn = torch.nn
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Dropout(0.1), nn.Linear(5, 2), nn.Softmax(dim=-1)).double()


@NEEDS_TORCH
def test_a_pickle_payload_runs_no_code_through_any_entry_point(tmp_path: Path, capsys) -> None:
    import torch

    marker = tmp_path / "pwned"
    torch.save({"0.weight": _Payload(marker)}, tmp_path / "evil.pt")
    spec = tmp_path / "net.toml"
    spec.write_text(sn.dumps_spec(sn.from_torch(_torch_model(), name="net")[0]))
    with pytest.raises(UntrustedInputError, match="unpickling runs any code"):
        sn.load_torch(tmp_path / "evil.pt", sn.load_spec(spec).network)
    status, err = _cli(capsys, "from-torch", str(tmp_path / "evil.pt"), "--spec", str(spec), "--out", str(tmp_path / "c"))
    assert status == 2 and "--trust-pickle" in _one_error_line(err)
    status, err = _cli(capsys, "from-torch", str(tmp_path / "evil.pt"), "--out", str(tmp_path / "c"))
    assert status == 2 and "weights_only=True" in _one_error_line(err)
    assert not marker.exists() and not (tmp_path / "c").exists()


@NEEDS_TORCH
def test_a_pickled_module_is_refused_with_the_way_to_convert_it(tmp_path: Path) -> None:
    import torch

    model = _torch_model()
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(UntrustedInputError) as info:
        sn.load_torch(tmp_path / "whole.pt")
    message = str(info.value)
    assert "torch.save(model.state_dict()" in message and "--spec" in message and "trust_pickle=True" in message
    assert "\n" not in message
    # only the explicit opt-in unpickles, and then the module becomes the same network
    net, params = sn.load_torch(tmp_path / "whole.pt", trust_pickle=True, name="whole")
    ref_net, ref_params = sn.from_torch(model, name="whole")
    assert net == ref_net and all(np.array_equal(params[k], ref_params[k]) for k in ref_params)


@NEEDS_TORCH
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_state_dict_with_a_spec_reproduces_the_model(tmp_path: Path, dtype: str) -> None:
    import torch

    model = _torch_model().eval()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    spec_net = sn.from_torch(model, name="clf")[0]
    net, params = sn.load_torch(tmp_path / "weights.pt", spec_net, dtype=dtype)
    assert net == spec_net and {k: v.dtype for k, v in params.items()} == {k: np.dtype(dtype) for k in params}
    X = np.random.default_rng(0).normal(size=(6, 3))
    got = sn.compile(net, backend="numpy", dtype=dtype).forward(params, X.astype(dtype))
    tol = 1e-13 if dtype == "float64" else 1e-5  # float32 weights: a few roundings of 5-term sums
    np.testing.assert_allclose(got, model(torch.tensor(X)).detach().numpy(), rtol=tol, atol=tol)
    # the inverse of to_state_dict
    back = sn.from_torch_state_dict(sn.to_state_dict(net, params), net, dtype=dtype)
    assert all(np.array_equal(back[k], params[k]) for k in params)
    # --name renames the spec's network
    assert sn.load_torch(tmp_path / "weights.pt", spec_net, name="other")[0].name == "other"


@NEEDS_TORCH
def test_state_dicts_that_do_not_fit_the_spec_are_refused(tmp_path: Path) -> None:
    import torch

    model = _torch_model()
    net = sn.from_torch(model, name="clf")[0]
    good = model.state_dict()
    cases = {
        "transposed weight": ({**good, "0.weight": good["0.weight"].T}, r"'0\.weight' has shape \(3, 5\)"),
        "extra layer": ({**good, "5.weight": torch.zeros(2, 2)}, "holds 3 Linear layer"),
        "BatchNorm buffer": ({**good, "4.running_mean": torch.zeros(2)}, "'4.running_mean'"),
        "integer weights": ({**good, "3.bias": torch.zeros(2, dtype=torch.int64)}, "torch.int64"),
        "complex weights": ({**good, "3.bias": torch.zeros(2, dtype=torch.complex128)}, "complex128"),
        "NaN": ({**good, "3.bias": torch.tensor([0.0, float("nan")])}, "'3.bias': 1 value"),
        "not a tensor": ({**good, "3.bias": [0.0, 1.0]}, r"'3\.bias' \(list\)"),
        "out of order": ({k: good[k] for k in ["3.weight", "3.bias", "0.weight", "0.bias"]}, "increasing"),
        "nested checkpoint": ({"model": good, "epoch": 3}, "entry 'model'"),
    }
    for what, (state, pattern) in cases.items():
        with pytest.raises(ModelFormatError, match=pattern):
            sn.from_torch_state_dict(state, net)
        torch.save(state, tmp_path / "w.pt")
        with pytest.raises(ModelFormatError, match=pattern):
            sn.load_torch(tmp_path / "w.pt", net)
    # float64 weights beyond float32's range do not become inf in a float32 model
    big = {**good, "3.bias": torch.tensor([1e300, 0.0], dtype=torch.float64)}
    with pytest.raises(ModelFormatError, match="not finite in float32"):
        sn.from_torch_state_dict(big, net, dtype="float32")
    torch.save(good, tmp_path / "w.pt")
    with pytest.raises(ConfigError, match="spec"):
        sn.load_torch(tmp_path / "w.pt")
    with pytest.raises(ConfigError, match="loss"):
        sn.load_torch(tmp_path / "w.pt", net, loss="mse")


@NEEDS_TORCH
def test_damaged_torch_files_and_export_archives_are_clear_errors(tmp_path: Path, capsys) -> None:
    import torch

    model = _torch_model()
    net = sn.from_torch(model, name="clf")[0]
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    data = buffer.getvalue()
    for i, blob in enumerate([b"", b"not a torch file", data[: len(data) // 2], data[:-30]]):
        (tmp_path / f"{i}.pt").write_bytes(blob)
        with pytest.raises((ModelFormatError, UntrustedInputError)):
            sn.load_torch(tmp_path / f"{i}.pt", net)
        status, err = _cli(capsys, "from-torch", str(tmp_path / f"{i}.pt"), "--out", str(tmp_path / "c"))
        assert status == 2 and _one_error_line(err)
    # a torch.export archive: refused before torch's loader (which unpickles) can open it
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(tmp_path / "prog.pt2", "w") as archive:
        archive.writestr("prog/archive_format", "pt2")
        archive.writestr("prog/data/constants/custom_obj_0", pickle.dumps(_Payload(marker)))
    with pytest.raises(UntrustedInputError, match=r"torch\.export program"):
        sn.load_torch(tmp_path / "prog.pt2", net)
    status, err = _cli(capsys, "from-torch", str(tmp_path / "prog.pt2"), "--trust-pickle", "--out", str(tmp_path / "c"))
    assert status == 2 and "state_dict" in _one_error_line(err)
    assert not marker.exists() and not (tmp_path / "c").exists()


@NEEDS_TORCH
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=HOSTILE_NAMES)
def test_hostile_state_dict_keys_give_one_line_errors(key: str) -> None:
    import torch

    model = _torch_model()
    net = sn.from_torch(model, name="clf")[0]
    good = model.state_dict()
    extra = {**good, key: torch.zeros(1)}  # a key that is no Linear weight
    renamed = {"0.weight": good["0.weight"], "0.bias": good["0.bias"], f"{key}.weight": good["3.weight"],
               f"{key}.bias": torch.full((2,), float("nan"), dtype=torch.float64)}  # a module named by the file
    for state in (extra, renamed):
        with pytest.raises(ModelFormatError) as info:
            sn.from_torch_state_dict(state, net)
        message = str(info.value)
        assert message.isascii() and "\n" not in message and len(message) < 400


# -- ONNX (item 9, U4) ----------------------------------------------------------------------------------
def _gemm_model(w: np.ndarray, b: np.ndarray | None, *, graph_name: str = "g", node_name: str = "",
                act: str = "Sigmoid"):
    """x (N, 3) -> Gemm(transB=1) with weight ``w`` and bias ``b`` -> ``act``."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    nodes = [helper.make_node("Gemm", ["x", "w"] + (["b"] if b is not None else []), ["z"], transB=1, name=node_name),
             helper.make_node(act, ["z"], ["y"])]
    graph = helper.make_graph(nodes, graph_name, [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@NEEDS_ONNX
@pytest.mark.parametrize("w, b, pattern", [
    (np.ones((1, 3, 2)), np.ones(1), r"dims \[1, 3, 2\].*exactly 2"),       # item 9: a 3-D Gemm weight
    (np.ones((1, 3)), np.ones(7), r"bias of shape \(7,\) does not broadcast"),  # item 9: a wrong-size bias
    (np.ones((2, 4)), np.ones(2), "3 features; the first layer takes 4"),  # against the declared input
    (np.full((1, 3), np.nan), np.ones(1), "W1: 3 value"),
], ids=["3d-weight", "bias-size", "input-width", "nan-weight"])
def test_onnx_shapes_are_checked_before_anything_is_written(tmp_path: Path, capsys, w, b, pattern) -> None:
    import onnx

    onnx.save(_gemm_model(w, b), tmp_path / "m.onnx")
    with pytest.raises((ModelFormatError, SpecError), match=pattern):
        sn.from_onnx(tmp_path / "m.onnx")
    status, err = _cli(capsys, "from-onnx", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "c"))
    assert status == 2 and _one_error_line(err)
    assert not (tmp_path / "c").exists()


@NEEDS_ONNX
def test_onnx_dims_that_claim_more_than_the_file_holds_allocate_nothing(tmp_path: Path) -> None:
    from onnx import TensorProto

    import onnx

    model = _gemm_model(np.ones((1, 3)), np.ones(1))
    claims = [  # onnx.helper.make_tensor itself refuses these: a hostile file is written by hand
        TensorProto(name="w", data_type=TensorProto.DOUBLE, dims=[10**6, 10**6], raw_data=b"\0" * 24),  # 8 TB
        TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[10**6, 10**6], float_data=[1.0, 2.0, 3.0]),
        TensorProto(name="w", data_type=TensorProto.DOUBLE, dims=[2**40, 2**30]),
        TensorProto(name="w", data_type=TensorProto.DOUBLE, dims=[-1, 3], raw_data=b"\0" * 24),
    ]
    for tensor in claims:
        model.graph.initializer[0].CopyFrom(tensor)
        onnx.save(model, tmp_path / "m.onnx")
        tracemalloc.start()
        try:
            with pytest.raises(ModelFormatError, match="dims"):
                sn.from_onnx(tmp_path / "m.onnx")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 5_000_000, peak  # the file and the protobuf, never the claimed size


def _external_model(folder: Path, location: str):
    """The 3-4-2 seed model of fuzz_onnx with its weights moved to external data at
    ``location`` (relative to ``folder``), whose bytes are written there when it is inside."""
    from onnx import TensorProto

    import onnx

    spec = importlib.util.spec_from_file_location("fuzz_onnx", ROOT / "fuzz" / "fuzz_onnx.py")
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    model = fuzz.seed_models()[0]
    offset, blob = 0, b""
    for tensor in model.graph.initializer:
        data = tensor.raw_data
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(data)))):
            tensor.external_data.add(key=key, value=value)
        offset, blob = offset + len(data), blob + data
    onnx.save(model, folder / "model.onnx")
    return model, blob


@NEEDS_ONNX
def test_onnx_external_data_is_read_only_inside_the_model_folder(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    # inside the folder: read, and equal to the same model with embedded weights
    inline, blob = _external_model(model_dir, "weights.bin")
    (model_dir / "weights.bin").write_bytes(blob)
    net, params = sn.from_onnx(model_dir / "model.onnx")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(blob)  # a file the model must not reach, holding data that would fit
    refused = {
        "../secret.bin": "not a plain relative path",
        str(secret): "not a plain relative path",
        "sub/../../secret.bin": "not a plain relative path",
        "link.bin": "symbolic link",
        "linkdir/secret.bin": "symbolic link",
        "fifo.bin": "not a regular file",
    }
    (model_dir / "link.bin").symlink_to(secret)
    (model_dir / "linkdir").symlink_to(tmp_path)
    os.mkfifo(model_dir / "fifo.bin")  # opening it for reading must not wait for a writer
    for location, pattern in refused.items():
        _external_model(model_dir, location)
        with pytest.raises((UntrustedInputError, ModelFormatError), match=pattern):
            sn.from_onnx(model_dir / "model.onnx")
    # a model in memory has no folder to read from
    model, _ = _external_model(model_dir, "weights.bin")
    with pytest.raises(UntrustedInputError, match="external file"):
        sn.from_onnx(model)
    _external_model(model_dir, "weights.bin")
    (model_dir / "weights.bin").write_bytes(blob[:-8])  # one value short
    with pytest.raises(ModelFormatError, match="regular file holding"):
        sn.from_onnx(model_dir / "model.onnx")
    assert net.layers[0].in_features == 3 and params["W1"].shape == (4, 3)


@NEEDS_ONNX
def test_onnx_nodes_are_checked_against_their_op_spec() -> None:
    from onnx import AttributeProto, helper

    def gemm():
        return _gemm_model(np.ones((1, 3)), np.ones(1))

    model = gemm()
    model.graph.node[0].attribute[0].CopyFrom(helper.make_attribute("transB", "1"))  # a string, not an int
    with pytest.raises(ModelFormatError, match="'transB' must be given once, as one integer"):
        sn.from_onnx(model)
    model = gemm()
    model.graph.node[0].attribute.append(helper.make_attribute("transB", 0))  # given twice
    with pytest.raises(ModelFormatError, match="once"):
        sn.from_onnx(model)
    model = gemm()
    model.graph.node[0].attribute.append(AttributeProto(name="then_branch", type=AttributeProto.GRAPH))
    with pytest.raises(SpecTypeError, match="'then_branch' is not one Gemm takes"):
        sn.from_onnx(model)
    model = gemm()
    model.graph.node[0].domain = "com.example"  # a custom op that only shares the name
    with pytest.raises(SpecTypeError, match="domain 'com.example'"):
        sn.from_onnx(model)
    model = gemm()
    del model.graph.node[1].input[:]
    with pytest.raises(ModelFormatError, match="0 inputs; Sigmoid takes 1"):
        sn.from_onnx(model)
    model = gemm()
    model.graph.node[1].output.append("extra")
    with pytest.raises(ModelFormatError, match="2 outputs"):
        sn.from_onnx(model)
    model = gemm()
    model.graph.output[0].name = "z"  # the graph's declared output skips the activation
    with pytest.raises(SpecError, match="output must be the last node's"):
        sn.from_onnx(model)
    model = gemm()
    model.graph.initializer[0].data_type = 7  # INT64
    with pytest.raises(SpecTypeError, match="element type 7"):
        sn.from_onnx(model)
    model = gemm()
    model.graph.initializer.append(model.graph.initializer[0])
    with pytest.raises(ModelFormatError, match="defined twice"):
        sn.from_onnx(model)


@NEEDS_ONNX
def test_onnx_float16_weights_in_their_int32_field() -> None:
    """FLOAT16 values kept as bits in ``int32_data`` are read exactly; bits beyond 16 are refused
    (NumPy's uint16 conversion would have raised a bare OverflowError)."""
    from onnx import TensorProto

    model = _gemm_model(np.ones((1, 3)), np.ones(1))
    half = np.array([0.333], dtype=np.float16)
    bias = TensorProto(name="b", data_type=TensorProto.FLOAT16, dims=[1], int32_data=[int(half.view(np.uint16)[0])])
    model.graph.initializer[1].CopyFrom(bias)
    assert sn.from_onnx(model)[1]["b1"][0] == float(half[0])
    bias.int32_data[0] = 70000
    model.graph.initializer[1].CopyFrom(bias)
    with pytest.raises(ModelFormatError, match="16 bits"):
        sn.from_onnx(model)


@NEEDS_ONNX
def test_malformed_onnx_bytes_are_a_model_format_error(tmp_path: Path, capsys) -> None:
    import onnx

    good = _gemm_model(np.ones((1, 3)), np.ones(1)).SerializeToString()
    for i, blob in enumerate([b"garbage", good[:-7], b"\xff" * 64, b"\x0a" + b"\x8f" * 12]):
        (tmp_path / f"{i}.onnx").write_bytes(blob)
        with pytest.raises(SymnnError):
            sn.from_onnx(tmp_path / f"{i}.onnx")
        status, err = _cli(capsys, "from-onnx", str(tmp_path / f"{i}.onnx"), "--out", str(tmp_path / "c"))
        assert status == 2 and _one_error_line(err)
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    with pytest.raises(ModelFormatError, match="not an ONNX model"):
        sn.from_onnx(tmp_path / "bad.onnx")
    assert not (tmp_path / "c").exists()
    assert onnx  # imported for the skip marker's sake


#: the emission of the name-free model, which every example of the test below compares with
_PLAIN_EMISSION: dict[str, dict[str, str]] = {}


@NEEDS_ONNX
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=HOSTILE_NAMES)
def test_hostile_onnx_names_never_reach_emitted_code(tmp_path_factory, name: str) -> None:
    """Graph and node names from the file are never printed into the emitted files (the
    network's name is ``name=``); an unsupported node's error quotes its name on one line."""
    model = _gemm_model(np.ones((1, 3)), np.ones(1), graph_name=name, node_name=name)
    net, params = sn.from_onnx(model, name="imported")
    plain = _gemm_model(np.ones((1, 3)), np.ones(1))
    assert net == sn.from_onnx(plain, name="imported")[0]
    if "plain" not in _PLAIN_EMISSION:  # the same for every example: emitted once
        _PLAIN_EMISSION["plain"] = _emitted(sn.from_onnx(plain, name="imported")[0], tmp_path_factory.mktemp("emit"))
    assert _emitted(net, tmp_path_factory.mktemp("emit")) == _PLAIN_EMISSION["plain"]
    model.graph.node[1].op_type = "HardSigmoid"
    with pytest.raises(SpecTypeError) as info:
        sn.from_onnx(model)
    message = str(info.value)
    assert message.isascii() and "\n" not in message and len(message) < 400
    if not name.isascii() or not name.isidentifier():
        with pytest.raises(SymnnError):
            sn.from_onnx(plain, name=name)  # as the network's name it must be a plain identifier


def _emitted(net: sn.Network, out: Path) -> dict[str, str]:
    """Every file of the C and NumPy emission of ``net``, by name."""
    return {Path(p).name: Path(p).read_text() for p in sn.emit(net, out, backend="c") + sn.emit(net, out, backend="numpy")}


@NEEDS_ONNX
def test_onnx_fuzz_short_run() -> None:
    """A seeded run of fuzz/fuzz_onnx.py: mutated bytes and protobuf fields of small ONNX
    MLPs, external data and hostile names included; only SymnnError may escape."""
    spec = importlib.util.spec_from_file_location("fuzz_onnx", ROOT / "fuzz" / "fuzz_onnx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    crashes = module.run(400, seed=3)
    assert not crashes, [(t[:80], repr(e)) for t, e in crashes[:5]]
