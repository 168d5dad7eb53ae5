"""A program: the named output nodes a kernel must compute, plus the forward names."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from . import ir


@dataclass(frozen=True)
class Program:
    """Named outputs (``yhat``, ``loss``, ``dL_dW1``, ...) and names for forward nodes."""

    outputs: dict[str, ir.Node]
    names: dict[int, str] = field(default_factory=dict)  # id(node) -> readable name (z1, a1...)
    name_nodes: tuple[ir.Node, ...] = ()  # keeps the named nodes alive (ids stay valid)
    #: id(node) -> the node of the derived program (before any elementwise pass) it computes;
    #: a node absent computes itself. The passes keep it, so each emitted statement can say
    #: which equation of the derivation it computes (interned nodes are never freed: ids hold)
    origins: dict[int, ir.Node] = field(default_factory=dict)

    #: id(node of the derived program) -> id of the derivation equation that node belongs to
    #: (:func:`symnn.autodiff.display.equation_owners`); set once, after the passes
    owners: dict[int, str] = field(default_factory=dict)

    def origin(self, node: ir.Node) -> ir.Node:
        """The node of the derived program that ``node`` computes."""
        return self.origins.get(id(node), node)

    def equation_of(self, node: ir.Node) -> str | None:
        """The id of the derivation equation ``node`` computes, if the program knows it."""
        return self.owners.get(id(self.origin(node)))

    def nodes(self) -> list[ir.Node]:
        return ir.toposort(self.outputs.values())

    def op_counts(self) -> tuple[int, int]:
        return ir.count_ops(self.outputs.values())

    def rewrite(self, fn: Callable[[ir.Node, ir.Node], ir.Node]) -> "Program":
        """Rebuild bottom-up: ``fn(rebuilt, original)`` gives each node's replacement.

        ``rebuilt`` is the original node with its operands already replaced; names follow
        their node.
        """
        new: dict[int, ir.Node] = {}
        origins: dict[int, ir.Node] = {}
        for node in self.nodes():
            src = tuple(new[id(s)] for s in node.src)
            rebuilt = node if src == node.src else ir.Node(node.op, src, node.arg, node.shape)
            out = new[id(node)] = fn(rebuilt, node)
            origins.setdefault(id(out), self.origin(node))
        names: dict[int, str] = {}
        keep = []
        for node in self.name_nodes:
            if id(node) in new and id(node) in self.names:
                names[id(new[id(node)])] = self.names[id(node)]
                keep.append(new[id(node)])
        outputs = {k: new[id(v)] for k, v in self.outputs.items()}
        return replace(self, outputs=outputs, names=names, name_nodes=tuple(keep), origins=origins)

    def consumers(self) -> dict[int, int]:
        count: dict[int, int] = {}
        for node in self.nodes():
            for s in node.src:
                count[id(s)] = count.get(id(s), 0) + 1
        for v in self.outputs.values():
            count[id(v)] = count.get(id(v), 0) + 1
        return count
