//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it:
//! the holder renews the Lease every retry period; another replica takes over once it has seen
//! the same record, unrenewed, for a whole lease duration (measured on its own clock, so clock
//! skew between nodes does not matter); a leader that cannot renew within the renew deadline
//! steps down; a leader that shuts down releases the Lease so a follower takes over at once.
//!
//! Hand-rolled rather than taken from `kube-leader-election`: its releases pin kube 4 and
//! would put a second kube and k8s-openapi in the build; the protocol is small.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

/// Timing and identity of an election.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the operator's).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease is valid without renewal.
    pub lease_duration: Duration,
    /// How long a leader keeps leading while renewals fail.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The part of a Lease that says who holds it and since when it was renewed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    lease_duration_seconds: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Self {
        Record {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.clone(),
            lease_duration_seconds: spec.lease_duration_seconds,
        }
    }
}

/// One replica's view of the election.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<(Record, Instant)>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX).max(1)
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl LeaderElector {
    /// An elector for `config`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// The election's settings.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Tries to acquire the Lease, or renews it when held. Returns whether this replica leads.
    ///
    /// # Errors
    /// The apiserver's error (a conflict with another replica is not an error: it means `false`).
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let me = self.config.identity.clone();
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(seconds(self.config.lease_duration)),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(error) if is_conflict(&error) => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = Record::of(&spec);
        let seen_at = match &self.observed {
            Some((observed, at)) if *observed == record => *at,
            _ => {
                self.observed = Some((record.clone(), Instant::now()));
                Instant::now()
            }
        };
        let held_by_me = record.holder.as_deref() == Some(me.as_str());
        let duration = record
            .lease_duration_seconds
            .map_or(self.config.lease_duration, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
        if record.holder.is_some() && !held_by_me && seen_at.elapsed() < duration {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let renewed = LeaseSpec {
            holder_identity: Some(me),
            lease_duration_seconds: Some(seconds(self.config.lease_duration)),
            acquire_time: if held_by_me {
                spec.acquire_time.clone()
            } else {
                Some(now())
            },
            renew_time: Some(now()),
            lease_transitions: Some(if held_by_me { transitions } else { transitions + 1 }),
            ..spec
        };
        let mut updated = lease.clone();
        updated.spec = Some(renewed);
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(written) => {
                if let Some(spec) = &written.spec {
                    self.observed = Some((Record::of(spec), Instant::now()));
                }
                Ok(true)
            }
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up if this replica holds it, so that a follower takes over at once.
    ///
    /// # Errors
    /// The apiserver's error.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let mut released = lease.clone();
        released.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(now()),
            ..spec
        });
        match self
            .api
            .replace(&lease.name_any(), &PostParams::default(), &released)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_conflict(&error) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

/// Runs the election until `shutdown` completes, publishing whether this replica leads on
/// `leading`. On shutdown a held Lease is released.
pub async fn run(
    mut elector: LeaderElector,
    leading: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_renewal: Option<Instant> = None;
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(true) => {
                if !*leading.borrow() {
                    tracing::info!(lease = %elector.config.name, identity = %elector.config.identity, "became the leader");
                }
                last_renewal = Some(Instant::now());
                leading.send_replace(true);
            }
            Ok(false) => {
                if *leading.borrow() {
                    tracing::warn!(lease = %elector.config.name, "another replica holds the lease: stepping down");
                }
                leading.send_replace(false);
            }
            Err(error) => {
                let overdue = last_renewal.is_none_or(|at| at.elapsed() > elector.config.renew_deadline);
                tracing::warn!(%error, lease = %elector.config.name, "failed to acquire or renew the lease");
                if *leading.borrow() && overdue {
                    tracing::warn!(lease = %elector.config.name, "could not renew within the deadline: stepping down");
                    leading.send_replace(false);
                }
            }
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(elector.config.retry_period) => {}
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
        if let Err(error) = elector.release().await {
            tracing::warn!(%error, "failed to release the lease");
        }
    }
}
