//! The mutating admission webhook that injects the agent as a native sidecar.
//!
//! [`inject`] is the pure decision (pod + monitors → patch or skip); the rest wires it to the
//! API server: [`settings`] (what a monitor contributes), [`selector`] (label selectors).

pub mod inject;
pub mod selector;
pub mod settings;

pub use inject::{Decision, Injection, Role, Skip, SkipReason, decide, has_agent};
pub use settings::{AgentDefaults, AgentSettings, GpuMode, InjectionSettings, KafkaSettings};

#[cfg(test)]
mod tests;
