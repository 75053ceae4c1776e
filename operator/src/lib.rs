//! flmon's operator: reconciles FLMonitors and AlertRules, injects the agent, analyses training.

pub mod alerts;
pub mod analysis;
pub mod cli;
pub mod controller;
pub mod dashboard;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod pipeline;
pub mod render;
pub mod run;
pub mod webhook;
