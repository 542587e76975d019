"""Copy one arch's weights and BN statistics from the supernet into its fixed-arch network.

Matched by variable name: the subnet names its variables as the supernet names that branch's, so the
two sets must be equal, name for name and shape for shape, or the copy refuses.
"""

from __future__ import annotations

import tensorflow as tf

from edgeflow.export.subnet import Subnet


def _by_name(variables: list[tf.Variable]) -> dict[str, tf.Variable]:
    out: dict[str, tf.Variable] = {}
    for v in variables:
        if v.name in out:
            raise AssertionError(f"two variables named {v.name}")
        out[v.name] = v
    return out


def copy_from_supernet(supernet: tf.Module, subnet: Subnet) -> int:
    """Assign every subnet variable the value of the supernet variable of the same name; returns how many."""
    source = _by_name(supernet.arch_variables(subnet.arch, trainable_only=False))
    target = _by_name(list(subnet.variables))
    if set(source) != set(target):
        missing = sorted(set(source) - set(target))
        extra = sorted(set(target) - set(source))
        raise AssertionError(f"arch {subnet.code}: subnet and supernet variables differ "
                             f"(not in subnet: {missing}; not in supernet: {extra})")
    for name, var in target.items():
        if tuple(var.shape) != tuple(source[name].shape):
            raise AssertionError(f"{name}: subnet shape {tuple(var.shape)}, "
                                 f"supernet {tuple(source[name].shape)}")
        var.assign(source[name])
    return len(target)
