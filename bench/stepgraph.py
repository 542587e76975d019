"""Counting a traced step's graph: nodes and device kernels per step (bench/bench_step.py).

The count walks the step's graph and every function it calls, with the multiplicity each runs per
step: a while loop's body once per iteration (the arch loop: 3), a switch_case's branches on average
(strict fairness runs every option of every block once per step, so the average of a block's branches
times 3 iterations is exactly what runs), a tf.cond's larger branch (the one a finite step takes).

- nodes: every op the executor schedules per step (including constants, variable reads, shape
  arithmetic and control-flow plumbing): the host-side cost of a step.
- kernels: the ops that run a kernel on the device: floating-point computation and variable writes;
  not constants, reads, reshapes, int32/bool shape arithmetic (placed in host memory on a GPU) or
  the control-flow plumbing. An estimate of a step's launches on a GPU, before Grappler's fusions
  (the same rule for before and after, so their ratio is what counts).
"""

from __future__ import annotations

import collections
from typing import Any

# Ops that launch no device kernel.
FREE = {
    "Const", "Identity", "IdentityN", "NoOp", "_Arg", "_Retval", "Placeholder", "ReadVariableOp", "VarHandleOp",
    "Shape", "ShapeN", "Size", "Rank", "Reshape", "Squeeze", "ExpandDims", "StopGradient", "PreventGradient",
    "PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If", "StatelessIf", "Case",
    "StatelessCase", "OptionalFromValue", "OptionalGetValue", "OptionalNone", "OptionalHasValue",
    "BroadcastGradientArgs", "EnsureShape", "Snapshot",
}
HOST_DTYPES = {3, 9, 10}  # DT_INT32, DT_INT64, DT_BOOL: shape arithmetic and predicates live on the host
LOOP_TRIPS = 3  # the step's only loop: one iteration per arch


def _dtype(node: Any) -> int | None:
    for key in ("T", "dtype", "SrcT", "DstT"):
        if key in node.attr and node.attr[key].type:
            return int(node.attr[key].type)
    return None


def count(concrete: Any) -> dict[str, Any]:
    """{"nodes": per step, "kernels": per step, "graph_nodes": static total, "top": [(op, kernels), ...]}."""
    graph = concrete.graph.as_graph_def()
    library = {f.signature.name: f for f in graph.library.function}
    kernels: dict[str, float] = collections.defaultdict(float)
    nodes = [0.0]

    def walk(node_defs: Any, mult: float) -> None:
        for n in node_defs:
            nodes[0] += mult
            op = n.op
            if op in ("While", "StatelessWhile"):
                walk(library[n.attr["body"].func.name].node_def, mult * LOOP_TRIPS)
                walk(library[n.attr["cond"].func.name].node_def, mult * (LOOP_TRIPS + 1))
            elif op in ("If", "StatelessIf"):
                branches = [library[n.attr[k].func.name].node_def for k in ("then_branch", "else_branch")]
                walk(max(branches, key=len), mult)
            elif op in ("Case", "StatelessCase"):
                names = [f.name for f in n.attr["branches"].list.func]
                for name in names:
                    walk(library[name].node_def, mult / len(names))
            elif op in ("PartitionedCall", "StatefulPartitionedCall"):
                walk(library[n.attr["f"].func.name].node_def, mult)
            elif op not in FREE and _dtype(n) not in HOST_DTYPES:
                kernels[op] += mult

    walk(graph.node, 1.0)
    static = len(graph.node) + sum(len(f.node_def) for f in graph.library.function)
    return {"nodes": round(nodes[0]), "kernels": round(sum(kernels.values())), "graph_nodes": static,
            "top": [(op, round(c)) for op, c in sorted(kernels.items(), key=lambda kv: -kv[1])[:8]]}
