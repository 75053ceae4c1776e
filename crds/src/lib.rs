//! flmon's Kubernetes API types and the names shared by the operator's webhook and the agent.

pub mod names;
