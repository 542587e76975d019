"""Variable names of the original (TF1-style) EdgeFlowNAS v1 trainer's checkpoints, mapped onto ours.

Light module (no TensorFlow): pure string rules, so the mapping is testable alone.

The original names a model variable `supernet_backbone/...` or `supernet_head/...`, with scopes its
layer helpers numbered automatically (`conv_bn_relu8`, `conv9`, `bn10`, `resize_conv140`) between
the meaningful ones. Those numbers depend on graph construction order, so they are dropped -- except
the scope right above the leaf, which is the layer's own name (a residual block's `conv2` / `bn2`
would otherwise look like a numbered scope). What remains is matched against a closed set of
patterns; anything else under the model scopes is a variable this supernet does not have.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MODEL_SCOPES = ("supernet_backbone/", "supernet_head/")
_NUMBERED = re.compile(r"^(conv_bn_relu|conv|bn|resize_conv)\d+$")
_BN_LEAF = r"(?P<leaf>gamma|beta|moving_mean|moving_variance)"

# (pattern over the name without model scope and numbered scopes, our name template)
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), t) for p, t in (
    (r"^(?P<layer>E[01])_conv/kernel$", "{layer}/conv/kernel"),
    (rf"^(?P<layer>E[01])_bn/{_BN_LEAF}$", "{layer}/bn/{leaf}"),
    (r"^(?P<layer>Down[12])Conv/kernel$", "{layer}/conv/kernel"),
    (rf"^(?P<layer>Down[12])BN/{_BN_LEAF}$", "{layer}/bn/{leaf}"),
    (r"^(?P<layer>Up[12])_conv/kernel$", "{layer}/conv/kernel"),
    (rf"^(?P<layer>Up[12])BN/{_BN_LEAF}$", "{layer}/bn/{leaf}"),
    (r"^(?P<layer>H[12])/k(?P<k>[357])_conv/kernel$", "{layer}/choice/k{k}/kernel"),
    (rf"^(?P<layer>H[12])BN/{_BN_LEAF}$", "{layer}/bn/{leaf}"),
    (r"^(?P<layer>H[012]Out)/k(?P<k>[357])/kernel$", "{layer}/k{k}/kernel"),
    (r"^(?P<layer>EB[01]|DB[01])/branch(?P<d>[123])_block(?P<i>[123])/conv1_conv/kernel$",
     "{layer}/depth{d}/block{i0}/conv1/kernel"),
    (rf"^(?P<layer>EB[01]|DB[01])/branch(?P<d>[123])_block(?P<i>[123])/conv1_bn/{_BN_LEAF}$",
     "{layer}/depth{d}/block{i0}/bn1/{leaf}"),
    (r"^(?P<layer>EB[01]|DB[01])/branch(?P<d>[123])_block(?P<i>[123])/conv2/kernel$",
     "{layer}/depth{d}/block{i0}/conv2/kernel"),
    (rf"^(?P<layer>EB[01]|DB[01])/branch(?P<d>[123])_block(?P<i>[123])/bn2/{_BN_LEAF}$",
     "{layer}/depth{d}/block{i0}/bn2/{leaf}"),
))

# Our depth-branch BN statistics: the original updated them on every step for every branch
# (selected or not), so imported values are not statistics of any one arch.
_DEPTH_BRANCH_STAT = re.compile(r"^(EB[01]|DB[01])/depth[123]/block[012]/bn[12]/moving_(mean|variance)$")

# Bookkeeping the original saves next to the model; an import ignores it (and counts it per kind).
IGNORED_KINDS = ("adam_slots", "adam_beta_powers", "gradient_accumulators", "global_step", "other")
_ADAM_SLOT = re.compile(r"/Adam(_1)?$")
_BETA_POWER = re.compile(r"^(.*/)?beta[12]_power(_\d+)?$")
_ACCUMULATOR = re.compile(r"^(.*/)?strict_accum_\d+$")
_GLOBAL_STEP = re.compile(r"^(.*/)?global_step$")


class UnknownVariable(ValueError):
    """A variable under the model scopes that this supernet has no place for."""


@dataclass(frozen=True)
class Classified:
    model: dict[str, str]              # original name -> our variable name
    ignored: dict[str, list[str]]      # kind -> original names


def ignored_kind(name: str) -> str | None:
    """The bookkeeping kind of `name`, or None when it is (or claims to be) a model variable."""
    if _ADAM_SLOT.search(name):
        return "adam_slots"
    if _BETA_POWER.match(name):
        return "adam_beta_powers"
    if _ACCUMULATOR.match(name):
        return "gradient_accumulators"
    if _GLOBAL_STEP.match(name):
        return "global_step"
    if name.startswith(MODEL_SCOPES):
        return None
    return "other"


def map_name(name: str) -> str:
    """Our variable name (without ':0') for an original model variable; UnknownVariable otherwise."""
    scope = next((s for s in MODEL_SCOPES if name.startswith(s)), None)
    if scope is None:
        raise UnknownVariable(f"{name}: not under {' or '.join(s.rstrip('/') for s in MODEL_SCOPES)}")
    parts = name[len(scope):].split("/")
    if len(parts) < 2:
        raise UnknownVariable(f"{name}: no layer scope above the variable")
    kept = [p for p in parts[:-2] if not _NUMBERED.match(p)] + parts[-2:]
    short = "/".join(kept)
    for pattern, template in _RULES:
        match = pattern.match(short)
        if match:
            groups = match.groupdict()
            if "i" in groups:
                if int(groups["i"]) > int(groups["d"]):  # branch d has blocks 1..d only
                    break
                groups["i0"] = str(int(groups["i"]) - 1)
            return template.format(**groups)
    raise UnknownVariable(f"{name}: no variable of this supernet corresponds to it (read as {short!r})")


def original_name(ours: str) -> str:
    """How the original spells our variable, numbered scopes shown as '...' (for error messages)."""
    parts = ours.split("/")
    layer, leaf = parts[0], parts[-1]
    scope = "supernet_head" if layer.startswith("H") else "supernet_backbone"
    if len(parts) == 5 and parts[1].startswith("depth"):
        block = f"branch{parts[1][5:]}_block{int(parts[2][5:]) + 1}"
        own = {"conv1": "conv1_conv", "bn1": "conv1_bn", "conv2": "conv2", "bn2": "bn2"}[parts[3]]
        return f"{scope}/{layer}/{block}/.../{own}/{leaf}"
    if parts[1] == "choice":
        return f"{scope}/{layer}/.../{parts[2]}_conv/{leaf}"
    if layer.endswith("Out"):
        return f"{scope}/{layer}/.../{parts[1]}/{leaf}"
    kind = parts[1]
    if layer.startswith("E"):
        own = f"{layer}_{kind}"
    elif layer.startswith("Down"):
        own = f"{layer}{'Conv' if kind == 'conv' else 'BN'}"
    elif layer.startswith("Up"):
        own = f"{layer}{'_conv' if kind == 'conv' else 'BN'}"
    else:  # H1 / H2 shared BN
        own = f"{layer}BN"
    return f"{scope}/.../{own}/{leaf}"


def classify(names: list[str]) -> Classified:
    """Split a checkpoint's names into mapped model variables and ignored bookkeeping.

    Raises UnknownVariable for a model-scope name with no counterpart, and for two original names
    that map onto the same variable of ours.
    """
    model: dict[str, str] = {}
    ignored: dict[str, list[str]] = {kind: [] for kind in IGNORED_KINDS}
    seen: dict[str, str] = {}
    for name in sorted(names):
        kind = ignored_kind(name)
        if kind is not None:
            ignored[kind].append(name)
            continue
        ours = map_name(name)
        if ours in seen:
            raise UnknownVariable(f"{name}: maps onto {ours}, which {seen[ours]} already fills")
        seen[ours] = name
        model[name] = ours
    return Classified(model=model, ignored=ignored)


def is_depth_branch_statistic(ours: str) -> bool:
    """True for the moving mean / variance of a BN inside a depth branch (EB0, EB1, DB0, DB1)."""
    return bool(_DEPTH_BRANCH_STAT.match(ours))
