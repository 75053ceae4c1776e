//! The mutating admission webhook that injects the agent as a native sidecar (SPEC §4).
//!
//! - [`inject`]: the pure decision, pod + the FLMonitors of its namespace → JSON patch or skip.
//! - [`settings`]: what a monitor contributes ([`InjectionSettings`], built from an FLMonitor).
//! - [`server`]: the HTTPS endpoint the API server calls; [`metrics`] counts its outcomes and
//!   [`events`] reports them on the pod's owner.
//! - [`tls`]: the self-managed CA and serving certificate kept in a Secret.
//! - [`registration`]: the MutatingWebhookConfiguration (caBundle, namespace scope).
//! - [`audit`]: pods that should carry the agent but don't, and stale agents.
//! - [`run`]: wiring for the binary: what every replica serves, what the leader keeps current.

pub mod audit;
pub mod events;
pub mod inject;
pub mod metrics;
pub mod registration;
pub mod run;
pub mod selector;
pub mod server;
pub mod settings;
pub mod tls;

pub use audit::{AgentAudit, AgentsInjected, audit};
pub use inject::{Decision, Injection, Role, Skip, SkipReason, decide, has_agent};
pub use settings::{AgentDefaults, AgentSettings, GpuMode, InjectionSettings, KafkaSettings};

#[cfg(test)]
mod tests;
