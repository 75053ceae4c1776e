//! flmon's operator: reconciles FLMonitors and AlertRules, injects the agent, analyses training.

pub mod analysis;
pub mod controller;
pub mod render;
pub mod webhook;
