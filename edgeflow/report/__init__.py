"""Pictures of runs for people (`edgeflow report`): curves of a run's figures; matplotlib, no TensorFlow."""
