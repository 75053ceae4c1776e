//! The injection webhook through the real kube-apiserver: each test serves the webhook in-process
//! (certificate Secret, FLMonitor cache, Events, exactly as a replica does), registers it with
//! `clientConfig.url` scoped to its own namespace, and creates pods through the apiserver, which
//! applies the patch, validates the result and runs Pod Security admission on it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flmon_crds::FLMonitor;
use flmon_crds::names;
use flmon_operator::webhook::audit;
use flmon_operator::webhook::metrics::{AdmissionMetrics, Outcome};
use flmon_operator::webhook::registration::{
    Registration, WebhookTarget, apply_configuration, desired_configuration,
};
use flmon_operator::webhook::run::{CertificateSource, ServeConfig, serve_webhook};
use flmon_operator::webhook::tls::{CertificateRequest, TlsMaterial, ensure_secret};
use flmon_operator::webhook::{AgentDefaults, InjectionSettings, SkipReason};
use flmon_tests::{Kube, repo_root};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SECRET: &str = "flmon-webhook-tls";

fn agent() -> AgentDefaults {
    AgentDefaults {
        image: "registry.example/flmon/agent:0.1.0".to_owned(),
        version: "0.1.0".to_owned(),
    }
}

fn certificate() -> CertificateRequest {
    CertificateRequest {
        dns_names: vec!["localhost".to_owned()],
        ip_addresses: vec!["127.0.0.1".parse().expect("an IP")],
    }
}

/// The Pod of a golden case (`operator/src/webhook/testdata/cases/`), moved to `namespace`.
fn case_pod(case: &str, namespace: &str) -> Pod {
    let path = repo_root().join(format!("operator/src/webhook/testdata/cases/{case}.yaml"));
    let text = std::fs::read_to_string(&path).expect("the case file");
    let doc = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).expect("YAML"))
        .find(|d| d.get("kind").and_then(|k| k.as_str()) == Some("Pod"))
        .expect("a Pod document");
    let mut pod: Pod = serde_yaml_ng::from_value(doc).expect("a Pod");
    pod.metadata.namespace = Some(namespace.to_owned());
    pod
}

fn monitor(name: &str, app: &str) -> FLMonitor {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "flmon.io/v1alpha1",
        "kind": "FLMonitor",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": app}}}
    }))
    .expect("an FLMonitor")
}

/// A namespace holding FLMonitor `mnist-fedavg` (selecting `app=mnist-fedavg`), with `labels`.
async fn monitored_namespace(
    kube: &Kube,
    client: &kube::Client,
    prefix: &str,
    labels: &[(&str, &str)],
) -> String {
    kube.install_crds_yaml(client, &flmon_crds::all_crds_yaml().expect("CRDs render"))
        .await
        .expect("the apiserver accepts flmon's CRDs");
    let ns = kube.namespace(prefix).await;
    if !labels.is_empty() {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        Api::<Namespace>::all(client.clone())
            .patch(
                &ns,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"labels": labels}})),
            )
            .await
            .expect("namespace labels");
    }
    Api::<FLMonitor>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &monitor("mnist-fedavg", "mnist-fedavg"))
        .await
        .expect("the FLMonitor is created");
    ns
}

/// A webhook replica serving on a free loopback port, registered for one namespace.
struct Webhook {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    configuration: String,
    metrics: Arc<AdmissionMetrics>,
    client: kube::Client,
}

impl Webhook {
    async fn start(client: &kube::Client, ns: &str) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        let metrics = Arc::new(AdmissionMetrics::default());
        let config = ServeConfig {
            namespace: ns.to_owned(),
            certificate: CertificateSource::SelfManaged {
                secret_name: SECRET.to_owned(),
                request: certificate(),
            },
            agent: agent(),
            reporter: Reporter {
                controller: "flmon-operator".to_owned(),
                instance: Some("it".to_owned()),
            },
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let client = client.clone();
            let metrics = metrics.clone();
            async move {
                serve_webhook(client, config, listener, metrics, async {
                    let _ = stopped.await;
                })
                .await
                .expect("the webhook serves");
            }
        });
        let material = ensure_secret(client.clone(), ns, SECRET, &certificate())
            .await
            .expect("the certificate Secret");
        // Scoped to this test's namespace only: tests share one apiserver.
        let registration = Registration {
            configuration_name: format!("flmon-it-{ns}"),
            target: WebhookTarget::Url(format!("https://127.0.0.1:{port}")),
            operator_namespace: "flmon-system".to_owned(),
        };
        let desired = desired_configuration(
            &registration,
            Some(&material.ca_bundle),
            &BTreeSet::from([ns.to_owned()]),
        );
        apply_configuration(client.clone(), &desired)
            .await
            .expect("the configuration applies");
        let webhook = Webhook {
            stop: Some(stop),
            task: Some(task),
            configuration: registration.configuration_name,
            metrics,
            client: client.clone(),
        };
        webhook.wait_until_effective(ns).await;
        webhook
    }

    /// The apiserver picks up a new configuration and the webhook its FLMonitor cache within a
    /// moment: dry-run a selected pod until it comes back injected.
    async fn wait_until_effective(&self, ns: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut probe = case_pod("restricted-namespace", ns);
        probe.metadata.name = Some("probe".to_owned());
        let dry_run = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(pod) = pods.create(&dry_run, &probe).await
                && has_agent(&pod)
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the webhook never became effective in {ns}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the webhook task ends");
        }
    }

    async fn unregister(mut self) {
        self.stop().await;
        let _ = Api::<MutatingWebhookConfiguration>::all(self.client.clone())
            .delete(&self.configuration, &DeleteParams::default())
            .await;
    }
}

fn has_agent(pod: &Pod) -> bool {
    agent_container(pod).is_some()
}

fn agent_container(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::Container> {
    pod.spec
        .as_ref()?
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == names::AGENT_CONTAINER)
}

/// Waits for an Event with `reason` about the object named `regarding`.
async fn wait_for_event(client: &kube::Client, ns: &str, reason: &str, regarding: &str) -> Event {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = events.list(&ListParams::default()).await.expect("events list");
        if let Some(event) = list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
        }) {
            return event;
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} Event about {regarding} in {ns}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn pods_created_in_a_monitored_namespace_come_back_injected() {
    let kube = Kube::shared();
    let client = kube.client().await;
    let ns = monitored_namespace(kube, &client, "wh-inject", &[]).await;
    let webhook = Webhook::start(&client, &ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    for case in [
        "mesh-proxy-first",
        "native-sidecar-mesh",
        "server-with-kafka-sasl",
        "guaranteed-qos",
    ] {
        let mut pod = case_pod(case, &ns);
        pod.metadata.name = Some(case.to_owned());
        let created = pods
            .create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("{case}: the apiserver admits the injected pod: {e}"));
        let agent = agent_container(&created).unwrap_or_else(|| panic!("{case}: the agent is injected"));
        assert_eq!(agent.restart_policy.as_deref(), Some("Always"), "{case}");
        let annotations = created.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get(names::ANNOTATION_INJECTED).map(String::as_str),
            Some("0.1.0"),
            "{case}"
        );
        assert_eq!(
            annotations.get(names::ANNOTATION_MONITOR).map(String::as_str),
            Some("mnist-fedavg")
        );
        let labels = created.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(names::LABEL_MONITOR).map(String::as_str),
            Some("mnist-fedavg"),
            "{case}"
        );
        assert_eq!(
            created.spec.as_ref().and_then(|s| s.share_process_namespace),
            Some(true)
        );
    }

    // A pod the monitor does not select is left alone.
    let mut other = case_pod("not-selected", &ns);
    other.metadata.name = Some("web-0".to_owned());
    let created = pods
        .create(&PostParams::default(), &other)
        .await
        .expect("created");
    assert!(!has_agent(&created));
    assert!(webhook.metrics.count(Outcome::Injected) >= 4);
    assert!(webhook.metrics.count(Outcome::Skipped(SkipReason::NotSelected)) >= 1);
    webhook.unregister().await;
}

#[tokio::test]
async fn a_pod_in_a_restricted_namespace_is_admitted_after_injection() {
    let kube = Kube::shared();
    let client = kube.client().await;
    let ns = monitored_namespace(
        kube,
        &client,
        "wh-restricted",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let webhook = Webhook::start(&client, &ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let created = pods
        .create(&PostParams::default(), &case_pod("restricted-namespace", &ns))
        .await
        .expect("Pod Security admission accepts the injected pod under restricted");
    assert!(has_agent(&created));

    // The namespace really enforces restricted: a pod that breaks it is refused.
    let mut bad = case_pod("restricted-namespace", &ns);
    bad.metadata.name = Some("privileged".to_owned());
    if let Some(spec) = bad.spec.as_mut() {
        spec.containers[0].security_context = None;
    }
    let refused = pods
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("restricted"), "{refused}");
    webhook.unregister().await;
}

#[tokio::test]
async fn a_job_owned_pod_gets_the_native_sidecar_and_the_job_an_injected_event() {
    let kube = Kube::shared();
    let client = kube.client().await;
    let ns = monitored_namespace(kube, &client, "wh-job", &[]).await;
    let webhook = Webhook::start(&client, &ns).await;
    let template = case_pod("job-client-pod", &ns);
    let job: Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "mnist-fedavg-client-3"},
        "spec": {
            "manualSelector": true,
            "selector": {"matchLabels": {"batch.kubernetes.io/job-name": "mnist-fedavg-client-3"}},
            "template": {"metadata": {"labels": template.metadata.labels}, "spec": template.spec}
        }
    }))
    .expect("a Job");
    let job = Api::<Job>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &job)
        .await
        .expect("the Job is created");
    // No controller-manager here: create the pod as the Job controller would (generateName,
    // controller owner reference), through the same admission chain.
    let mut pod = template;
    pod.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".to_owned(),
        kind: "Job".to_owned(),
        name: "mnist-fedavg-client-3".to_owned(),
        uid: job.metadata.uid.clone().expect("uid"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    let created = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("the Job's pod is admitted");
    let spec = created.spec.as_ref().expect("spec");
    assert_eq!(
        spec.containers.len(),
        1,
        "nothing added to containers: the Job can complete"
    );
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    let agent = agent_container(&created).expect("the agent is a native sidecar");
    assert_eq!(agent.restart_policy.as_deref(), Some("Always"));
    let event = wait_for_event(&client, &ns, "Injected", "mnist-fedavg-client-3").await;
    assert_eq!(
        event.regarding.as_ref().and_then(|r| r.kind.as_deref()),
        Some("Job")
    );
    let note = event.note.unwrap_or_default();
    assert!(note.contains("mnist-fedavg-client-3-<generated>"), "{note}");
    webhook.unregister().await;
}

#[tokio::test]
async fn with_the_webhook_stopped_pods_are_still_created_then_reported_missing() {
    let kube = Kube::shared();
    let client = kube.client().await;
    let ns = monitored_namespace(kube, &client, "wh-down", &[]).await;
    let mut webhook = Webhook::start(&client, &ns).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let injected = pods
        .create(&PostParams::default(), &case_pod("mesh-proxy-first", &ns))
        .await
        .expect("created");
    assert!(has_agent(&injected));

    webhook.stop().await;
    let started = Instant::now();
    let mut missed = case_pod("gpu-client", &ns);
    missed.metadata.name = Some("mnist-fedavg-client-9".to_owned());
    missed.metadata.labels = Some(BTreeMap::from([("app".to_owned(), "mnist-fedavg".to_owned())]));
    let created = pods
        .create(&PostParams::default(), &missed)
        .await
        .expect("failurePolicy Ignore: the pod is created without the webhook");
    assert!(!has_agent(&created));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "an unreachable webhook costs at most its timeout, took {:?}",
        started.elapsed()
    );

    // What the controller does: audit the monitor's pods.
    let monitors: Vec<InjectionSettings> = Api::<FLMonitor>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("monitors")
        .iter()
        .map(InjectionSettings::from)
        .collect();
    let live = pods.list(&ListParams::default()).await.expect("pods").items;
    let report = audit(&monitors[0], &monitors, &live, &agent());
    assert_eq!((report.selected, report.injected, report.missing), (2, 1, 1));
    assert_eq!(report.missing_names, ["mnist-fedavg-client-9"]);
    let condition = report.condition();
    assert!(!condition.ok);
    assert_eq!(condition.reason, "AgentsMissing");
    webhook.unregister().await;
}

#[tokio::test]
async fn a_user_container_named_like_the_agent_is_admitted_unchanged_with_a_skip_event() {
    let kube = Kube::shared();
    let client = kube.client().await;
    let ns = monitored_namespace(kube, &client, "wh-clash", &[]).await;
    let webhook = Webhook::start(&client, &ns).await;
    let pod = case_pod("user-container-named-like-agent", &ns);
    let created = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("admitted");
    let spec = created.spec.as_ref().expect("spec");
    assert!(spec.init_containers.is_none(), "no native sidecar added");
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["trainer", "flmon-agent"]);
    assert_eq!(
        spec.containers[1].image.as_deref(),
        Some("registry.example/team/homegrown-agent:2")
    );
    assert!(
        !created
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key(names::ANNOTATION_INJECTED)
    );
    let event = wait_for_event(&client, &ns, "InjectionSkipped", "mnist-fedavg-client-2").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.note.unwrap_or_default().contains("ContainerNameClash"));
    assert_eq!(
        webhook
            .metrics
            .count(Outcome::Skipped(SkipReason::ContainerNameClash)),
        1
    );
    webhook.unregister().await;
}

#[tokio::test]
async fn replicas_racing_for_the_certificate_secret_end_up_with_one_ca() {
    let kube = Kube::shared();
    let client = kube.client().await;
    let ns = kube.namespace("wh-tls").await;
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            let ns = ns.clone();
            tokio::spawn(async move { ensure_secret(client, &ns, SECRET, &certificate()).await })
        })
        .collect();
    let mut bundles = BTreeSet::new();
    for racer in racers {
        let material = racer.await.expect("joined").expect("a certificate");
        bundles.insert(material.ca_bundle);
    }
    assert_eq!(bundles.len(), 1, "every replica serves the same CA");
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get(SECRET)
        .await
        .expect("the Secret");
    let stored = TlsMaterial::from_secret(&secret).expect("readable");
    assert!(bundles.contains(&stored.ca_bundle));
}

#[tokio::test]
async fn an_operator_run_outside_the_cluster_takes_over_the_charts_webhook_configuration() {
    // The chart registers the webhook by Service; `flmon-operator run --webhook-url` from a
    // laptop registers the same configuration by URL. The apiserver refuses a webhook with both.
    let kube = Kube::shared();
    let client = kube.client().await;
    let registration = |target| Registration {
        configuration_name: "flmon-it-takeover".to_owned(),
        target,
        operator_namespace: "flmon-system".to_owned(),
    };
    let namespaces = BTreeSet::from(["wh-takeover".to_owned()]);
    let chart = desired_configuration(
        &registration(WebhookTarget::Service {
            namespace: "flmon-system".to_owned(),
            name: "flmon".to_owned(),
            port: 443,
        }),
        Some("PEM"),
        &namespaces,
    );
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    api.patch(
        "flmon-it-takeover",
        &PatchParams::apply("helm").force(),
        &Patch::Apply(&chart),
    )
    .await
    .expect("the chart's configuration applies");

    let url = "https://127.0.0.1:19443/mutate".to_owned();
    let local = desired_configuration(
        &registration(WebhookTarget::Url(url.clone())),
        Some("PEM"),
        &namespaces,
    );
    apply_configuration(client.clone(), &local)
        .await
        .expect("the operator's configuration replaces the chart's target");
    let stored = api.get("flmon-it-takeover").await.expect("configuration");
    let config = &stored.webhooks.expect("webhooks")[0].client_config;
    assert!(
        config
            .url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://127.0.0.1:19443")),
        "{config:?}"
    );
    assert!(config.service.is_none(), "{config:?}");
    // Applying again (every few seconds in the operator) is a plain apply.
    apply_configuration(client.clone(), &local)
        .await
        .expect("applies again");
    api.delete("flmon-it-takeover", &DeleteParams::default())
        .await
        .expect("deleted");
}
