"""`edgeflow train` in a process with N logical CPU devices (set before TensorFlow starts).

Usage: train_replicas.py N ARGS...; run eagerly so that a small machine need not compile N copies of
the supernet's graph (tests/test_distribute.py).
"""

from __future__ import annotations

import sys

import tensorflow as tf

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * int(sys.argv[1]))
tf.config.run_functions_eagerly(True)

from edgeflow.commands.train import main  # noqa: E402

raise SystemExit(main(sys.argv[2:]))
