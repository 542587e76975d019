"""The search space: arch codes, the choice table, the strict-fairness sampler and the cost model.

Light package (NumPy only), below the model: the model is built from its table, and the trainer, the
launcher, the monitor and the tools after training all speak its vocabulary. A new space (more genes,
other options) is added here and in `edgeflow/model/`, nowhere else.
"""
