"""``sn.from_onnx`` of an encoder's final state handed to a decoder (issue 23, item 4): what
``torch.onnx.export`` writes for ``_, h = enc(x); out, _ = dec(y, h)``, two data inputs (the
source and target sequences) and the decoder's ``initial_h`` being the encoder's ``Y_h``. The
encoder's layer then returns its last state, which starts the decoder's layer, as ``sn.from_torch``
reads the module. Held to the module: the forward output and, through ``loss_and_grad``, the
loss and every gradient against autograd (float64, 1e-10 relative: two recurrences of a few
steps, a few hundred roundings at u = 2**-53), the forward against ONNX's reference evaluator of
the file, the emitted C against NumPy (1e-14). An LSTM's state (Y_h with Y_c), a bidirectional
encoder's, or a state read by a decoder that is an LSTM is refused naming the node.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

import symnn as sn
from symnn.errors import SpecError

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
from onnx.reference import ReferenceEvaluator  # noqa: E402

from tests.layer_graphs import ready, rel  # noqa: E402

nn = torch.nn
N, S, T, F, G, H, K = 6, 5, 4, 3, 2, 4, 3  # samples, source and target steps, their features, hidden, outputs
RNG = np.random.default_rng(8)
X, Y_IN = RNG.normal(size=(N, S, F)), RNG.normal(size=(N, T, G))
TARGETS = RNG.normal(size=(N, T, K))


class EncoderDecoder(nn.Module):
    """``enc`` reads the source, its final state starts ``dec`` on the target inputs, ``fc``
    maps each step of the decoder."""

    def __init__(self, enc: nn.Module, dec: nn.Module) -> None:
        super().__init__()
        self.enc, self.dec, self.fc = enc, dec, nn.Linear((2 if dec.bidirectional else 1) * H, K)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _, h = self.enc(x)
        out, _ = self.dec(y, h)
        return self.fc(out)


def _exported(module: nn.Module, names: tuple[str, str] = ("src", "tgt")) -> onnx.ModelProto:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.tensor(X), torch.tensor(Y_IN)), f, dynamo=False, opset_version=17,
                          input_names=list(names), output_names=["out"],
                          dynamic_axes={names[0]: {0: "N"}, names[1]: {0: "N"}, "out": {0: "N"}})
    return onnx.load_from_string(f.getvalue())


@pytest.mark.parametrize("enc,dec", [(nn.GRU, nn.GRU), (nn.RNN, nn.GRU), (nn.GRU, nn.RNN)])
def test_an_encoders_state_starts_the_decoder_as_in_the_module(enc, dec) -> None:
    module = ready(EncoderDecoder(enc(F, H, batch_first=True), dec(G, H, batch_first=True)))
    model = _exported(module)
    net, params = sn.from_onnx(model, loss="mse")
    assert net.input_names == ("src", "tgt")
    encoder, decoder = [la for la in net.graph.layers if isinstance(la, (sn.RNN, sn.GRU))]
    assert (encoder.return_sequences, decoder.return_sequences) == (False, True)
    inputs = {"src": X, "tgt": Y_IN}
    kn, kc = sn.compile(net, backend="numpy"), sn.compile(net, backend="c")
    module.zero_grad()
    out = module(torch.tensor(X), torch.tensor(Y_IN))
    torch_loss = ((out - torch.tensor(TARGETS)) ** 2).mean()
    torch_loss.backward()
    assert rel(kn.forward(params, inputs), out.detach().numpy()) <= 1e-10
    if enc is not nn.RNN and dec is not nn.RNN:  # onnx's reference RNN implements Tanh only
        (ref,) = ReferenceEvaluator(model).run(None, inputs)
        assert rel(kn.forward(params, inputs), ref) <= 1e-10
    loss, grads = kn.loss_and_grad(params, inputs, TARGETS)
    assert abs(loss - torch_loss.item()) <= 1e-10 * abs(torch_loss.item())
    torch_grads = {k: p.grad.numpy() for k, p in module.named_parameters()}
    layer_of = {encoder.name: "enc", decoder.name: "dec"}  # the head's weight is exported transposed, unnamed
    for key, g in grads.items():
        layer, _, leaf = key.partition(".")
        assert rel(g, torch_grads[f"{layer_of.get(layer, 'fc')}.{leaf}"]) <= 1e-10, key
    lc, gc = kc.loss_and_grad(params, inputs, TARGETS)
    assert abs(lc - loss) <= 1e-14 * abs(loss)
    assert all(rel(gc[key], grads[key]) <= 1e-14 for key in grads)


def test_two_inputs_with_names_that_are_not_plain_are_keyed_by_position() -> None:
    """Several data inputs are keyed by their ONNX names where those are plain names, else x,
    x1, ... (what a file names an input never reaches code)."""
    module = ready(EncoderDecoder(nn.GRU(F, H, batch_first=True), nn.GRU(G, H, batch_first=True)))
    net, params = sn.from_onnx(_exported(module, ("input.1", "tgt; rm -rf /")), loss="mse")
    assert net.input_names == ("x", "x1")
    with torch.no_grad():
        twin = module(torch.tensor(X), torch.tensor(Y_IN)).numpy()
    assert rel(sn.compile(net, backend="numpy").forward(params, {"x": X, "x1": Y_IN}), twin) <= 1e-10


@pytest.mark.parametrize("enc,dec,match", [
    (lambda: nn.LSTM(F, H, batch_first=True), lambda: nn.LSTM(G, H, batch_first=True), "final cell state Y_c"),
    (lambda: nn.GRU(F, H, batch_first=True, bidirectional=True), lambda: nn.GRU(G, H, batch_first=True,
                                                                                 bidirectional=True),
     "only as the whole Y_h of a one-direction GRU or RNN op"),
])
def test_states_symnns_layers_do_not_return_are_refused_by_name(enc, dec, match) -> None:
    module = ready(EncoderDecoder(enc(), dec()))
    with pytest.raises(SpecError, match=match):
        sn.from_onnx(_exported(module), loss="mse")
