"""``sn.from_torch`` of a module written with the functional API: ``F.linear`` and
``F.conv1d/2d`` on a submodule's own parameters, read by ``get_attr``, are that submodule's
Dense or Conv layer (:func:`functional_layer_role`), named and keyed as a call of it would be
(:func:`mark_functional_layers`, :func:`module_path`); a parameter read otherwise is refused
(:func:`check_param_attrs`)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from .errors import SpecError, SpecTypeError
from .naming import shown
from .torch_fx_roles import Kind, Role, one_line, unsupported, where

#: node.meta key: the module path of the parameters a functional layer reads
FUNCTIONAL_PATH = "symnn_functional_path"


def functional_layers(torch: Any) -> dict[Callable, tuple[str, ...]]:
    """F.linear, F.conv1d, F.conv2d -> their arguments in order (input, weight, bias, ...)."""
    F = torch.nn.functional
    conv = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    return {F.linear: ("input", "weight", "bias"), F.conv1d: conv, F.conv2d: conv}


def call_arguments(node: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """A call's arguments by name (positional ones in ``names``' order), any other refused."""
    given = dict(zip(names, node.args))
    if len(node.args) > len(names):
        raise unsupported(node, " with more arguments than it takes")
    for key, value in node.kwargs.items():
        if key not in names or key in given:
            raise unsupported(node, f" with argument {shown(key)}")
        given[key] = value
    return given


def mark_functional_layers(torch: Any, graph: Any) -> None:
    """Note, in ``node.meta``, the module path of each F.linear / F.conv1d / F.conv2d whose
    weight is a parameter read by get_attr (``blocks.0.weight``: ``blocks.0``): the layer it
    makes is that module's, named and keyed as a call of it would be."""
    table = functional_layers(torch)
    for node in graph.nodes:
        if node.op != "call_function" or node.target not in table:
            continue
        weight = call_arguments(node, table[node.target]).get("weight")
        if isinstance(weight, torch.fx.Node) and weight.op == "get_attr":
            path, _, leaf = str(weight.target).rpartition(".")
            node.meta[FUNCTIONAL_PATH] = path if leaf == "weight" and path else None


def functional_layer_role(torch: Any, root: Any, node: Any) -> Role:
    """``F.linear(x, m.weight, m.bias)`` or ``F.conv1d/2d(x, m.weight, m.bias, stride, padding,
    dilation, groups)`` on parameters of a submodule ``m`` read by get_attr (a module written
    with the functional API): the Dense or Conv layer of ``m``, its sizes read off the weight,
    keyed ``m.weight`` and ``m.bias`` as ``state_dict()`` keys them. A bias must be ``m.bias``
    (a Linear's is required, as a Dense has one); the settings must be constants."""
    F = torch.nn.functional
    given = call_arguments(node, functional_layers(torch)[node.target])
    x, weight, bias = given.get("input"), given.get("weight"), given.get("bias")
    path = node.meta.get(FUNCTIONAL_PATH)
    if not isinstance(x, torch.fx.Node) or path is None:  # the root module's own (an nn.Linear itself)
        raise unsupported(node, " other than on a tensor with the parameters 'weight' (and 'bias') of a submodule, "
                           "read as attributes (m.weight, m.bias), which key them as state_dict() does")
    if bias is not None and not (isinstance(bias, torch.fx.Node) and bias.op == "get_attr"
                                 and str(bias.target) == f"{path}.bias"):
        raise SpecError(f"{where(node)}: its bias must be {shown(path + '.bias')}, the parameter beside its weight")
    if node.target is F.linear and bias is None:
        raise SpecTypeError(f"{where(node)}: F.linear without a bias is not supported (a symnn Dense has a bias)")
    w = root.get_parameter(str(weight.target))
    settings = {k: v for k, v in given.items() if k not in ("input", "weight", "bias")}
    for key, value in settings.items():
        if isinstance(value, torch.fx.Node):
            raise SpecTypeError(f"{where(node)}: its {key} is computed; from_torch reads constant settings")
    nn = torch.nn
    try:  # the module these calls stand for, on the meta device (no memory), with their settings
        if node.target is F.linear:
            if w.dim() != 2:
                raise SpecError(f"{where(node)}: F.linear of a weight of shape {tuple(w.shape)}")
            return Role(Kind.LINEAR, (x,), nn.Linear(w.shape[1], w.shape[0], device="meta"))
        cls, rank = (nn.Conv1d, 3) if node.target is F.conv1d else (nn.Conv2d, 4)
        groups = int(settings.get("groups", 1))
        if w.dim() != rank:
            raise SpecError(f"{where(node)}: {node.target.__name__} of a weight of shape {tuple(w.shape)}")
        stand_in = cls(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), settings.get("stride", 1),
                       settings.get("padding", 0), settings.get("dilation", 1), groups, bias is not None,
                       device="meta")
    except (TypeError, ValueError, RuntimeError) as exc:  # settings PyTorch itself refuses
        raise SpecError(f"{where(node)}: {one_line(exc)}") from exc
    return Role(Kind.CONV, (x,), stand_in)


def check_param_attrs(roles: Mapping[Any, Role]) -> None:
    """A parameter read by get_attr is read only as the weight or bias of a functional layer."""
    for node, role in roles.items():
        if role.kind is not Kind.PARAM_ATTR:
            continue
        for user in node.users:
            if module_path(user) is None or roles[user].kind not in (Kind.LINEAR, Kind.CONV) or (
                    node in roles[user].operands):
                raise SpecError(f"{where(user)} reads the parameter {shown(str(node.target))} directly; from_torch "
                                "reads a parameter only as the weight or bias of its module's call, or of "
                                "F.linear / F.conv1d / F.conv2d")


def module_path(node: Any) -> str | None:
    """The path of the module whose layer ``node`` makes: a call_module's target, or the module
    holding the weight that F.linear / F.conv1d / F.conv2d reads by get_attr (``blocks.0`` of
    ``blocks.0.weight``); None for another node."""
    if node.op == "call_module":
        return str(node.target)
    if node.op == "call_function" and node.meta.get(FUNCTIONAL_PATH) is not None:
        return node.meta[FUNCTIONAL_PATH]
    return None
