//! The mutating admission webhook that injects the agent as a native sidecar.
