//! FLMonitor and AlertRule reconcilers: validate → build → apply → status.
