//! flmon's agent: samples host, GPU, Kafka and training metrics and serves them to Prometheus.
//!
//! Data flow: collectors (one thread each, [`collectors::REGISTRY`]) and the ingest listener
//! ([`server::ingest_router`]) render their own section of `/metrics` into a [`snapshot::Snapshot`]
//! and append records to the [`history::History`] ring buffers; the metrics listener
//! ([`server::metrics_router`]) only reads both.

pub mod app;
pub mod collectors;
pub mod config;
pub mod events;
pub mod exposition;
pub mod history;
pub mod json;
pub mod librdkafka;
pub mod metrics;
pub mod server;
pub mod snapshot;
pub mod training;

pub use app::{Agent, run};
pub use config::Config;
