//! The webhook's MutatingWebhookConfiguration: built as a plain value (pure), then applied
//! by name with server-side apply, so only the caBundle, scope and rules flmon owns change.

use std::collections::BTreeSet;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta};
use kube::api::{Api, Patch, PatchParams};

/// Name of the webhook entry inside the configuration.
pub const WEBHOOK_NAME: &str = "inject.flmon.io";
/// Path the webhook server answers admission reviews on.
pub const MUTATE_PATH: &str = "/mutate-pods";
/// Field manager of flmon's server-side applies to the configuration.
pub const FIELD_MANAGER: &str = "flmon-operator-webhook";
/// Seconds the API server waits for an answer before admitting the pod without the agent: an
/// answer takes about a millisecond, so this only bounds how long an unreachable webhook delays
/// pod creation.
pub const TIMEOUT_SECONDS: i32 = 3;
/// Label every namespace carries (set by the API server), used to scope the webhook.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// How the API server reaches the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookTarget {
    /// Through a Service (the installed operator).
    Service {
        /// Namespace of the Service.
        namespace: String,
        /// Name of the Service.
        name: String,
        /// Service port.
        port: i32,
    },
    /// A URL (tests; an operator outside the cluster). The path is appended.
    Url(String),
}

/// What the configuration is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Name of the MutatingWebhookConfiguration (created by the chart; patched by name).
    pub configuration_name: String,
    /// Where the webhook is served.
    pub target: WebhookTarget,
    /// The operator's own namespace, never in scope.
    pub operator_namespace: String,
}

/// The namespaces the webhook should see: those holding an FLMonitor, never the operator's own
/// nor kube-system (pod creation there must never wait on flmon).
pub fn scoped_namespaces<'a>(
    monitor_namespaces: impl IntoIterator<Item = &'a str>,
    operator_namespace: &str,
) -> BTreeSet<String> {
    monitor_namespaces
        .into_iter()
        .filter(|ns| *ns != operator_namespace && *ns != "kube-system")
        .map(str::to_owned)
        .collect()
}

/// A selector matching exactly `namespaces`; with none, a selector matching no namespace (every
/// namespace carries `kubernetes.io/metadata.name`), since `In` needs at least one value.
pub fn namespace_selector(namespaces: &BTreeSet<String>) -> LabelSelector {
    let requirement = if namespaces.is_empty() {
        LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.to_owned(),
            operator: "DoesNotExist".to_owned(),
            values: None,
        }
    } else {
        LabelSelectorRequirement {
            key: NAMESPACE_NAME_LABEL.to_owned(),
            operator: "In".to_owned(),
            values: Some(namespaces.iter().cloned().collect()),
        }
    };
    LabelSelector {
        match_expressions: Some(vec![requirement]),
        match_labels: None,
    }
}

/// The configuration flmon wants: pod CREATE only, `failurePolicy: Ignore`, a short timeout,
/// side effects (Events) only outside dry runs, scoped to `namespaces`. Without `ca_bundle`
/// (cert-manager mode) the field is left to cert-manager's CA injector.
pub fn desired_configuration(
    registration: &Registration,
    ca_bundle: Option<&str>,
    namespaces: &BTreeSet<String>,
) -> MutatingWebhookConfiguration {
    let ca_bundle = ca_bundle.map(|pem| ByteString(pem.as_bytes().to_vec()));
    let client_config = match &registration.target {
        WebhookTarget::Service {
            namespace,
            name,
            port,
        } => WebhookClientConfig {
            service: Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                port: Some(*port),
                path: Some(MUTATE_PATH.to_owned()),
            }),
            url: None,
            ca_bundle,
        },
        WebhookTarget::Url(base) => WebhookClientConfig {
            service: None,
            url: Some(format!("{}{MUTATE_PATH}", base.trim_end_matches('/'))),
            ca_bundle,
        },
    };
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(registration.configuration_name.clone()),
            ..Default::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: WEBHOOK_NAME.to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config,
            failure_policy: Some("Ignore".to_owned()),
            match_policy: Some("Equivalent".to_owned()),
            namespace_selector: Some(namespace_selector(namespaces)),
            // Re-running after later webhooks would find the agent already there: no need.
            reinvocation_policy: Some("Never".to_owned()),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".to_owned()]),
                operations: Some(vec!["CREATE".to_owned()]),
                resources: Some(vec!["pods".to_owned()]),
                scope: Some("Namespaced".to_owned()),
            }]),
            side_effects: "NoneOnDryRun".to_owned(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            match_conditions: None,
            object_selector: None,
        }]),
    }
}

/// Applies `desired` (from [`desired_configuration`]) by name.
///
/// # Errors
/// The API server's refusal, e.g. when RBAC allows patching only an existing configuration and
/// the chart did not create it.
pub async fn apply_configuration(
    client: kube::Client,
    desired: &MutatingWebhookConfiguration,
) -> Result<(), kube::Error> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let name = desired.metadata.name.clone().unwrap_or_default();
    let (apply_params, apply_patch) = (PatchParams::apply(FIELD_MANAGER).force(), Patch::Apply(desired));
    let apply = || api.patch(&name, &apply_params, &apply_patch);
    match apply().await {
        // Server-side apply merges `clientConfig` field by field, so a target another manager set
        // (the chart's `service`, when the operator runs outside the cluster with a `url`) stays
        // beside ours and the apiserver refuses both. A merge patch replaces the webhooks list
        // whole, dropping it; then apply again to own the fields.
        Err(kube::Error::Api(status))
            if status.code == 422 && status.message.contains("exactly one of url or service") =>
        {
            tracing::info!(configuration = %name, "replacing the webhook's other target (url or service) with ours");
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            api.patch(&name, &params, &Patch::Merge(desired)).await?;
            apply().await?;
        }
        result => {
            result?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration() -> Registration {
        Registration {
            configuration_name: "flmon-operator".to_owned(),
            target: WebhookTarget::Service {
                namespace: "flmon-system".to_owned(),
                name: "flmon-operator".to_owned(),
                port: 443,
            },
            operator_namespace: "flmon-system".to_owned(),
        }
    }

    #[test]
    fn scope_excludes_the_operator_namespace_and_kube_system() {
        let scoped = scoped_namespaces(
            ["fl-team", "flmon-system", "kube-system", "fl-team"],
            "flmon-system",
        );
        assert_eq!(scoped, BTreeSet::from(["fl-team".to_owned()]));
    }

    #[test]
    fn configuration_is_create_only_ignore_on_failure_with_a_short_timeout() {
        let namespaces = BTreeSet::from(["fl-team".to_owned()]);
        let config = desired_configuration(&registration(), Some("PEM"), &namespaces);
        let webhook = &config.webhooks.as_ref().expect("webhooks")[0];
        assert_eq!(webhook.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(webhook.timeout_seconds, Some(3));
        let rule = &webhook.rules.as_ref().expect("rules")[0];
        assert_eq!(rule.operations.as_deref(), Some(&["CREATE".to_owned()][..]));
        assert_eq!(rule.resources.as_deref(), Some(&["pods".to_owned()][..]));
        let selector = webhook.namespace_selector.as_ref().expect("selector");
        let requirement = &selector.match_expressions.as_ref().expect("expressions")[0];
        assert_eq!(requirement.operator, "In");
        assert_eq!(requirement.values.as_deref(), Some(&["fl-team".to_owned()][..]));
        let service = webhook.client_config.service.as_ref().expect("service");
        assert_eq!(service.path.as_deref(), Some(MUTATE_PATH));
    }

    #[test]
    fn no_monitor_anywhere_means_no_namespace_in_scope() {
        let selector = namespace_selector(&BTreeSet::new());
        let requirement = &selector.match_expressions.as_ref().expect("expressions")[0];
        assert_eq!(requirement.operator, "DoesNotExist");
        assert_eq!(requirement.key, "kubernetes.io/metadata.name");
    }
}
