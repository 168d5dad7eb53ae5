"""The vocabulary of ``sn.from_torch``'s classification of a traced graph (symnn/torch_fx.py):
what a node becomes (:class:`Kind`), a classified node (:class:`Role`), how an error names a
node (:func:`where`), and the refusal of a node symnn has no layer for (:func:`unsupported`),
which lists what is supported (:data:`SUPPORTED`). Shared by the modules that classify: the
layers' (torch_fx), the recurrent modules' (torch_fx_recurrent) and the functional layers'
(torch_fx_functional)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .declare import Activation
from .errors import SpecTypeError
from .naming import shown

SUPPORTED = ("nn.Linear, nn.Conv1d/2d (padding_mode='zeros'), F.linear and F.conv1d/2d on a submodule's "
              "weight and bias, nn.MaxPool1d/2d, nn.AvgPool1d/2d, "
              "nn.AdaptiveAvgPool1d/2d(1) followed by a flatten (and F.max_pool1d/2d, F.avg_pool1d/2d, "
              "F.adaptive_avg_pool1d/2d with constant sizes), nn.Flatten and torch.flatten(x, 1), "
              "nn.LayerNorm (one normalized dimension), nn.BatchNorm1d/2d, nn.Embedding (on a forward argument), "
              "nn.RNN/GRU/LSTM (out[:, -1], h_n[-1] or the whole output; bidirectional: "
              "torch.cat((h_n[-2], h_n[-1]), dim=1), out[:, -1] or the whole output; batch_first=False: out[-1], and "
              "transpose(0, 1) or permute(1, 0, 2) between time-major and batch-first; an initial state from "
              "forward arguments or a one-layer GRU/RNN's h_n), "
              "nn.Dropout, nn.Identity, a + b "
              "(operator.add, torch.add), torch.cat(dim=1 or -1), and the activations {activations} "
              "(folded into the Linear or Conv right before them, else an sn.Activate layer)")


class Kind(enum.Enum):
    """What a traced node becomes."""

    INPUT = enum.auto()
    LINEAR = enum.auto()
    CONV = enum.auto()  # nn.Conv1d/2d
    POOL = enum.auto()  # nn.MaxPool1d/2d, nn.AvgPool1d/2d
    GLOBAL_POOL = enum.auto()  # nn.AdaptiveAvgPool1d/2d(1): with the flatten after it, a GlobalAvgPool
    FLATTEN = enum.auto()
    LAYERNORM = enum.auto()
    BATCHNORM = enum.auto()  # nn.BatchNorm1d/2d
    EMBEDDING = enum.auto()  # nn.Embedding on a forward argument: its indices
    DROPOUT = enum.auto()
    IDENTITY = enum.auto()
    ACTIVATION = enum.auto()
    ADD = enum.auto()
    CAT = enum.auto()
    OUTPUT = enum.auto()
    RECURRENT = enum.auto()  # nn.RNN/GRU/LSTM: (output, h_n) or (output, (h_n, c_n))
    RNN_OUTPUT = enum.auto()  # result[0]: the output sequence (N, T, H)
    RNN_STATE = enum.auto()  # result[1]: h_n (num_layers, N, H), or an LSTM's (h_n, c_n)
    RNN_HIDDEN = enum.auto()  # an LSTM's (h_n, c_n)[0]
    RNN_CELL = enum.auto()  # an LSTM's (h_n, c_n)[1]: refused if used
    LAST_STEP = enum.auto()  # output[:, -1], h_n[-1], h_n.squeeze(0): the last state (N, H)
    # h_n[-2], h_n[-1] of a bidirectional module: one direction's final state (``index``: 0
    # forward, 1 reverse), read only as torch.cat((h_n[-2], h_n[-1]), dim=1), its LAST_STEP
    RNN_FINAL = enum.auto()
    # out[:, -1] (batch_first=False: out[-1]) of a bidirectional module: the last step of its
    # whole output sequence, an sn.LastStep (the reverse direction's state there is after one step)
    SEQUENCE_LAST = enum.auto()
    # t.transpose(0, 1), t.permute(1, 0, 2): a sequence between batch-first (N, T, F) and the
    # time-major (T, N, F) of a batch_first=False module; symnn's value is the same sequence
    TIME_SWAP = enum.auto()
    # a parameter read by get_attr: only as the weight or bias of F.linear / F.conv1d / F.conv2d,
    # which then make the layer of the module that holds them (functional_layer_role)
    PARAM_ATTR = enum.auto()
    SHAPE = enum.auto()  # x.shape / x.size(): only for a batch size
    BATCH_SIZE = enum.auto()  # x.shape[0], x.size(0): only as reshape(n, -1)'s first size


@dataclass(frozen=True)
class Role:
    """A classified node: its kind, the tensor nodes it reads (in order), the torch module it
    calls (call_module) and, for an activation, the symnn activation it is."""

    kind: Kind
    operands: tuple[Any, ...] = ()
    module: Any = None
    activation: Activation | None = None
    #: ``t.view(-1, k)``: the features k a flatten must give each sample (checked once shapes are known)
    features: int | None = None
    #: RNN_FINAL: the direction of a bidirectional module's final state (0 forward, 1 reverse);
    #: CAT: the dim it joins along
    index: int | None = None


def where(node: Any) -> str:
    target = node.target
    if not isinstance(target, str):
        target = getattr(target, "__name__", repr(target))
    return f"node {shown(node.name)} ({node.op} {shown(target)})"


def unsupported(node: Any, what: str = "") -> SpecTypeError:
    from .interop import _ACTIVATIONS

    listed = SUPPORTED.format(activations=", ".join(sorted(_ACTIVATIONS)))
    return SpecTypeError(f"{where(node)}{what} is not supported; from_torch reads an nn.Sequential, or a "
                         f"traced module built from {listed}")


def subscript(index: object) -> str:
    """A subscript as written (``:, -1``), for an error."""
    def one(item: object) -> str:
        if isinstance(item, slice):
            parts = ["" if v is None else str(v) for v in (item.start, item.stop, item.step)]
            return ":".join(parts[:2] if item.step is None else parts)
        return shown(item)
    return ", ".join(one(i) for i in index) if isinstance(index, tuple) else one(index)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, for an error that wraps it."""
    from .interop import _one_line

    return _one_line(exc)
