"""Time-major recurrent ops in an ONNX graph, as ``torch.onnx.export`` writes them: read by
``sn.from_onnx`` (symnn/onnx_graph.py) as batch-first ``sn.RNN``/``GRU``/``LSTM`` layers.

PyTorch's exporter writes ``nn.LSTM(batch_first=True)`` as the ONNX op with ``layout=0``: the
input goes through ``Transpose(perm=[1, 0, 2])`` to (T, N, F); the zero initial states are built
from the input's ``Shape`` (``Gather``, ``Unsqueeze``, ``Concat``, then ``ConstantOfShape`` or
``Expand``, one ``Slice`` per layer when stacked); ``Y`` (T, 1, N, H) is squeezed to (T, N, H) and
transposed back; ``out[:, -1]`` is a ``Gather`` of step -1, ``h[-1]`` a ``Gather`` of the last layer
of the ``Concat`` of the layers' ``Y_h``; a stacked layer reads the squeezed ``Y`` of the one before.
A bidirectional module's op (``direction="bidirectional"``) has Y (T, 2, N, H), which the exporter
turns into steps (T, N, 2H) with ``Transpose(perm=[0, 2, 1, 3])`` and ``Reshape([0, 0, -1])``, and
Y_h (2, N, H), whose ``Gather``s of rows -2 and -1 (each direction's final state) a ``Concat``
along axis 1 joins: ``torch.cat((h_n[-2], h_n[-1]), dim=1)``, the layer's last state.

None of these values is data symnn computes on. They are followed here as *views*: which layout-0
op's output a value is and along which axes, or a shape computation, or a broadcast of zeros.
A view becomes a symnn tensor only where something reads it as data: the last step (a layer
with ``return_sequences=False``) or the batch-first sequence (``return_sequences=True``). The
layer is made at that first read, so one op read both ways is refused by name, as symnn's
layers return one or the other. Every other use of these values is refused with the node's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Mapping, Protocol

import numpy as np
import sympy as sp

from .errors import ModelFormatError, SpecError, SpecTypeError
from .layers import LastStep, Tensor
from .naming import shown

_INT64 = 7  # onnx.TensorProto.INT64
#: the one transposition read: (T, N, F) <-> (N, T, F)
_SWAP = (1, 0, 2)
#: a bidirectional op's Y (T, 2, N, H) to (T, N, 2, H): each step's directions side by side
_STEPS_FIRST = (0, 2, 1, 3)


class Form(Enum):
    """What a view holds, in the words an error uses."""

    TIME_MAJOR_INPUT = "time-major sequence (T, N, F): a Transpose of a batch-first input"
    Y = "Y (T, 1, N, H) of a layout-0 recurrent op"
    TIME_MAJOR = "time-major sequence (T, N, H): the squeezed Y of a layout-0 recurrent op"
    SEQUENCE = "batch-first sequence (N, T, H): the transposed Y of a layout-0 recurrent op"
    HIDDEN = "final state Y_h (1, N, H) of a layout-0 recurrent op"
    HIDDEN_STACK = "final states (L, N, H) of stacked layout-0 recurrent ops (a Concat of their Y_h)"
    Y_BI = "Y (T, 2, N, H) of a bidirectional layout-0 recurrent op"
    Y_BI_STEPS = "Y (T, N, 2, H) of a bidirectional layout-0 recurrent op: Transpose(perm=[0, 2, 1, 3]) of its Y"
    FINAL = ("one direction's final state (N, H) of a bidirectional layout-0 recurrent op (a Gather of its "
             "Y_h)")


@dataclass
class Pending:
    """A layout-0 recurrent op whose symnn layer is made where its output is first read as data:
    ``make(sequences)`` builds it with ``return_sequences=sequences`` and applies it."""

    where: str
    op: str
    steps: "int | sp.Expr"  # the run-time length T for a sequence input (N, T, F) of a dynamic T
    make: Callable[[bool], Tensor]
    directions: int = 1  # 2: direction="bidirectional"
    masked: bool = False  # it reads sequence_lens: a padded sample's last step is 0, not its last state
    sequences: bool | None = None
    out: Tensor | None = None

    def value(self, sequences: bool, reader: str) -> Tensor:
        if self.sequences is None:
            self.sequences, self.out = sequences, self.make(sequences)
        elif self.sequences != sequences:
            words = ("sequence", "last state") if sequences else ("last state", "sequence")
            raise SpecError(f"{reader}: reads the {words[0]} of {self.where}, whose {words[1]} is read too; "
                            f"symnn's {self.op} returns one of them (return_sequences)")
        assert self.out is not None
        return self.out


@dataclass
class View:
    """A value that is a view of a recurrent op's output, or of a batch-first input."""

    form: Form
    roots: tuple[Pending, ...] = ()
    tensor: Tensor | None = None  # TIME_MAJOR_INPUT: the batch-first tensor it transposes
    direction: int | None = None  # FINAL: 0 the forward direction's, 1 the reverse one's


@dataclass
class SequenceState:
    """What an import has followed so far, by ONNX value name."""

    shapes: set[str] = field(default_factory=set)  # computed from a Shape: integers, never data
    zeros: set[str] = field(default_factory=set)  # broadcast zeros: an initial state
    views: dict[str, View] = field(default_factory=dict)
    scalars: dict[str, int] = field(default_factory=dict)  # 0-d INT64 constants: an index


def int_scalar(tensor: Any, where: str, what: str) -> int | None:
    """A 0-d INT64 tensor's value (a Gather's index), or None for any other tensor."""
    if tensor is None or not hasattr(tensor, "dims") or tuple(tensor.dims) or tensor.data_type != _INT64:
        return None
    if tensor.data_location == 1 or tensor.HasField("segment"):
        raise ModelFormatError(f"{where}: {shown(what)} must hold its value in the file")
    if tensor.raw_data:
        if len(tensor.raw_data) != 8:
            raise ModelFormatError(f"{where}: {shown(what)} is one INT64 but holds {len(tensor.raw_data)} bytes")
        return int(np.frombuffer(tensor.raw_data, dtype="<i8")[0])
    if len(tensor.int64_data) != 1:
        raise ModelFormatError(f"{where}: {shown(what)} is one INT64 but holds {len(tensor.int64_data)} values")
    return int(tensor.int64_data[0])


def refuse_as_data(s: SequenceState, where: str, key: str) -> None:
    """Refuse reading ``key`` as data where it is a shape, zeros or a view that is not one."""
    if key in s.shapes:
        raise SpecError(f"{where}: reads {shown(key)}, a shape computed from the input's Shape, as data")
    if key in s.zeros:
        raise SpecError(f"{where}: reads {shown(key)}, a broadcast of zeros, as data; symnn reads one only as "
                        "the initial state of a recurrent op")
    view = s.views.get(key)
    if view is not None and view.form is Form.FINAL:
        raise SpecError(f"{where}: reads {shown(key)}, a {view.form.value}, as data; symnn's bidirectional layer "
                        "returns both directions' final states, joined by a Concat along axis 1 (forward, then "
                        "reverse): torch.cat((h_n[-2], h_n[-1]), dim=1)")
    if view is not None and view.form is not Form.SEQUENCE:
        raise SpecError(f"{where}: reads {shown(key)}, a {view.form.value}, as data; symnn reads it through "
                        "the Squeeze, Transpose(perm=[1, 0, 2]) and Gather of the last step that "
                        "torch.onnx.export writes")


def handed_state(s: SequenceState, where: str, key: str | None, op: str, directions: int) -> Tensor | None:
    """The initial state ``key`` of the recurrent op at ``where`` where it is another layout-0
    op's final state Y_h (1, N, H): an encoder's state handed to a decoder (``_, h = enc(x)``,
    ``dec(y, h)``). That op's layer then returns its last state, which is the decoder's initial
    state; None where ``key`` is no view. As ``sn.from_torch``, only the whole Y_h of a
    one-direction GRU or RNN, for a one-direction GRU or RNN: an LSTM's state is (Y_h, Y_c),
    and a stack's or a bidirectional op's final states are not a value symnn's layers return."""
    view = s.views.get(key) if key else None
    if view is None:
        return None
    root = view.roots[0] if view.roots else None
    if (view.form is not Form.HIDDEN or root is None or root.directions != 1 or root.op == "LSTM"
            or directions != 1 or op == "LSTM"):
        raise SpecError(f"{where}: starts from {shown(key)}, a {view.form.value}; symnn reads a recurrent op's "
                        "initial state from another op only as the whole Y_h of a one-direction GRU or RNN op, "
                        "for a one-direction GRU or RNN (an LSTM's (Y_h, Y_c), a stack's or a bidirectional "
                        "op's final states are not values symnn's layers return)")
    return root.value(False, where)


def as_data(s: SequenceState, where: str, key: str) -> Tensor | None:
    """``key`` read as data: the batch-first sequence a SEQUENCE view is (the layer returns
    every step), None where ``key`` is no view; anything else of this module's refused."""
    refuse_as_data(s, where, key)
    view = s.views.get(key)
    return view.roots[0].value(True, where) if view is not None else None


def time_major_input(s: SequenceState, where: str, key: str) -> Tensor:
    """The batch-first tensor a layout-0 op's X is: the one a Transpose made time-major, or the
    sequence of the layout-0 op before it (a stacked layer)."""
    view = s.views.get(key)
    if view is not None and view.form is Form.TIME_MAJOR_INPUT and view.tensor is not None:
        return view.tensor
    if view is not None and view.form is Form.TIME_MAJOR:
        return view.roots[0].value(True, where)
    raise SpecError(f"{where}: with layout=0 its X {shown(key)} must be time-major: a Transpose(perm=[1, 0, 2]) "
                    "of the batch-first input (N, T, F), or the squeezed Y of a layout-0 op before it")


#: ops this module always follows, and ops it follows where they read one of its values
_ALWAYS = frozenset({"Shape", "Transpose", "ConstantOfShape", "Expand"})
_WHEN_READING = frozenset({"Gather", "Unsqueeze", "Concat", "Squeeze", "Slice"})


def follows(s: SequenceState, op: str, inputs: tuple[str, ...]) -> bool:
    """Whether a node of ``op`` reading ``inputs`` belongs to this module: a Shape, Transpose,
    ConstantOfShape or Expand, a Gather, Unsqueeze, Concat, Squeeze or Slice of a view, a
    shape or zeros, or the Reshape of a bidirectional op's steps. Any other node reading one of
    those reads it as data (:func:`as_data`)."""
    if op in _ALWAYS:
        return True
    if op == "Reshape" and inputs and inputs[0] in s.views and s.views[inputs[0]].form is Form.Y_BI_STEPS:
        return True
    ours = s.shapes | s.zeros | set(s.views)
    return op in _WHEN_READING and any(key in ours for key in inputs if key)


class Step(Protocol):
    """What this module reads of a node: symnn/onnx_graph.py's checked node is one."""

    op: str
    attrs: Mapping[str, Any]
    inputs: tuple[str, ...]
    output: str
    where: str


def build(s: SequenceState, node: Step, values: dict[str, Tensor], consts: dict[str, tuple[int, ...]],
          zero_weight: Callable[[str], bool], axes_of: Callable[[], tuple[int, ...]]) -> None:
    """Follow one node that :func:`follows` claims: ``values`` the computed tensors (a last
    state or a batch-first tensor is defined there), ``consts`` the 1-D integer constants,
    ``zero_weight(key)`` whether an initializer holds only zeros, ``axes_of()`` a Squeeze's axes."""
    op, ins, out, where = node.op, node.inputs, node.output, node.where
    if op == "Shape":
        s.shapes.add(out)
    elif op in ("Gather", "Unsqueeze", "Concat", "Squeeze", "Slice") and _all_shapes(s, ins, consts, op):
        s.shapes.add(out)
    elif op == "ConstantOfShape":
        _constant_of_shape(s, node, consts)
    elif op == "Expand":
        if not (ins[0] in s.zeros or zero_weight(ins[0])) or not (ins[1] in s.shapes or ins[1] in consts):
            raise SpecTypeError(f"{where}: symnn reads an Expand only of zeros to a computed shape (the zero "
                                "initial state of a recurrent op, as torch.onnx.export writes it)")
        s.zeros.add(out)
    elif op == "Slice":
        if ins[0] not in s.zeros:
            raise SpecTypeError(f"{where}: symnn reads a Slice only of a broadcast of zeros (one layer's zero "
                                "initial state)")
        s.zeros.add(out)
    elif op == "Transpose":
        _transpose(s, node, values)
    elif op == "Squeeze":
        _squeeze(s, node, values, axes_of())
    elif op == "Gather":
        _gather(s, node, values)
    elif op == "Concat":
        _concat(s, node, values)
    elif op == "Reshape":
        _reshape_steps(s, node, consts)
    else:  # an Unsqueeze of a view or of zeros
        raise SpecError(f"{where}: symnn reads no {op} of {shown(ins[0])} (a recurrent op's output or "
                        "its initial state)")


def _all_shapes(s: SequenceState, ins: tuple[str, ...], consts: dict, op: str) -> bool:
    """Shape arithmetic: the first input (every input of a Concat) a shape or an integer constant."""
    keys = [k for k in ins if k] if op == "Concat" else ins[:1]
    return any(k in s.shapes for k in keys) and all(k in s.shapes or k in consts or k in s.scalars for k in keys)


def _constant_of_shape(s: SequenceState, node: Step, consts: dict) -> None:
    value = node.attrs.get("value")
    if node.inputs[0] not in s.shapes and node.inputs[0] not in consts:
        raise SpecTypeError(f"{node.where}: the shape {shown(node.inputs[0])} is neither computed from the "
                            "input's Shape nor a constant")
    if value is not None:
        from .interop import _weight

        fill = _weight({"value": value}, "value", 1, node.where, None)
        if fill.size != 1 or fill.reshape(-1)[0] != 0:
            raise SpecTypeError(f"{node.where}: ConstantOfShape fills with {fill.reshape(-1).tolist()}; symnn reads "
                                "one only of zeros (the zero initial state of a recurrent op)")
    s.zeros.add(node.output)


def _transpose(s: SequenceState, node: Step, values: dict[str, Tensor]) -> None:
    perm = tuple(node.attrs.get("perm", ()))
    key = node.inputs[0]
    view = s.views.get(key)
    if view is not None and view.form is Form.Y_BI and perm == _STEPS_FIRST:
        s.views[node.output] = View(Form.Y_BI_STEPS, view.roots)
        return
    if perm != _SWAP:
        raise SpecTypeError(f"{node.where}: Transpose(perm={list(perm)}) is not supported; symnn reads the "
                            "Transpose(perm=[1, 0, 2]) that torch.onnx.export writes around a time-major "
                            "recurrent op")
    view = s.views.get(key)
    if view is None and key in values and len(values[key].shape) == 2:
        s.views[node.output] = View(Form.TIME_MAJOR_INPUT, tensor=values[key])
    elif view is not None and view.form is Form.TIME_MAJOR:
        s.views[node.output] = View(Form.SEQUENCE, view.roots)
    elif view is not None and view.form is Form.TIME_MAJOR_INPUT and view.tensor is not None:
        values[node.output] = view.tensor
    else:
        what = view.form.value if view is not None else ("a tensor of samples shaped "
                                                          f"{values[key].shape}" if key in values else "not data")
        raise SpecError(f"{node.where}: transposes {shown(key)} ({what}); symnn reads Transpose(perm=[1, 0, 2]) "
                        "of a batch-first sequence (N, T, F) into a layout-0 recurrent op, and of its "
                        "squeezed Y back")


def _squeeze(s: SequenceState, node: Step, values: dict[str, Tensor], axes: tuple[int, ...]) -> None:
    view = s.views.get(node.inputs[0])
    if view is not None and view.form is Form.Y and axes in ((1,), (-3,)):
        s.views[node.output] = View(Form.TIME_MAJOR, view.roots)
    elif view is not None and view.form is Form.HIDDEN and axes in ((0,), (-3,)) and view.roots[0].directions == 1:
        values[node.output] = view.roots[0].value(False, node.where)
    else:
        what = view.form.value if view is not None else "not a recurrent op's output"
        raise SpecError(f"{node.where}: a Squeeze of axes {list(axes)} of {shown(node.inputs[0])} ({what}); "
                        "symnn reads a Squeeze of the direction axis: 1 of a layout-0 Y, 0 of its Y_h")


def _within(index: int, size: "int | sp.Expr", last: bool = False) -> bool:
    """Whether ``index`` names an entry of an axis of ``size`` (with ``last``: its last entry).
    A run-time sequence length T has one index known to lie in it: -1, its last step."""
    if not isinstance(size, int):
        return index == -1
    return -size <= index < size and (not last or index % size == size - 1)


def _gather(s: SequenceState, node: Step, values: dict[str, Tensor]) -> None:
    data, index_key = node.inputs
    view = s.views.get(data)
    axis = node.attrs.get("axis", 0)
    index = s.scalars.get(index_key)
    if view is None or index is None:
        refuse_as_data(s, node.where, data)
        raise SpecError(f"{node.where}: gathers {shown(data)} by {shown(index_key)}; symnn reads a Gather of one "
                        "step or layer of a recurrent op's output by a constant scalar index")
    roots = view.roots
    rows = sum(root.directions for root in roots)  # of final states: a bidirectional op has two
    last = {Form.TIME_MAJOR: (0, roots[0].steps), Form.SEQUENCE: (1, roots[0].steps), Form.HIDDEN: (0, rows),
            Form.HIDDEN_STACK: (0, rows)}.get(view.form)
    if last is None or axis not in (last[0], last[0] - 3) or not _within(index, last[1]):
        raise SpecError(f"{node.where}: Gather(axis={axis}) of index {index} from a {view.form.value}; symnn reads "
                        "the last step (index -1 or T-1 along the time axis) or one layer's final state")
    if view.form in (Form.HIDDEN, Form.HIDDEN_STACK):
        row = index % rows
        for root in roots:  # the op whose Y_h holds that row, and which of its directions
            if row < root.directions:
                break
            row -= root.directions
        if root.directions == 1:
            values[node.output] = root.value(False, node.where)
        else:
            s.views[node.output] = View(Form.FINAL, (root,), direction=row)
        return
    if not _within(index, last[1], last=True):
        raise SpecError(f"{node.where}: Gather of step {index} of a {view.form.value}; symnn's recurrent layers "
                        "return the last step (index -1) or every step, not step "
                        f"{index} alone")
    if roots[0].directions == 2 or roots[0].masked:
        # the whole sequence's last step: the reverse half has seen one step; over padded
        # samples (sequence_lens) a shorter sample's last step is padding, 0, not its last state
        values[node.output] = LastStep()(roots[0].value(True, node.where))
        return
    values[node.output] = roots[0].value(False, node.where)


def _concat(s: SequenceState, node: Step, values: dict[str, Tensor]) -> None:
    views = [s.views.get(key) for key in node.inputs if key]
    axis = node.attrs.get("axis")
    if axis in (1, -1) and views and all(v is not None and v.form is Form.FINAL for v in views):
        # a bidirectional op's final states, forward then reverse: the layer's last state
        if len(views) != 2 or views[0].roots != views[1].roots or (views[0].direction, views[1].direction) != (0, 1):
            raise SpecError(f"{node.where}: a Concat of final states of bidirectional recurrent ops other than one "
                            "op's forward and reverse, in that order (torch.cat((h_n[-2], h_n[-1]), dim=1)), which "
                            "symnn's layer returns")
        values[node.output] = views[0].roots[0].value(False, node.where)
        return
    if axis not in (0, -3) or any(v is None or v.form not in (Form.HIDDEN, Form.HIDDEN_STACK) for v in views):
        raise SpecError(f"{node.where}: a Concat of recurrent outputs; symnn reads one only of final states Y_h "
                        "along axis 0 (the layers of a stacked recurrent module), or of a bidirectional op's "
                        "two final states along axis 1")
    s.views[node.output] = View(Form.HIDDEN_STACK, tuple(root for v in views if v for root in v.roots))


def _reshape_steps(s: SequenceState, node: Step, consts: dict[str, tuple[int, ...]]) -> None:
    """``Reshape([0, 0, -1])`` of a bidirectional op's (T, N, 2, H) steps: (T, N, 2H), each step
    the two directions' states side by side, which the layer's sequence is."""
    view = s.views[node.inputs[0]]
    shape = consts.get(node.inputs[1]) if len(node.inputs) > 1 else None
    root = view.roots[0]
    if (shape is None or len(shape) != 3 or tuple(shape[:2]) not in ((0, 0), (root.steps, 0))
            or shape[2] != -1 or node.attrs.get("allowzero", 0) != 0):
        raise SpecError(f"{node.where}: a Reshape of a {view.form.value} to {shown(shape)}; symnn reads the "
                        "Reshape([0, 0, -1]) that torch.onnx.export writes, joining each step's two directions")
    s.views[node.output] = View(Form.TIME_MAJOR, view.roots)


def declare_outputs(s: SequenceState, pending: Pending, y: str, y_h: str) -> None:
    """A layout-0 op's Y and Y_h as views of ``pending``."""
    if y:
        s.views[y] = View(Form.Y if pending.directions == 1 else Form.Y_BI, (pending,))
    if y_h:
        s.views[y_h] = View(Form.HIDDEN, (pending,))
