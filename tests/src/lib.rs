//! flmon's test environment: real etcd + kube-apiserver and a real Kafka broker for tests.
