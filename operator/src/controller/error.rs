//! Errors of a reconcile, named after the step that failed. Each carries a small category used
//! as the `category` label of the error metric and as the reason of Events.

use super::validate::FieldError;

/// What went wrong in one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid (reported in status; retrying will not help until it changes).
    #[error("invalid spec: {0}")]
    Invalid(#[from] FieldError),
    /// Applying a generated object failed.
    #[error("failed to apply {kind} {namespace}/{name}: {}", describe(.cause))]
    Apply {
        /// Kind of the object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The API error.
        cause: kube::Error,
    },
    /// Deleting an object that is no longer wanted failed.
    #[error("failed to delete {kind} {namespace}/{name}: {}", describe(.cause))]
    Cleanup {
        /// Kind of the object.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The API error.
        cause: kube::Error,
    },
    /// Writing the status subresource failed.
    #[error("failed to write the status of {kind} {namespace}/{name}: {}", describe(.cause))]
    Status {
        /// Kind of the resource.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The API error.
        cause: kube::Error,
    },
    /// Adding or removing the cleanup finalizer failed.
    #[error("failed to update the finalizers of {namespace}/{name}: {}", describe(.cause))]
    Finalizer {
        /// Namespace of the monitor.
        namespace: String,
        /// Its name.
        name: String,
        /// The API error.
        cause: kube::Error,
    },
    /// Asking the apiserver which APIs it serves failed.
    #[error("failed to discover the monitoring.coreos.com API: {}", describe(.0))]
    Discovery(kube::Error),
}

impl Error {
    /// A small, stable category for metrics labels and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "invalid_spec",
            Error::Apply { .. } => "apply",
            Error::Cleanup { .. } => "cleanup",
            Error::Status { .. } => "status",
            Error::Finalizer { .. } => "finalizer",
            Error::Discovery(_) => "discovery",
        }
    }

    /// Whether the error is a write conflict (someone else changed the object): retry at once.
    pub fn is_conflict(&self) -> bool {
        let cause = match self {
            Error::Apply { cause, .. }
            | Error::Cleanup { cause, .. }
            | Error::Status { cause, .. }
            | Error::Finalizer { cause, .. }
            | Error::Discovery(cause) => cause,
            Error::Invalid(_) => return false,
        };
        matches!(cause, kube::Error::Api(status) if status.code == 409)
    }
}

/// A kube error in one line: the apiserver's message and reason for API errors (kube's own
/// `Display` repeats the whole status), the error itself otherwise.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({} {})", status.message, status.code, status.reason),
        other => other.to_string(),
    }
}
