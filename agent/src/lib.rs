//! flmon's agent: samples host, GPU, Kafka and training metrics and serves them to Prometheus.
