"""The launcher: preflight gate, submitit executors, requeue/resume, sweeps (`python -m jobs`).

Runs on a login node: imports submitit, PyYAML and the light parts of edgeflow, never TensorFlow.
"""
