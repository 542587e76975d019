"""Arch codes of the EdgeFlowNAS supernet: 9 choice blocks, 3 options each (protocol §2).

Light module (no TensorFlow): the launcher, the monitor and the CLI parse codes with it.
"""

from __future__ import annotations

from collections.abc import Sequence

NUM_BLOCKS = 9
NUM_OPTIONS = 3
# Order of the digits in an arch code.
BLOCK_NAMES: tuple[str, ...] = ("EB0", "EB1", "DB0", "DB1", "H0Out", "H1", "H1Out", "H2", "H2Out")
# The EdgeFlowNet bilinear baseline.
BASELINE_ARCH = "000021222"


def parse_arch(code: str) -> tuple[int, ...]:
    """Parse "000021222" or "0 0 0 0 2 1 2 2 2" (also commas) into 9 ints in {0, 1, 2}.

    Raises ValueError saying what is wrong with the code.
    """
    if not isinstance(code, str):
        raise ValueError(f"arch code must be a string, got {type(code).__name__}")
    text = code.replace(",", " ").strip()
    if not text:
        raise ValueError(f"arch code is empty; expected {NUM_BLOCKS} digits in 0..{NUM_OPTIONS - 1}, "
                         f"e.g. {BASELINE_ARCH!r}")
    digits = text.split() if any(c.isspace() for c in text) else list(text)
    if not all(len(d) == 1 and d in "0123456789" for d in digits):
        raise ValueError(f"arch code {code!r} is not {NUM_BLOCKS} digits in 0..{NUM_OPTIONS - 1} "
                         f"(e.g. {BASELINE_ARCH!r} or '0 0 0 0 2 1 2 2 2')")
    if len(digits) != NUM_BLOCKS:
        raise ValueError(f"arch code {code!r} has {len(digits)} digits, expected {NUM_BLOCKS} "
                         f"(one per block {', '.join(BLOCK_NAMES)})")
    arch = tuple(int(d) for d in digits)
    bad = [f"{BLOCK_NAMES[i]}={v}" for i, v in enumerate(arch) if not 0 <= v < NUM_OPTIONS]
    if bad:
        raise ValueError(f"arch code {code!r} has options outside 0..{NUM_OPTIONS - 1}: {', '.join(bad)}")
    return arch


def validate_arch(arch: Sequence[int]) -> tuple[int, ...]:
    """Check a sequence of 9 option indices (ints, NumPy ints); return it as a tuple of int."""
    values = tuple(int(v) for v in arch)
    if len(values) != NUM_BLOCKS:
        raise ValueError(f"arch has {len(values)} entries, expected {NUM_BLOCKS}")
    bad = [f"{BLOCK_NAMES[i]}={v}" for i, v in enumerate(values) if not 0 <= v < NUM_OPTIONS]
    if bad:
        raise ValueError(f"arch {values} has options outside 0..{NUM_OPTIONS - 1}: {', '.join(bad)}")
    return values


def format_arch(arch: Sequence[int] | str) -> str:
    """Canonical code string, e.g. (0,0,0,0,2,1,2,2,2) -> "000021222"."""
    values = parse_arch(arch) if isinstance(arch, str) else validate_arch(arch)
    return "".join(str(v) for v in values)
