"""Recurrent layers (``torch.nn.RNN``, ``GRU``, ``LSTM`` with ``batch_first=True``) as loops.

Each layer of the stack is two parts. Outside the loop, the inputs' share of every gate for all
T steps at once: one product of the steps stacked as rows (N*T, I) with ``weight_ih`` plus the
biases. Inside, one step of the recurrence (a :class:`symnn.ir.Scan` body), written once as IR:
the carried state's product with ``weight_hh`` and the gates' element-wise formulas in
PyTorch's order and equations. The chain rule derives backpropagation through time from that
one step (:mod:`symnn.autodiff.scan`), and both backends emit the loop as a loop, so neither
the derivation nor the code grows with T.

A sample is a sequence (T, F), stored as one row of T*F (PyTorch's contiguous (N, T, F)). The
layer returns the last step's hidden state (H,), or with ``return_sequences=True`` every
step's (T, H), as ``output`` of PyTorch's modules. Optional initial states are further inputs:
``layer(x, h0)`` (``layer(x, h0, c0)`` for an LSTM), each of shape (num_layers, H) per sample
(or (H,) for one layer): PyTorch's ``h_0`` with the batch first. ``state_rows=(first, total)``:
the states given hold ``total`` rows a sample, of which the layer reads its own from row
``first`` on (one ``h_0`` shared by layers built apart: the ONNX ops of an exported stack).

Padded batches: with ``masked=True`` the layer takes a mask after the sequence, ``layer(x, m)``
(``layer(x, m, h0, c0)``), of shape (T,) per sample: 1 for a step of the sample's sequence, 0
for padding. A padded step leaves the state as it was, so the last state is the state after the
sample's last real step and the sequence output is 0 at padded steps: what PyTorch gives for a
``pack_padded_sequence`` of the samples' lengths. A loss on real targets of that sequence (or of
what maps its steps one by one after it) leaves the padded steps out: :func:`symnn.graph.step_masks`.

Bidirectional layers: with ``bidirectional=True`` each layer of the stack runs a second loop
over the same steps backwards in time (t = T-1 down to 0), with its own parameters
``weight_ih_l{k}_reverse``... as PyTorch's ``bidirectional=True``. Step t's output is the two
directions' hidden states side by side, (2H,), and the next layer of the stack reads those; the
last state is the forward direction's after step T-1 and the reverse direction's after step 0,
side by side: PyTorch's ``torch.cat((h_n[-2], h_n[-1]), dim=1)``. Initial states then hold
2*num_layers rows, in PyTorch's order (layer 0 forward, layer 0 reverse, layer 1 forward...).
The reverse loop is the same :class:`symnn.ir.Scan`, run the other way, so its pullback is a
loop forward in time, derived and emitted by the same rules. With a mask, the reverse
direction starts from its initial state at each sample's last real step, as over a packed
sequence.

Dropout between stacked layers: ``dropout=p`` (PyTorch's ``dropout``) multiplies each layer's
output sequence but the last one's by an inverted-dropout mask while training (``train_step``:
masks drawn as every dropout's, :func:`symnn.graph.dropout_masks`); ``forward``, ``loss`` and
``loss_and_grad`` leave it out, as PyTorch's ``eval()``.

Truncated backpropagation through time: ``truncate=k`` lets no gradient through the state
entering steps 0, k, 2k, ...: the gradient of the loss as PyTorch computes it when the state is
``detach()``-ed every k steps (the forward pass is the whole sequence's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import sympy as sp

from . import ir, naming
from .declare import activation
from .autodiff.elementwise import make_map
from .errors import ConfigError, LayerSizeMismatchError, SpecError, SpecTypeError
from .graph import apply_activation, dropped
from .layers import Emitted, Layer, Shape, _check_name, _dim, register_layer

_u, _v, _w, _x = sp.symbols("u v w x", real=True)


def _sigmoid(z: ir.Node) -> ir.Node:
    return apply_activation(activation("sigmoid"), z)


def _tanh(z: ir.Node) -> ir.Node:
    return apply_activation(activation("tanh"), z)


def _add(a: ir.Node, b: ir.Node) -> ir.Node:
    return make_map("add", _u + _v, [(_u, a), (_v, b)], a.shape)


@dataclass(frozen=True)
class _Step:
    """One step of a layer's recurrence, before the loop is made of it: the carried state's
    placeholder, the step's projected inputs, the recurrent weights (placeholders), the new
    state, and what the forward loop stores for the backward step beside it (``residuals``)."""

    carry: ir.Node
    projected: ir.Node
    invariants: tuple[ir.Node, ...]
    new: ir.Node
    residuals: tuple[ir.Node, ...] = ()


@dataclass(frozen=True, init=False)
class _Recurrent(Layer):
    """What the three recurrent layers share: sizes, PyTorch's parameter names and layout
    (``weight_ih_l{k}`` (G*H, I), ``weight_hh_l{k}`` (G*H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}``
    (G*H,) for layer k of the stack, the gates stacked in PyTorch's order) and the loop."""

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bias: bool = True
    return_sequences: bool = False
    masked: bool = False
    truncate: int | None = None
    name: str | None = None
    bidirectional: bool = False
    dropout: float = 0.0
    state_rows: tuple[int, int] | None = None

    #: the gates stacked in each weight (PyTorch's G: 1, 3, 4)
    GATES: ClassVar[int] = 1
    #: the state each step carries, in hidden sizes (an LSTM carries h and c)
    CARRIED: ClassVar[int] = 1
    OUTPUT_TEX: ClassVar[str] = "H"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 return_sequences: bool = False, *, masked: bool = False, truncate: int | None = None,
                 name: str | None = None, bidirectional: bool = False, dropout: float = 0.0,
                 state_rows: Sequence[int] | None = None) -> None:
        kind = type(self).__name__
        object.__setattr__(self, "input_size", _dim(input_size, f"{kind} input_size"))
        object.__setattr__(self, "hidden_size", _dim(hidden_size, f"{kind} hidden_size"))
        object.__setattr__(self, "num_layers", _dim(num_layers, f"{kind} num_layers"))
        for field_name, value in (("bias", bias), ("return_sequences", return_sequences), ("masked", masked),
                                  ("bidirectional", bidirectional)):
            if not isinstance(value, bool):
                raise SpecTypeError(f"{kind} {field_name} must be True or False, got {value!r}")
            object.__setattr__(self, field_name, value)
        object.__setattr__(self, "truncate", None if truncate is None else _dim(truncate, f"{kind} truncate"))
        if bidirectional and truncate is not None:
            raise SpecError(f"{kind}(bidirectional=True, truncate={truncate}): truncated backpropagation through "
                            "time is defined for a loop forward in time; use one or the other")
        object.__setattr__(self, "name", _check_name(name))
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise SpecTypeError(f"{kind} dropout must be a number in [0, 1), got {dropout!r}")
        if not 0 <= dropout < 1:  # NaN fails too
            raise ConfigError(f"{kind} dropout must be in [0, 1), got {dropout!r}")
        object.__setattr__(self, "dropout", float(dropout))
        object.__setattr__(self, "state_rows", self._rows_read(state_rows))

    def _rows_read(self, state_rows: Sequence[int] | None) -> tuple[int, int] | None:
        """``state_rows`` checked: (first, total), the given initial states holding ``total`` rows
        a sample of which this layer reads its num_layers*D from row ``first`` on."""
        if state_rows is None:
            return None
        kind = type(self).__name__
        if (not isinstance(state_rows, (tuple, list)) or len(state_rows) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in state_rows)):
            raise SpecTypeError(f"{kind} state_rows must be two integers (first, total), got {state_rows!r}")
        first, total = state_rows
        rows = self.directions * self.num_layers
        if not 0 <= first <= total - rows:
            raise SpecError(f"{kind} state_rows=({first}, {total}): its {rows} row(s) of initial state "
                            f"(num_layers x directions) must lie within the {total} given")
        return (first, total)

    # -- the layer protocol -------------------------------------------------------------------
    @property
    def directions(self) -> int:
        """PyTorch's D: 2 for a bidirectional layer, else 1."""
        return 2 if self.bidirectional else 1

    def _suffixes(self) -> tuple[str, ...]:
        """The parameter names' suffix of each direction (PyTorch's ``_reverse``)."""
        return ("", "_reverse") if self.bidirectional else ("",)

    @property
    def out_size(self) -> int:
        """The size of a direction's hidden state at each step (an LSTM's ``proj_size`` when it
        projects it)."""
        return self.hidden_size

    def _state_widths(self) -> tuple[int, ...]:
        """The width of each carried state: h, and an LSTM's c."""
        return (self.out_size,)

    def _loop_params(self, k: int, sfx: str) -> list[str]:
        """The parameters each step of loop (k, sfx) reads whole, in its body's invariants' order."""
        return [f"weight_hh_l{k}{sfx}"] + ([f"bias_hh_l{k}{sfx}"] if self._bias_inside() else [])

    def _extra_shapes(self, sfx: str, k: int) -> dict[str, Shape]:
        """Parameters of layer k's direction after its biases (an LSTM's projection)."""
        return {}

    def param_shapes(self) -> dict[str, Shape]:
        """PyTorch's ``state_dict`` order: per layer of the stack, per direction, ``weight_ih``,
        ``weight_hh``, ``bias_ih``, ``bias_hh`` (an LSTM's ``weight_hr`` then); layer k > 0 reads
        D*H features a step (H: the output size)."""
        gh, h = self.GATES * self.hidden_size, self.out_size
        shapes: dict[str, Shape] = {}
        for k in range(self.num_layers):
            for sfx in self._suffixes():
                shapes[f"weight_ih_l{k}{sfx}"] = (gh, self.input_size if k == 0 else self.directions * h)
                shapes[f"weight_hh_l{k}{sfx}"] = (gh, h)
                if self.bias:
                    shapes[f"bias_ih_l{k}{sfx}"] = (gh,)
                    shapes[f"bias_hh_l{k}{sfx}"] = (gh,)
                shapes.update(self._extra_shapes(sfx, k))
        return shapes

    @property
    def PARAM_TEX(self) -> dict[str, str]:  # type: ignore[override]
        """How the derivation writes layer k's parameters: ``W_{ih,k}``, ``W_{hh,k}``, ``b_{ih,k}``,
        ``b_{hh,k}`` (PyTorch's ``weight_ih_l{k}`` ...), the reverse direction's with an arrow
        over them (``weight_ih_l{k}_reverse``)."""
        tex = {}
        for k in range(self.num_layers):
            for sfx in self._suffixes():
                for kind, letter in (("weight", "W"), ("bias", "b")):
                    head = r"\overleftarrow{%s}" % letter if sfx else letter
                    for part in ("ih", "hh", "hr"):
                        tex[f"{kind}_{part}_l{k}{sfx}"] = "%s_{%s,%d}" % (head, part, k)
        return tex

    @property
    def REGULARISED(self) -> tuple[str, ...]:  # type: ignore[override]
        """The weights (never the biases) of every layer of the stack, for l1/l2."""
        shapes = self.param_shapes()
        return tuple(p for k in range(self.num_layers) for sfx in self._suffixes()
                     for p in (f"weight_ih_l{k}{sfx}", f"weight_hh_l{k}{sfx}", f"weight_hr_l{k}{sfx}") if p in shapes)

    def output_shape(self, *shapes: Shape) -> Shape:
        kind = type(self).__name__
        states = self.CARRIED
        first = 2 if self.masked else 1  # the sequence, and its mask when masked
        if len(shapes) not in (first, first + states):
            what = "h0" if states == 1 else "h0 and c0"
            mask = " and its mask (T,)" if self.masked else ""
            raise SpecError(f"{kind} takes a sequence{mask}, optionally with its initial {what}; "
                            f"got {len(shapes)} tensors")
        seq = shapes[0]
        if len(seq) != 2:
            raise LayerSizeMismatchError(f"{kind} takes sequences of shape (T, {self.input_size}), got {seq}")
        if seq[1] != self.input_size:
            raise LayerSizeMismatchError(f"{kind}(input_size={self.input_size}) applied to steps of {seq[1]} "
                                         f"features (shape {seq})")
        if self.masked and tuple(shapes[1]) != (seq[0],):
            raise LayerSizeMismatchError(f"{kind} mask of shape {shapes[1]}, expected ({seq[0]},): one entry per "
                                         "step, 1 for a step of the sequence and 0 for padding")
        for s, width in zip(shapes[first:], self._state_widths()):
            if tuple(s) not in self._state_shapes(width):
                raise LayerSizeMismatchError(f"{kind} initial state of shape {s}, expected "
                                             f"{' or '.join(map(str, self._state_shapes(width)))}")
        out = self.directions * self.out_size
        return (seq[0], out) if self.return_sequences else (out,)

    def inner_masks(self, *shapes: Shape) -> tuple[tuple[int, float], ...]:
        """One mask per layer of the stack but the last, over its output sequence (T*D*H)."""
        if not self.drops_inside:
            return ()
        width = naming.concrete(shapes[0][0] * self.directions * self.out_size)
        return ((width, self.dropout),) * (self.num_layers - 1)

    @property
    def drops_inside(self) -> bool:
        return self.dropout > 0 and self.num_layers > 1

    def _state_shapes(self, width: int) -> tuple[Shape, ...]:
        """A given initial state's shapes per sample: a row of ``width`` per layer and direction
        (with ``state_rows``, the rows given: this layer's and others')."""
        rows = self.directions * self.num_layers if self.state_rows is None else self.state_rows[1]
        return ((rows, width),) if rows > 1 else ((width,), (1, width))

    def init(self, rng: np.random.Generator, scheme: str | None) -> dict[str, np.ndarray]:
        """U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, as PyTorch's ``reset_parameters``."""
        k = 1.0 / math.sqrt(self.hidden_size)
        return {name: rng.uniform(-k, k, size=shape) for name, shape in self.param_shapes().items()}

    def describe(self) -> str:
        extra = f", num_layers={self.num_layers}" if self.num_layers != 1 else ""
        extra += "" if self.bias else ", bias=False"
        extra += ", return_sequences=True" if self.return_sequences else ""
        extra += ", masked=True" if self.masked else ""
        extra += f", truncate={self.truncate}" if self.truncate else ""
        extra += ", bidirectional=True" if self.bidirectional else ""
        extra += f", dropout={self.dropout!r}" if self.dropout else ""
        extra += f", state_rows={self.state_rows}" if self.state_rows is not None else ""
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra})"

    # -- the forward pass -------------------------------------------------------------------
    def build(self, inputs: Sequence[ir.Node], params: dict[str, ir.Node],
              shapes: Sequence[Shape] = (), masks: Sequence[ir.Node] = ()) -> Emitted:
        """``masks``: the training graph's dropout masks between the stack's layers
        (:meth:`inner_masks`); none outside training."""
        x = inputs[0]
        rows = x.shape[0]
        T = naming.concrete(shapes[0][0] if shapes else sp.sympify(x.shape[1]) / self.input_size)
        h, D = self.out_size, self.directions
        mask = inputs[1] if self.masked else None
        states = list(inputs[2 if self.masked else 1:])
        seq, width = x, self.input_size
        named: list[tuple[ir.Node, str]] = []
        finals: list[ir.Node] = []
        for k in range(self.num_layers):
            hidden, finals = [], []
            for d, sfx in enumerate(self._suffixes()):
                init = self._initial(states, k * D + d, rows)
                projected = self._projection(seq, width, T, f"l{k}{sfx}", params)
                hh = f"weight_hh_l{k}{sfx}"
                label = f"{params[hh].arg.removesuffix(hh).rstrip('_') or 'rnn'}_l{k}{sfx}"
                body = self._loop(label, rows, T, mask is not None, reverse=d == 1)
                invariants = [params[name] for name in self._loop_params(k, sfx)]
                loop = ir.scan(body, init, [projected] + ([mask] if mask is not None else []), invariants)
                arrow = r"\overleftarrow{%s}" if d else "%s"
                named.append((projected, arrow % "P"))
                named.append((loop, arrow % "C"))
                stored = int(body.out.shape[1])  # each step's carried state, then its residuals
                # each step's hidden state: the first h of its stored columns, steps as rows
                hidden.append(ir.slice_(ir.reshape(loop, (rows * T, stored)), 0, h) if stored != h
                              else ir.reshape(loop, (rows * T, h)))
                last = 0 if d else T - 1  # the step a direction ends at
                finals.append(ir.slice_(loop, last * stored, last * stored + h))
            # step t of the next layer's sequence: the directions' states at t, side by side
            seq = ir.reshape(hidden[0] if D == 1 else ir.concat(*hidden), (rows, T * D * h))
            width = D * h
            if masks and k < self.num_layers - 1:  # dropout on what the next layer reads
                seq = dropped(seq, masks[k], self.dropout)
        if self.return_sequences:
            out = seq
            if mask is not None:  # zeros at the padded steps, as PyTorch's pad_packed_sequence
                held = make_map("padded", _u * _v, [(_u, ir.reshape(seq, (rows * T, width))),
                                                    (_v, ir.reshape(mask, (rows * T, 1)))], (rows * T, width))
                out = ir.reshape(held, (rows, T * width))
        else:
            out = finals[0] if D == 1 else ir.concat(*finals)
        return Emitted(out, tuple(named))

    def _initial(self, states: list[ir.Node], k: int, rows) -> ir.Node:
        """The first carried state of loop k (layer k // D, direction k % D): zeros, or row k of
        the given h0 (and c0), counted from ``state_rows``' first."""
        widths = self._state_widths()
        if not states:
            return make_map("zero", sp.Integer(0), [], (rows, sum(widths)))
        first = 0 if self.state_rows is None else self.state_rows[0]
        parts = []
        for s, w in zip(states, widths):
            parts.append(s if int(s.shape[1]) == w else ir.slice_(s, (first + k) * w, (first + k + 1) * w))
        return parts[0] if len(parts) == 1 else ir.concat(*parts)

    def _bias_inside(self) -> bool:
        """Whether ``bias_hh`` enters the step itself (a GRU's, inside its reset gate's product)
        rather than the projection outside the loop."""
        return False

    def _projection(self, seq: ir.Node, width: int, T: int, tag: str, params: dict[str, ir.Node]) -> ir.Node:
        """Every step's input share of the gates, for all steps at once: (N, T*G*H), from the
        parameters ``weight_ih_{tag}``... (``tag``: ``l0``, ``l0_reverse``...)."""
        rows = seq.shape[0]
        steps = ir.reshape(seq, (rows * T, width))
        z = ir.matmul(steps, params[f"weight_ih_{tag}"], False, True)
        if self.bias:
            b = params[f"bias_ih_{tag}"]
            if not self._bias_inside():  # both biases add to every step: their sum, added once
                b = _add(b, params[f"bias_hh_{tag}"])
            z = ir.add_bias(z, b)
        return ir.reshape(z, (rows, T * self.GATES * self.hidden_size))

    def _body(self, label: str, rows, T: int) -> _Step:
        raise NotImplementedError

    def _loop(self, label: str, rows, T: int, masked: bool, reverse: bool = False) -> ir.Scan:
        """The loop of one layer of the stack (one direction: ``reverse`` runs t = T-1 down to
        0): its step, held where the mask is 0 (a padded step leaves the state as it was, as
        PyTorch's packed sequences do), and stored."""
        step = self._body(label, rows, T)
        steps: tuple[ir.Node, ...] = (step.projected,)
        new = step.new
        if masked:
            m = ir.var(f"{label}.m", (rows, 1))
            steps += (m,)
            new = make_map("held", _u * _v + (1 - _u) * _w, [(_u, m), (_v, new), (_w, step.carry)],
                           tuple(step.carry.shape))
        out = ir.concat(new, *step.residuals) if step.residuals else new
        return ir.Scan(T, step.carry, steps, step.invariants, new, out, reverse=reverse, label=label,
                       residuals=step.residuals, truncate=self.truncate or 0)


@register_layer
@dataclass(frozen=True, init=False)
class RNN(_Recurrent):
    """``torch.nn.RNN(batch_first=True)``: ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)``
    with ``nonlinearity`` tanh (the default) or relu."""

    nonlinearity: str = "tanh"

    KIND: ClassVar[str] = "rnn"
    GATES: ClassVar[int] = 1
    CARRIED: ClassVar[int] = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, return_sequences: bool = False, *, masked: bool = False,
                 truncate: int | None = None, name: str | None = None, bidirectional: bool = False,
                 dropout: float = 0.0, state_rows: Sequence[int] | None = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, return_sequences, masked=masked,
                         truncate=truncate, name=name, bidirectional=bidirectional, dropout=dropout,
                         state_rows=state_rows)
        if nonlinearity not in ("tanh", "relu"):
            raise SpecTypeError(f"RNN nonlinearity must be 'tanh' or 'relu' (as PyTorch), got {nonlinearity!r}")
        object.__setattr__(self, "nonlinearity", nonlinearity)

    def describe(self) -> str:
        base = super().describe()
        return base if self.nonlinearity == "tanh" else base[:-1] + ", nonlinearity='relu')"

    def _body(self, label: str, rows, T: int) -> _Step:
        h = self.hidden_size
        carry = ir.var(f"{label}.h", (rows, h))
        p = ir.var(f"{label}.p", (rows, h))
        w = ir.var(f"{label}.W_hh", (h, h))
        z = _add(p, ir.matmul(carry, w, False, True))
        new = apply_activation(activation(self.nonlinearity), z)
        return _Step(carry, p, (w,), new)


@register_layer
@dataclass(frozen=True, init=False)
class GRU(_Recurrent):
    """``torch.nn.GRU(batch_first=True)``, gates (r, z, n) in PyTorch's order:
    ``r = σ(x W_ir^T + b_ir + h W_hr^T + b_hr)``, ``z`` likewise,
    ``n = tanh(x W_in^T + b_in + r ⊙ (h W_hn^T + b_hn))``, ``h' = (1 - z) ⊙ n + z ⊙ h``."""

    KIND: ClassVar[str] = "gru"
    GATES: ClassVar[int] = 3
    CARRIED: ClassVar[int] = 1

    def _bias_inside(self) -> bool:
        return self.bias

    def _body(self, label: str, rows, T: int) -> _Step:
        h = self.hidden_size
        carry = ir.var(f"{label}.h", (rows, h))
        p = ir.var(f"{label}.p", (rows, 3 * h))
        w = ir.var(f"{label}.W_hh", (3 * h, h))
        invariants = [w]
        q = ir.matmul(carry, w, False, True)
        if self.bias:
            b = ir.var(f"{label}.b_hh", (3 * h,))
            invariants.append(b)
            q = ir.add_bias(q, b)
        r = _sigmoid(_add(ir.slice_(p, 0, h), ir.slice_(q, 0, h)))
        z = _sigmoid(_add(ir.slice_(p, h, 2 * h), ir.slice_(q, h, 2 * h)))
        qn = ir.slice_(q, 2 * h, 3 * h)
        n = _tanh(make_map("gru_candidate", _u + _v * _w, [(_u, ir.slice_(p, 2 * h, 3 * h)), (_v, r), (_w, qn)],
                           (rows, h)))
        new = make_map("gru_state", (1 - _u) * _v + _u * _w, [(_u, z), (_v, n), (_w, carry)], (rows, h))
        # stored for the backward step: the gates and the reset gate's operand (no product again)
        return _Step(carry, p, tuple(invariants), new, (r, z, n, qn))


@register_layer
@dataclass(frozen=True, init=False)
class LSTM(_Recurrent):
    """``torch.nn.LSTM(batch_first=True)``, gates (i, f, g, o) in PyTorch's order:
    ``c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)``, ``h' = σ(o) ⊙ tanh(c')``. Each step carries (h, c). With
    ``proj_size`` P > 0, ``h' = (σ(o) ⊙ tanh(c')) W_hr^T``, of P entries (PyTorch's projected
    LSTM: ``weight_hr_l{k}`` (P, H), ``weight_hh_l{k}`` (4H, P), h_0 (.., P), c_0 (.., H))."""

    proj_size: int = 0

    KIND: ClassVar[str] = "lstm"
    GATES: ClassVar[int] = 4
    CARRIED: ClassVar[int] = 2

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 return_sequences: bool = False, *, masked: bool = False, truncate: int | None = None,
                 name: str | None = None, bidirectional: bool = False, dropout: float = 0.0,
                 proj_size: int = 0, state_rows: Sequence[int] | None = None) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, return_sequences, masked=masked,
                         truncate=truncate, name=name, bidirectional=bidirectional, dropout=dropout,
                         state_rows=state_rows)
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or not 0 <= proj_size < hidden_size:
            raise SpecTypeError(f"LSTM proj_size must be an integer in [0, hidden_size={hidden_size}), as PyTorch's, "
                                f"got {proj_size!r}")
        object.__setattr__(self, "proj_size", proj_size)

    @property
    def out_size(self) -> int:
        return self.proj_size or self.hidden_size

    def _state_widths(self) -> tuple[int, ...]:
        return (self.out_size, self.hidden_size)

    def _loop_params(self, k: int, sfx: str) -> list[str]:
        return super()._loop_params(k, sfx) + ([f"weight_hr_l{k}{sfx}"] if self.proj_size else [])

    def _extra_shapes(self, sfx: str, k: int) -> dict[str, Shape]:
        return {f"weight_hr_l{k}{sfx}": (self.proj_size, self.hidden_size)} if self.proj_size else {}

    def describe(self) -> str:
        base = super().describe()
        return base if not self.proj_size else base[:-1] + f", proj_size={self.proj_size})"

    def _body(self, label: str, rows, T: int) -> _Step:
        h, p_out = self.hidden_size, self.out_size
        carry = ir.var(f"{label}.hc", (rows, p_out + h))
        p = ir.var(f"{label}.p", (rows, 4 * h))
        w = ir.var(f"{label}.W_hh", (4 * h, p_out))
        z = _add(p, ir.matmul(ir.slice_(carry, 0, p_out), w, False, True))
        i, f = _sigmoid(ir.slice_(z, 0, h)), _sigmoid(ir.slice_(z, h, 2 * h))
        g, o = _tanh(ir.slice_(z, 2 * h, 3 * h)), _sigmoid(ir.slice_(z, 3 * h, 4 * h))
        c = make_map("lstm_cell", _u * _v + _w * _x, [(_u, f), (_v, ir.slice_(carry, p_out, p_out + h)), (_w, i), (_x, g)],
                     (rows, h))
        tc = _tanh(c)
        hidden = make_map("lstm_hidden", _u * _v, [(_u, o), (_v, tc)], (rows, h))
        invariants: tuple[ir.Node, ...] = (w,)
        if self.proj_size:  # the projection of the hidden state, PyTorch's h_t = (o * tanh(c_t)) W_hr^T
            w_hr = ir.var(f"{label}.W_hr", (p_out, h))
            hidden = ir.matmul(hidden, w_hr, False, True)
            invariants += (w_hr,)
        new = ir.concat(hidden, c)
        # stored for the backward step: the gates and tanh(c) (no product or function again)
        return _Step(carry, p, invariants, new, (i, f, g, o, tc))


__all__ = ["RNN", "GRU", "LSTM"]
