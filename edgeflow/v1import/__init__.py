"""Import checkpoints of the original TF1-style EdgeFlowNAS v1 trainer (docs/training.md).

`names` maps the original's variable names onto this supernet's (no TensorFlow), `meta` reads its
`.meta.json`, `importer` checks and writes the run directory.
"""

from edgeflow.v1import.importer import ImportRefused, ImportResult, check_out, import_v1, resolve_prefix
from edgeflow.v1import.meta import MetaError, SourceMeta

__all__ = ["ImportRefused", "ImportResult", "MetaError", "SourceMeta", "check_out", "import_v1",
           "resolve_prefix"]
