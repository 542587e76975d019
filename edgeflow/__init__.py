"""edgeflow: train the EdgeFlowNAS strict-fairness supernet (see docs/protocol.md).

Importing this package loads no TensorFlow; only `edgeflow.model`, `edgeflow.train` and
`edgeflow.data.pipeline` do.
"""

__version__ = "0.1.0"
