"""monitor: the watchdog sidecar that follows run directories and exports them to Prometheus.

Light package: imports watchdog, prometheus_client and the light parts of `edgeflow`, never TensorFlow
(it runs on login and service nodes that have none).
"""
