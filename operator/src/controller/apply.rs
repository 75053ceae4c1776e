//! Writing generated objects: server-side apply with one field manager, deletes that tolerate
//! absence, and the probe that tells whether Prometheus Operator's CRDs are installed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::Error;
use super::status::FIELD_MANAGER;

/// Server-side applies `object` (force: the operator owns every field it generates).
///
/// # Errors
/// [`Error::Apply`] naming the object.
pub async fn apply<K>(api: &Api<K>, kind: &'static str, object: &K) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.name_any();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|cause| Error::Apply {
        kind,
        namespace: object.namespace().unwrap_or_default(),
        name,
        cause,
    })?;
    Ok(())
}

/// Deletes an object if it exists. Returns whether it existed.
///
/// # Errors
/// [`Error::Cleanup`] naming the object, for anything but 404.
pub async fn delete_if_present<K>(
    api: &Api<K>,
    kind: &'static str,
    namespace: &str,
    name: &str,
) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(cause) => Err(Error::Cleanup {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            cause,
        }),
    }
}

/// An API for a Prometheus Operator kind in a namespace.
pub fn dynamic_api(client: &Client, namespace: &str, resource: &ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, resource)
}

/// Whether `monitoring.coreos.com/v1` ServiceMonitors and PrometheusRules are served, cached for
/// a while so that 500 monitors reconciling at once ask once, and re-checked after it so that
/// CRDs installed later are noticed.
#[derive(Debug)]
pub struct PrometheusOperatorProbe {
    ttl: Duration,
    cached: Mutex<Option<(Instant, bool)>>,
}

impl PrometheusOperatorProbe {
    /// A probe that re-asks after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        PrometheusOperatorProbe {
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// How long an answer is kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether both kinds are served.
    ///
    /// # Errors
    /// [`Error::Discovery`] when the apiserver cannot be asked (not when the group is absent).
    pub async fn available(&self, client: &Client) -> Result<bool, Error> {
        if let Ok(cached) = self.cached.lock()
            && let Some((at, answer)) = *cached
            && at.elapsed() < self.ttl
        {
            return Ok(answer);
        }
        let answer = match client.list_api_group_resources("monitoring.coreos.com/v1").await {
            Ok(list) => {
                let served = |plural: &str| list.resources.iter().any(|r| r.name == plural);
                served("servicemonitors") && served("prometheusrules")
            }
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(cause) => return Err(Error::Discovery(cause)),
        };
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some((Instant::now(), answer));
        }
        Ok(answer)
    }
}
