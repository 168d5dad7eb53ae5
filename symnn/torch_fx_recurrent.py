"""``sn.from_torch`` of ``nn.RNN``/``GRU``/``LSTM``: how a traced graph's recurrent calls and the
parts of their results are classified (:func:`recurrent_role`, :func:`getitem_role`), which
readings of a result are the layer's last state or its sequence (:func:`recurrent_modes`), the
checks of time-major values (:func:`check_time_major`) and of initial states
(:func:`check_states`), and the symnn layer a module becomes (:func:`recurrent_layer`); every
setting of PyTorch's modules has its symnn counterpart. symnn/torch_fx.py builds the graph."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .errors import SpecError
from .layers import Layer
from .naming import shown
from .recurrent import GRU, LSTM, RNN
from .torch_fx_roles import Kind, Role, subscript, unsupported, where

def recurrent_table(torch: Any) -> dict[type, type[Layer]]:
    """torch recurrent module class -> the symnn layer it becomes (the exact classes)."""
    nn = torch.nn
    return {nn.RNN: RNN, nn.GRU: GRU, nn.LSTM: LSTM}


def recurrent_role(torch: Any, sub: Any, node: Any) -> Role:
    """An ``nn.RNN``/``GRU``/``LSTM`` called on a sequence, optionally with its initial state
    ``hx`` (an LSTM's ``(h_0, c_0)``); every setting of the module (batch_first, bidirectional,
    dropout, proj_size) has its symnn counterpart. Its operands are the sequence, then the
    initial states (what they may be: :func:`check_states`)."""
    kind = type(sub).__name__
    args = list(node.args)
    for key, value in node.kwargs.items():
        if key not in ("input", "hx")[len(args):]:
            raise unsupported(node, f" with argument {shown(key)}")
        args.append(value)
    if not 1 <= len(args) <= 2 or not isinstance(args[0], torch.fx.Node):
        raise unsupported(node, " with arguments other than a sequence and its initial state")
    states: tuple = ()
    if len(args) == 2 and args[1] is not None:
        hx = args[1]
        want = 2 if isinstance(sub, torch.nn.LSTM) else 1
        states = tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)
        if len(states) != want or not all(isinstance(h, torch.fx.Node) for h in states):
            what = "a tuple (h_0, c_0)" if want == 2 else "one tensor h_0"
            raise SpecError(f"{where(node)}: the initial state of {kind} must be {what}")
    return Role(Kind.RECURRENT, (args[0], *states), sub)


def getitem_role(torch: Any, node: Any, roles: Mapping[Any, Role]) -> Role:
    """``result[i]`` of a recurrent module and of its state, ``out[:, -1]``, ``h_n[-1]``,
    ``x.shape[0]``: each becomes what it selects; every other subscript is refused."""
    base, index = node.args
    role = roles.get(base)
    kind = None if role is None else role.kind
    if kind is Kind.RECURRENT and index in (0, 1):
        return Role(Kind.RNN_OUTPUT if index == 0 else Kind.RNN_STATE, (base,), role.module)
    if kind is Kind.RNN_STATE and isinstance(role.module, torch.nn.LSTM) and index in (0, 1):
        if index == 1 and node.users:
            raise SpecError(f"{where(node)}: the final cell state c_n of {module_of(role)} is used; symnn's "
                            "LSTM returns the hidden state only (out[:, -1] or h_n[-1])")
        return Role(Kind.RNN_HIDDEN if index == 0 else Kind.RNN_CELL, role.operands, role.module)
    if kind in (Kind.RNN_STATE, Kind.RNN_HIDDEN) and role.module.bidirectional:
        return final_state(node, role, index)
    if kind in (Kind.RNN_STATE, Kind.RNN_HIDDEN):
        return last_layer(node, role, index)
    if kind is Kind.RNN_OUTPUT and not role.module.batch_first:  # time-major: (T, N, D*H)
        if index != -1:
            raise SpecError(f"{where(node)}: output[{subscript(index)}] of the time-major (batch_first=False) "
                            f"{module_of(role)} is not supported; from_torch reads its last step out[-1], or the "
                            "whole sequence")
        if role.module.bidirectional:  # the whole output's last step (the reverse state after one step)
            return Role(Kind.SEQUENCE_LAST, role.operands, role.module)
        return Role(Kind.LAST_STEP, role.operands, role.module)
    if kind is Kind.RNN_OUTPUT:
        if index == (slice(None), -1) and role.module.bidirectional:  # as the time-major out[-1] above
            return Role(Kind.SEQUENCE_LAST, role.operands, role.module)
        if index != (slice(None), -1):
            raise SpecError(f"{where(node)}: output[{subscript(index)}] of {module_of(role)} is not "
                            "supported; from_torch reads the last step out[:, -1] or the whole sequence")
        return Role(Kind.LAST_STEP, role.operands, role.module)
    if kind is Kind.SHAPE and index == 0:
        return Role(Kind.BATCH_SIZE)
    raise unsupported(node, f" (subscript [{subscript(index)}])")


def module_of(role: Role) -> str:
    """The recurrent module a part of a result comes from, by class and attribute, for an error."""
    return f"{type(role.module).__name__} {shown(str(role.operands[0].target))}"


BIDI_LAST = "torch.cat((h_n[-2], h_n[-1]), dim=1)"


def final_state(node: Any, role: Role, index: object) -> Role:
    """``h_n[-2]`` or ``h_n[-1]`` (``h_n[2L-2]``, ``h_n[2L-1]``) of a bidirectional module: the
    last layer's forward or reverse final state, which symnn's layer returns side by side."""
    rows = 2 * int(role.module.num_layers)
    if isinstance(index, int) and not isinstance(index, bool) and index in (-2, -1, rows - 2, rows - 1):
        return Role(Kind.RNN_FINAL, role.operands, role.module, index=0 if index in (-2, rows - 2) else 1)
    raise SpecError(f"{where(node)}: h_n[{subscript(index)}] of the bidirectional {module_of(role)} "
                    f"(num_layers={rows // 2}) is not supported; symnn's layer returns the last layer's final "
                    f"states of both directions, {BIDI_LAST}")


def last_layer(node: Any, role: Role, index: object) -> Role:
    """``h_n[-1]`` (or ``h_n[L-1]``): the last layer's final state, which is ``out[:, -1]``;
    another layer's is not an output of symnn's stacked layer."""
    if role.module.bidirectional:
        raise SpecError(f"{where(node)}: h_n of the bidirectional {module_of(role)} holds two final states per "
                        f"layer; symnn's layer returns the last layer's, {BIDI_LAST}")
    layers = int(role.module.num_layers)
    if isinstance(index, int) and not isinstance(index, bool) and index in (-1, layers - 1):
        return Role(Kind.LAST_STEP, role.operands, role.module)
    raise SpecError(f"{where(node)}: h_n[{subscript(index)}] of {module_of(role)} "
                    f"(num_layers={layers}) is not supported; symnn's layer returns the last layer's final "
                    "state, h_n[-1]")


def squeeze_role(torch: Any, node: Any, roles: Mapping[Any, Role]) -> Role:
    """``h_n.squeeze(0)`` of a one-layer recurrent module: its final state (N, H)."""
    role = roles.get(node.args[0])
    if role is None or role.kind not in (Kind.RNN_STATE, Kind.RNN_HIDDEN) or (
            role.kind is Kind.RNN_STATE and isinstance(role.module, torch.nn.LSTM)):
        raise unsupported(node)
    return last_layer(node, role, 0)


#: what may read each part of a recurrent module's result (everything else is refused)
RECURRENT_USERS = {
    Kind.RECURRENT: (frozenset({Kind.RNN_OUTPUT, Kind.RNN_STATE}), "unpacked: out, h_n = rnn(x)"),
    Kind.RNN_STATE: (frozenset({Kind.RNN_HIDDEN, Kind.RNN_CELL, Kind.LAST_STEP, Kind.RNN_FINAL,
                                 Kind.RECURRENT}),
                      "indexed: h_n[-1] (the last layer's final state), or as another module's initial state"),
    Kind.RNN_HIDDEN: (frozenset({Kind.LAST_STEP, Kind.RNN_FINAL}),
                       "indexed: h_n[-1] (the last layer's final state)"),
    Kind.RNN_FINAL: (frozenset({Kind.LAST_STEP}), f"joined with the other direction's: {BIDI_LAST}"),
    Kind.SHAPE: (frozenset({Kind.BATCH_SIZE}), "x.shape[0], the batch size"),
    Kind.BATCH_SIZE: (frozenset({Kind.FLATTEN}), "t.reshape(n, -1)"),
}


def recurrent_modes(roles: Mapping[Any, Role]) -> dict[Any, bool]:
    """Each recurrent module call's ``return_sequences``: True when forward uses its output
    sequence whole, False when it uses the last state only (``out[:, -1]``, ``h_n[-1]``);
    both at once is refused (symnn's layer returns one), as is any other use of the result."""
    for node, role in roles.items():
        allowed = RECURRENT_USERS.get(role.kind)
        if allowed is None:
            continue
        for user in node.users:
            if roles[user].kind not in allowed[0]:
                part = role.module is not None and role.kind is not Kind.RECURRENT  # its node names the module
                source = f" (of {module_of(role)})" if part else ""
                raise SpecError(f"{where(user)} reads {where(node)}{source} directly; from_torch reads it "
                                f"{allowed[1]}")
    modes: dict[Any, bool] = {}
    for node, role in roles.items():
        if role.kind is not Kind.RECURRENT:
            continue
        parts = [n for n, r in roles.items() if r.operands[:1] == (node,) and r.kind is not Kind.RECURRENT]
        last = any(roles[n].kind is Kind.LAST_STEP or (roles[n].kind is Kind.RNN_STATE and any(
            roles[u].kind is Kind.RECURRENT for u in n.users)) for n in parts)
        whole = any(roles[n].kind is Kind.RNN_OUTPUT and any(roles[u].kind is not Kind.LAST_STEP for u in n.users)
                    for n in parts)
        if last and whole:
            raise SpecError(f"{where(node)}: forward uses both the whole output sequence and the last state; "
                            f"symnn's {type(role.module).__name__} returns one of them (return_sequences)")
        modes[node] = whole
    return modes


def recurrent_layer(torch: Any, mod: Any, sequences: bool, name: str) -> Layer:
    """The ``sn.RNN``/``GRU``/``LSTM`` of a torch recurrent module (its settings checked by
    :func:`recurrent_role`), returning the whole sequence or the last state."""
    cls = recurrent_table(torch)[type(mod)]
    sizes = (int(mod.input_size), int(mod.hidden_size), int(mod.num_layers))
    if cls is RNN:
        return RNN(*sizes, mod.nonlinearity, bool(mod.bias), sequences, name=name,
                   bidirectional=bool(mod.bidirectional), dropout=float(mod.dropout))
    extra = {"proj_size": int(mod.proj_size)} if cls is LSTM else {}
    return cls(*sizes, bool(mod.bias), sequences, name=name, bidirectional=bool(mod.bidirectional),
               dropout=float(mod.dropout), **extra)


#: the tensor methods that can swap a sequence's batch and time axes
SWAP_METHODS = frozenset({"transpose", "permute", "swapaxes", "swapdims"})


def time_swap_role(node: Any, what: str) -> Role:
    """``t.transpose(0, 1)`` (``torch.transpose``, ``swapaxes``, ``swapdims``) or
    ``t.permute(1, 0, 2)``: the batch and time axes of a sequence swapped, what a module does
    around a time-major (``batch_first=False``) recurrent module; every other axis order is
    refused (:func:`check_time_major` checks what it is applied to and who reads it)."""
    args = node.args[1:]
    if what == "permute":
        order = tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else tuple(args)
        swaps = order == (1, 0, 2) and not node.kwargs
    else:
        swaps = not node.kwargs and tuple(args) in ((0, 1), (1, 0))
    if not swaps or not node.args or not hasattr(node.args[0], "op"):
        raise SpecError(f"{where(node)}: {what}{tuple(args)} is not supported; from_torch reads the swap of a "
                        "sequence's batch and time axes, transpose(0, 1) or permute(1, 0, 2), around a "
                        "batch_first=False recurrent module")
    return Role(Kind.TIME_SWAP, (node.args[0],))


def is_time_major(node: Any, roles: Mapping[Any, Role]) -> bool:
    """Whether PyTorch holds ``node``'s value time-major, (T, N, F): the output sequence of a
    batch_first=False module, or a batch-first sequence's axes swapped (and back)."""
    role = roles[node]
    if role.kind is Kind.RNN_OUTPUT:
        return not role.module.batch_first
    if role.kind is Kind.TIME_SWAP:
        return not is_time_major(role.operands[0], roles)
    return False


def check_time_major(roles: Mapping[Any, Role]) -> None:
    """Time-major values meet only what reads them as PyTorch does: a batch_first=False module
    reads a time-major sequence (or a forward argument that nothing else reads: the network's
    input is then that sequence batch-first, (N, T, F)), a batch-first module a batch-first one;
    a time-major value is read only by such a module, as its last step ``out[-1]`` or swapped
    back to batch-first."""
    for node, role in roles.items():
        if role.kind is Kind.RECURRENT:
            operand = role.operands[0]
            want = not role.module.batch_first
            if is_time_major(operand, roles) == want:
                continue
            if want and operand.op == "placeholder" and all(
                    roles[u].kind is Kind.RECURRENT and not roles[u].module.batch_first
                    and roles[u].operands[0] is operand for u in operand.users):
                continue  # a time-major forward argument: the network reads it batch-first
            layout = ("time-major (T, N, F)", "batch-first (N, T, F)")
            raise SpecError(f"{where(node)}: the {'time-major' if want else 'batch-first'} "
                            f"{type(role.module).__name__} (batch_first={role.module.batch_first}) reads "
                            f"{where(operand)}, a {layout[1] if want else layout[0]} sequence; swap its axes "
                            "with transpose(0, 1) first")
        if is_time_major(node, roles):
            source = f" (the output of {module_of(role)})" if role.kind is Kind.RNN_OUTPUT else ""
            for user in node.users:
                ok = roles[user].kind in (Kind.RECURRENT, Kind.TIME_SWAP, Kind.LAST_STEP, Kind.SEQUENCE_LAST)
                if not ok:
                    raise SpecError(f"{where(user)} reads {where(node)}{source}, a time-major (T, N, ...) sequence; "
                                    "from_torch reads one only as the input of a batch_first=False recurrent "
                                    "module, its last step out[-1], or swapped to batch-first (transpose(0, 1))")


def check_states(torch: Any, roles: Mapping[Any, Role]) -> None:
    """A recurrent module's initial state is a forward argument that only initial states read
    (the network's input, batch-first: each sample's (num_layers*D, H), PyTorch's ``h_0``
    transposed to (N, num_layers*D, H)), or the final state ``h_n`` of a one-layer,
    one-direction GRU or RNN read whole (an encoder's state handed to a decoder: symnn's
    encoder then returns its last state, which is that ``h_n``). An LSTM's ``(h_n, c_n)``, or
    the state of a stack or of a bidirectional module, is not a value symnn's layers return."""
    for node, role in roles.items():
        if role.kind is not Kind.RECURRENT:
            continue
        for state in role.operands[1:]:
            made = roles[state]
            if made.kind is Kind.INPUT:
                if all(roles[u].kind is Kind.RECURRENT and state in roles[u].operands[1:] for u in state.users):
                    continue
                raise SpecError(f"forward argument {shown(state.target)} is the initial state of {where(node)} and is "
                                "read otherwise too; from_torch reads an initial state only as one")
            if (made.kind is Kind.RNN_STATE and not isinstance(made.module, torch.nn.LSTM)
                    and int(made.module.num_layers) == 1 and not made.module.bidirectional):
                continue
            raise SpecError(f"{where(node)} starts from {where(state)}; from_torch reads an initial state that is "
                            "a forward argument, or the whole h_n of a one-layer, one-direction GRU or RNN (an "
                            "LSTM's (h_n, c_n), a stack's or a bidirectional module's final states are not values "
                            "symnn's layers return)")


#: the nodes of a recurrent call and of what reads its result (:func:`_recurrent_part`)
RECURRENT_PARTS = frozenset({Kind.RECURRENT, Kind.RNN_OUTPUT, Kind.RNN_STATE, Kind.RNN_HIDDEN, Kind.RNN_CELL,
                              Kind.RNN_FINAL, Kind.LAST_STEP, Kind.SEQUENCE_LAST, Kind.SHAPE, Kind.BATCH_SIZE})


def final_states_cat(node: Any, tensors: Sequence[Any], roles: Mapping[Any, Role]) -> Role | None:
    """``torch.cat((h_n[-2], h_n[-1]), dim=1)`` of a bidirectional module's final states, forward
    then reverse, one call's: that layer's last state; None where ``tensors`` holds no final
    state; any other join of final states refused."""
    finals = [roles[t] for t in tensors if roles[t].kind is Kind.RNN_FINAL]
    if not finals:
        return None
    if (len(finals) != 2 or len(tensors) != 2 or finals[0].operands != finals[1].operands
            or (finals[0].index, finals[1].index) != (0, 1)):
        raise SpecError(f"{where(node)}: joins final states of a bidirectional recurrent module other than "
                        f"as {BIDI_LAST}, which symnn's layer returns")
    return Role(Kind.LAST_STEP, finals[0].operands, finals[0].module)
