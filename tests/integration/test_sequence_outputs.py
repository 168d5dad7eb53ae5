"""Sequence outputs: a label or a value for every step (issue 23 item 1, "output the whole
sequence or the last state", as a network output: sequence tagging).

A recurrent layer's ``return_sequences=True`` read by layers that act on the last axis (Dense,
LayerNorm, a softmax: torch.nn's modules on (N, T, F)) makes an output (T, K) per sample. Its
loss is the loss of every step's K entries averaged over the N*T steps: PyTorch's loss of the
(N*T, K) rows. Held to PyTorch autograd in both backends and dtypes (float64 1e-10 relative: a
few hundred roundings per entry at u = 2**-53; float32 1e-5), imported from PyTorch and ONNX,
for a run-time length T too (NumPy), through the printed derivation, ``sn.train``, the TOML spec,
the CLI and the emitted C trainer reading one label per step."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import symnn as sn
from symnn import datasets
from symnn.cli import main
from symnn.errors import DataError, LabelRangeError, ShapeError, SpecError

torch = pytest.importorskip("torch")

from tests.layer_graphs import rel  # noqa: E402

nn = torch.nn
ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["numpy", pytest.param("c", marks=pytest.mark.needs_cc)]
V, E, H, K, T, N = 9, 4, 6, 3, 5, 7
TOL = {"float64": 1e-10, "float32": 1e-5}


class Tagger(nn.Module):
    """Token ids -> Embedding -> LSTM (every step) -> LayerNorm -> Linear -> softmax per step."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H, batch_first=True)
        self.norm = nn.LayerNorm(H)
        self.fc = nn.Linear(H, K)

    def forward(self, x):
        out, _ = self.lstm(self.emb(x))
        return torch.softmax(self.fc(self.norm(out)), dim=-1)


def _tagger() -> Tagger:
    torch.manual_seed(0)
    module = Tagger().double()
    with torch.no_grad():  # a LayerNorm away from its start, so its weight and bias matter
        module.norm.weight.uniform_(0.5, 1.5)
        module.norm.bias.uniform_(-0.5, 0.5)
    return module


def _autograd(module: nn.Module, ids: np.ndarray, labels: np.ndarray) -> tuple[float, dict, np.ndarray]:
    module.zero_grad()
    probs = module(torch.from_numpy(ids))
    loss = nn.functional.nll_loss(torch.log(probs).reshape(-1, K), torch.from_numpy(labels).reshape(-1))
    loss.backward()
    return float(loss), {k: p.grad.numpy() for k, p in module.named_parameters()}, probs.detach().numpy()


def _data(seed: int = 1, length: int = T) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, size=(N, length)), rng.integers(0, K, size=(N, length))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_tagger_from_torch_matches_autograd(backend: str, dtype: str) -> None:
    """``sn.from_torch`` of the tagger: output (N, T, K), the mean loss over N*T steps and every
    gradient (mapped back to the state_dict's keys) as PyTorch computes them."""
    module = _tagger()
    net, params = sn.from_torch(module, input_shape=(T,), loss="cross_entropy")
    assert net.output_shapes == ((T, K),) and net.output_steps == (T,)
    ids, labels = _data()
    loss_ref, grads_ref, out_ref = _autograd(module, ids, labels)
    k = sn.compile(net, backend=backend, dtype=dtype)
    p = {name: v.astype(dtype) for name, v in params.items()}
    out = k.forward(p, ids.astype(dtype))
    assert out.shape == (N, T, K)
    loss, grads = k.loss_and_grad(p, ids.astype(dtype), labels)
    tol = TOL[dtype]
    assert rel(out, out_ref) <= tol
    assert abs(loss - loss_ref) <= tol * abs(loss_ref)
    mapped = sn.to_state_dict(net, grads)
    for name, g in grads_ref.items():
        assert rel(np.asarray(mapped[name]), g) <= (tol if name != "emb.weight" else 10 * tol), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_step_regression_from_a_bidirectional_gru(backend: str) -> None:
    """A value per step (MSE over every entry of (N, T, 2), PyTorch's mean) from a
    bidirectional, 2-layer GRU's sequence: loss and gradients as autograd's."""
    x = sn.Input(T, 3, name="x")
    h = sn.GRU(3, 4, num_layers=2, bidirectional=True, return_sequences=True, name="gru")(x)
    net = sn.Network(inputs=x, outputs=sn.Dense(8, 2, "tanh", name="fc")(h), loss="mse", name="per_step")
    params = net.init_params(seed=3)
    gru = nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    fc = nn.Linear(8, 2).double()
    with torch.no_grad():
        for name, p in [*(("gru." + n, p) for n, p in gru.named_parameters()),
                        *(("fc." + n, p) for n, p in fc.named_parameters())]:
            p.copy_(torch.from_numpy(params[name]))
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(N, T, 3)), rng.normal(size=(N, T, 2))
    out = torch.tanh(fc(gru(torch.from_numpy(X))[0]))
    loss_ref = nn.functional.mse_loss(out, torch.from_numpy(Y))
    loss_ref.backward()
    k = sn.compile(net, backend=backend)
    loss, grads = k.loss_and_grad(params, X, Y)
    assert abs(loss - float(loss_ref)) <= 1e-12 * float(loss_ref)
    for name, p in [*(("gru." + n, p) for n, p in gru.named_parameters()),
                    *(("fc." + n, p) for n, p in fc.named_parameters())]:
        assert rel(grads[name], p.grad.numpy()) <= 1e-10, name
    assert k.loss(params, X.reshape(N, -1), Y.reshape(N, -1)) == pytest.approx(loss, rel=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_targets_are_labels_one_hot_or_rows_and_bad_ones_are_named(backend: str) -> None:
    """Labels (N, T), one-hot (N, T, K) and its rows (N, T*K) give one loss; a label out of
    range names its sample and step; a step's row that sums to neither 1 nor 0 is refused,
    though the sample's whole row sums to 1 (the C fast path checks each step's K entries, then
    defers to the full checks)."""
    net, params = sn.from_torch(_tagger(), input_shape=(T,), loss="cross_entropy")
    k = sn.compile(net, backend=backend)
    ids, labels = _data()
    X = ids.astype(np.float64)
    onehot = np.eye(K)[labels]
    losses = {k.loss(params, X, Y) for Y in (labels, onehot, onehot.reshape(N, -1))}
    assert len(losses) == 1
    bad = labels.copy()
    bad[2, 3] = K
    with pytest.raises(LabelRangeError, match="sample 2, step 3"):
        k.loss(params, X, bad)
    with pytest.raises(ShapeError, match=rf"\({N}, {T}, {K}\) or \({N}, {T * K}\) or integer labels \({N}, {T}\)"):
        k.loss(params, X, onehot[:, :-1])
    spread = np.zeros((N, T * K))
    spread[:, 0] = spread[:, K] = 0.5  # each sample's row sums to 1, its first two steps to 0.5
    with pytest.raises(DataError):
        k.loss_and_grad(params, X, spread)


@pytest.mark.parametrize("backend", BACKENDS)
def test_padded_steps_are_left_out_as_pytorch_ignore_index(backend: str) -> None:
    """Sequences of several lengths padded to T with a mask (``masked=True``), the padded steps'
    labels -100: the loss is the mean over the labelled steps and every gradient is PyTorch's
    for ``pack_padded_sequence`` and ``cross_entropy(..., ignore_index=-100)``; rows of zero
    targets say the same; ``accuracy`` counts labelled steps only; a batch of padding only is a
    DataError (0/0), in C too."""
    x, m = sn.Input(T, 3, name="x"), sn.Input(T, name="m")
    h = sn.LSTM(3, H, return_sequences=True, masked=True, name="lstm")(x, m)
    net = sn.Network(inputs=[x, m], outputs=sn.Dense(H, K, "softmax", name="fc")(h), loss="cross_entropy",
                     name="padded_tagger")
    params = net.init_params(seed=2)
    rng = np.random.default_rng(6)
    X, lengths = rng.normal(size=(N, T, 3)), np.array([5, 3, 1, 4, 2, 5, 1])
    M = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float64)
    labels = rng.integers(0, K, size=(N, T))
    labels[M == 0] = -100
    lstm, fc = nn.LSTM(3, H, batch_first=True).double(), nn.Linear(H, K).double()
    modules = {"lstm": lstm, "fc": fc}
    with torch.no_grad():
        for prefix, module in modules.items():
            for name, p in module.named_parameters():
                p.copy_(torch.from_numpy(params[f"{prefix}.{name}"]))
    packed = nn.utils.rnn.pack_padded_sequence(torch.from_numpy(X), torch.from_numpy(lengths), batch_first=True,
                                               enforce_sorted=False)
    out, _ = nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=T)
    loss_ref = nn.functional.cross_entropy(fc(out).reshape(-1, K), torch.from_numpy(labels).reshape(-1),
                                           ignore_index=-100)
    loss_ref.backward()
    k = sn.compile(net, backend=backend)
    data = {"x": X, "m": M}
    loss, grads = k.loss_and_grad(params, data, labels)
    assert abs(loss - float(loss_ref)) <= 1e-12 * float(loss_ref)
    for prefix, module in modules.items():
        for name, p in module.named_parameters():
            assert rel(grads[f"{prefix}.{name}"], p.grad.numpy()) <= 1e-10, (prefix, name)
    onehot = np.zeros((N, T, K))
    rows, steps = np.nonzero(M)
    onehot[rows, steps, labels[rows, steps]] = 1
    assert k.loss(params, data, onehot) == pytest.approx(loss, rel=1e-15)
    with pytest.raises(DataError, match="every step is padding"):
        k.loss(params, data, np.full((N, T), -100))
    with pytest.raises(DataError, match="every step is padding"):
        k.loss_and_grad(params, data, np.zeros((N, T, K)))
    with pytest.raises(LabelRangeError, match=r"or -100 for a padded step"):
        k.loss(params, data, np.where(M == 0, -1, labels))
    predicted = k.forward(params, data).argmax(axis=-1)
    result = sn.train(net, data, labels, epochs=1, backend=backend)
    result.params = params
    assert result.accuracy(data, labels) == pytest.approx((predicted == labels)[M == 1].mean())


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_tags_every_step_of_the_digits(backend: str) -> None:
    """examples/lstm_tagger.toml: the digits read row by row, every step labelled with the
    digit; after training, the held-out accuracy per step grows with the rows read and the last
    steps' passes 0.6 (chance 0.1); ``predict`` gives (N, T) labels."""
    net = sn.load_spec(ROOT / "examples" / "lstm_tagger.toml").network
    X, y = datasets.load_digits()
    X = X / 16.0
    Y = np.repeat(y[:, None], 8, axis=1)
    result = sn.train(net, X[:1000], Y[:1000], epochs=10, batch_size=32, optimizer=sn.Adam(lr=0.01),
                      backend=backend, seed=0)
    predicted = result.predict(X[1000:1400])
    assert predicted.shape == (400, 8)
    per_step = (predicted == Y[1000:1400]).mean(axis=0)
    assert per_step[-2:].min() > 0.6 and per_step[-1] > per_step[0] + 0.2, per_step
    assert result.accuracy(X[1000:1400], Y[1000:1400]) == pytest.approx(per_step.mean())


def test_the_derivation_evaluates_to_the_kernel_at_a_run_time_length() -> None:
    """``sn.Input(None, E)``: one kernel tags sequences of any T, as autograd does (NumPy; C the
    same to rounding), and the printed derivation (its loss over the N*T steps) evaluates to the
    kernel's numbers."""
    module = _tagger()
    ids = sn.Input(None, indices=True, name="x")
    h = sn.LSTM(E, H, return_sequences=True, name="lstm")(sn.Embedding(V, E, name="emb")(ids))
    tags = sn.Dense(H, K, "softmax", name="fc")(sn.LayerNorm(H, name="norm")(h))
    net = sn.Network(inputs=ids, outputs=tags, loss="cross_entropy", name="tagger_any")
    params = {f"{name}": p.detach().numpy().copy() for name, p in module.named_parameters()}
    k = sn.compile(net)
    c = sn.compile(net, backend="c") if shutil.which("gcc") or shutil.which("cc") else None
    derivation = sn.derive(net)
    for length in (1, 4, 9):
        X, labels = _data(length, length)
        loss_ref, grads_ref, out_ref = _autograd(module, X, labels)
        assert k.forward(params, X).shape == (N, length, K)
        assert rel(k.forward(params, X), out_ref) <= 1e-12
        loss, grads = k.loss_and_grad(params, X, labels)
        assert abs(loss - loss_ref) <= 1e-12 * loss_ref
        for name, g in grads_ref.items():
            assert rel(grads[name], g) <= 1e-10, name
        if c is not None:  # the C kernels take the length too: the same numbers to rounding
            c_loss, c_grads = c.loss_and_grad(params, X, labels)
            assert abs(c_loss - loss) <= 1e-13 * loss
            assert all(rel(c_grads[name], grads[name]) <= 1e-12 for name in grads)
        printed_loss, printed_grads = derivation.evaluate(params, X, labels)
        assert abs(printed_loss - loss) <= 1e-13 * loss
        assert all(rel(printed_grads[name], grads[name]) <= 1e-12 for name in grads)
    with pytest.raises(ShapeError):  # labels of another length than X's
        k.loss(params, X, labels[:, :-1])


def test_imported_from_onnx() -> None:
    """An ONNX export of a tagger (LayerNormalization, MatMul and Add on (N, T, H), Softmax on
    axis -1): the module's outputs (to 1e-9: ONNX stores LayerNorm's epsilon as a float32,
    1e-5 * (1 - 2.5e-9), which moves each output by ~1e-12)."""
    pytest.importorskip("onnx")
    import io

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = nn.GRU(3, H, batch_first=True)
            self.norm = nn.LayerNorm(H)
            self.fc = nn.Linear(H, K)

        def forward(self, x):
            return torch.softmax(self.fc(self.norm(self.gru(x)[0])), dim=-1)

    torch.manual_seed(2)
    module = Plain().double()
    X = np.random.default_rng(5).normal(size=(N, T, 3))
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.from_numpy(X),), buf, input_names=["x"], output_names=["y"], dynamo=False)
    import onnx

    net, params = sn.from_onnx(onnx.load_from_string(buf.getvalue()), loss="cross_entropy")
    assert net.output_shapes == ((T, K),)
    k = sn.compile(net)
    assert rel(k.forward(params, X), module(torch.from_numpy(X)).detach().numpy()) <= 1e-9
    assert {"norm.weight", "norm.bias"} <= set(params)


def test_an_output_of_images_is_still_refused() -> None:
    x = sn.Input(1, 4, 4)
    y = sn.Conv2d(1, 2, 3, padding=1)(x)
    with pytest.raises(SpecError, match=r"\(T, K\)"):
        sn.Network(inputs=x, outputs=y, loss="mse")


def _tagged_csv(path: Path, rows: int) -> None:
    """The digits row by row, each step labelled with the digit; every fourth sample's last three
    steps are padding (label -100)."""
    X, y = datasets.load_digits()
    labels = np.repeat(y[:rows, None], 8, axis=1)
    labels[::4, 5:] = -100
    table = np.hstack([X[:rows] / 16.0, labels])
    path.write_text("".join(",".join(repr(float(v)) for v in r) + "\n" for r in table))


def test_cli_trains_the_tagger_spec_from_a_label_per_step(tmp_path: Path, capsys) -> None:
    """``symnn train`` reads 64 pixels then 8 labels a row; a label out of range names its
    line and step."""
    csv = tmp_path / "tagged.csv"
    _tagged_csv(csv, 200)
    spec = str(ROOT / "examples" / "lstm_tagger.toml")
    assert main(["train", spec, "--data", str(csv), "--backend", "numpy", "--epochs", "2"]) == 0
    assert "training accuracy" in capsys.readouterr().out
    lines = csv.read_text().splitlines()
    fields = lines[4].split(",")
    fields[64 + 5] = "10"
    lines[4] = ",".join(fields)
    csv.write_text("\n".join(lines) + "\n")
    assert main(["train", spec, "--data", str(csv), "--backend", "numpy", "--epochs", "1"]) != 0
    assert "line 5, step 5" in capsys.readouterr().err


@pytest.mark.needs_cc
@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_the_c_trainer_reads_a_label_per_step(tmp_path: Path) -> None:
    """The emitted train_main.c, no Python: one label per step read into one-hot rows, the loss
    falls and the per-step accuracy passes chance; a bad label stops it naming line and step."""
    ship = tmp_path / "c"
    assert main(["emit", str(ROOT / "examples" / "lstm_tagger.toml"), "--backend", "c", "--with-train-step",
                 "--out", str(ship)]) == 0
    built = subprocess.run(["make", "-C", str(ship), "lstm_tagger_train"], capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr
    csv = tmp_path / "tagged.csv"
    _tagged_csv(csv, 400)
    trained = tmp_path / "trained.bin"
    out = subprocess.run([str(ship / "lstm_tagger_train"), str(csv), "6", str(trained)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    losses = [float(line.split()[3]) for line in out.stdout.splitlines() if line.startswith("epoch ")]
    accuracy = float(out.stdout.split("accuracy")[1])
    assert losses[-1] < 0.8 * losses[0] and accuracy > 0.3, out.stdout
    # the demo program reads the same rows (a label per step, -100 padding) and the trained
    # parameters: its loss is the Python kernel's on them
    built = subprocess.run(["make", "-C", str(ship), "lstm_tagger_demo"], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    demo = subprocess.run([str(ship / "lstm_tagger_demo"), str(trained)], stdin=csv.open(), capture_output=True,
                          text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    printed = float(next(line for line in demo.stdout.splitlines() if line.startswith("loss ")).split()[1])
    net = sn.load_spec(ROOT / "examples" / "lstm_tagger.toml").network
    table = np.loadtxt(csv, delimiter=",")
    params = sn.compile(net).unpack(np.fromfile(trained, dtype=np.float64))
    expected = sn.compile(net).loss(params, table[:, :64], table[:, 64:])
    assert abs(printed - expected) <= 1e-12 * expected
    lines = csv.read_text().splitlines()
    fields = lines[2].split(",")
    fields[64 + 7] = "2.5"
    lines[2] = ",".join(fields)
    csv.write_text("\n".join(lines) + "\n")
    bad = subprocess.run([str(ship / "lstm_tagger_train"), str(csv), "1"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "line 3, step 7" in bad.stderr


class _Joined(nn.Module):
    """Token embeddings beside per-step features (``torch.cat(dim=-1)``), two per-step Linears
    joined (``dim=2``), a GRU over the result."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        self.emb, self.a, self.b = nn.Embedding(V, 3), nn.Linear(5, 2), nn.Linear(5, 3)
        self.gru, self.fc, self.dim = nn.GRU(5, H, batch_first=True), nn.Linear(H, 2), dim

    def forward(self, ids, x):
        h = torch.cat((self.emb(ids), x), dim=-1)
        h = torch.cat((torch.tanh(self.a(h)), self.b(h)), dim=self.dim)
        return self.fc(self.gru(h)[0][:, -1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_concat_joins_sequences_step_by_step(backend: str) -> None:
    """``torch.cat`` along the features of sequences (N, T, F) (``dim=-1`` or ``2``): each step's
    features side by side, as PyTorch's; output and every gradient as autograd's. Along another
    axis (``dim=1``: time) it is refused, naming it; so are sequences of two lengths."""
    torch.manual_seed(3)
    module = _Joined().double()
    net, params = sn.from_torch(module, input_shapes=[(T,), (T, 2)], loss="mse")
    rng = np.random.default_rng(8)
    ids, x, Y = rng.integers(0, V, size=(N, T)), rng.normal(size=(N, T, 2)), rng.normal(size=(N, 2))
    data = dict(zip(net.input_names, (ids.astype(np.float64), x)))
    k = sn.compile(net, backend=backend)
    out = module(torch.from_numpy(ids), torch.from_numpy(x))
    nn.functional.mse_loss(out, torch.from_numpy(Y)).backward()
    assert rel(k.forward(params, data), out.detach().numpy()) <= 1e-12
    grads = sn.to_state_dict(net, k.loss_and_grad(params, data, Y)[1])
    for name, p in module.named_parameters():
        assert rel(np.asarray(grads[name]), p.grad.numpy()) <= 1e-10, name
    with pytest.raises(SpecError, match="dim=1"):
        sn.from_torch(_Joined(dim=1).double(), input_shapes=[(T,), (T, 2)], loss="mse")
    with pytest.raises(sn.errors.LayerSizeMismatchError):
        sn.concat([sn.Input(T, 2), sn.Input(T + 1, 2)])


def test_onnx_concat_of_sequences() -> None:
    """ONNX ``Concat(axis=2)`` of two per-step MatMuls of the input sequence, read by a GRU."""
    pytest.importorskip("onnx")
    import io

    import onnx

    class Both(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(2, 3), nn.Linear(2, 2)
            self.gru, self.fc = nn.GRU(5, H, batch_first=True), nn.Linear(H, 2)

        def forward(self, x):
            h = torch.cat((torch.tanh(self.a(x)), self.b(x)), dim=2)
            return self.fc(self.gru(h)[0][:, -1])

    torch.manual_seed(4)
    module = Both().double()
    X = np.random.default_rng(9).normal(size=(N, T, 2))
    buf = io.BytesIO()
    torch.onnx.export(module, (torch.from_numpy(X),), buf, input_names=["x"], dynamo=False)
    net, params = sn.from_onnx(onnx.load_from_string(buf.getvalue()))
    assert rel(sn.compile(net).forward(params, X), module(torch.from_numpy(X)).detach().numpy()) <= 1e-12
