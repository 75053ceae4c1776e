//! A real etcd + kube-apiserver on free loopback ports, with generated certificates and an admin
//! kubeconfig. What it lacks is a kubelet and a scheduler: pods stay Pending unless a test plays
//! the kubelet's part and patches their status itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use serde::Deserialize as _;

use crate::process::{Service, free_port, http_get_status};
use crate::{certs, tool};

/// How long etcd and the apiserver get to become ready (cold start on a busy 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running etcd + kube-apiserver pair.
pub struct Kube {
    // Field order is drop order: the apiserver stops before etcd.
    apiserver: Service,
    etcd: Service,
    dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    server: String,
    kubeconfig: PathBuf,
    ca_cert: PathBuf,
}

impl Kube {
    /// The apiserver shared by every test of one test binary, started on first use.
    ///
    /// # Panics
    /// When the environment cannot start; the message names the component and its log tail. Every
    /// test that asks afterwards fails with the same message: nothing skips silently.
    pub fn shared() -> &'static Kube {
        static SHARED: OnceLock<Result<Kube, String>> = OnceLock::new();
        match SHARED.get_or_init(|| Kube::start_in(None).map_err(|e| format!("{e:#}"))) {
            Ok(k) => k,
            Err(e) => panic!("the test kube-apiserver could not start: {e}"),
        }
    }

    /// Starts a private etcd + kube-apiserver, stopped on drop.
    ///
    /// # Errors
    /// When a binary is missing or a component does not become ready (the error carries its log tail).
    pub fn start() -> Result<Kube> {
        let tmp = tempfile::Builder::new().prefix("flmon-kube-").tempdir()?;
        let dir = tmp.path().to_path_buf();
        let mut k = Self::start_in(Some(dir))?;
        k._tempdir = Some(tmp);
        Ok(k)
    }

    /// Starts etcd + kube-apiserver keeping their data, certificates and logs in `dir`.
    ///
    /// # Errors
    /// As [`Kube::start`].
    pub fn start_at(dir: &Path) -> Result<Kube> {
        std::fs::create_dir_all(dir)?;
        Self::start_in(Some(dir.to_path_buf()))
    }

    /// Leaves etcd and the apiserver running past this value's life (for the `up` entry point) and
    /// returns their process groups, for `down` to stop.
    pub fn detach(mut self) -> Vec<u32> {
        let pgids = [self.apiserver.pgid(), self.etcd.pgid()]
            .into_iter()
            .flatten()
            .collect();
        self.apiserver.detach();
        self.etcd.detach();
        pgids
    }

    fn start_in(dir: Option<PathBuf>) -> Result<Kube> {
        let dir = match dir {
            Some(d) => d,
            None => {
                let d = std::env::temp_dir().join(format!("flmon-kube-shared-{}", std::process::id()));
                std::fs::create_dir_all(&d)?;
                d
            }
        };
        let (etcd_bin, apiserver_bin) = (tool("etcd"), tool("kube-apiserver"));
        let pki_dir = dir.join("pki");
        std::fs::create_dir_all(&pki_dir)?;
        let pki = certs::generate(&pki_dir).context("generating test certificates")?;

        let (client_port, peer_port) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_dir = dir.join("etcd");
        let mut etcd = Service::spawn(
            "etcd",
            &etcd_bin,
            &[
                format!("--data-dir={}", etcd_dir.display()),
                "--name=default".into(),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            &[],
            &dir.join("etcd.log"),
            Some(&etcd_dir),
        )?;
        let etcd_addr = format!("127.0.0.1:{client_port}");
        etcd.wait_ready(READY_TIMEOUT, || {
            http_get_status(&etcd_addr, "/readyz") == Some(200)
        })?;

        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let p = |p: &Path| p.display().to_string();
        let mut apiserver = Service::spawn(
            "kube-apiserver",
            &apiserver_bin,
            &[
                format!("--etcd-servers={client_url}"),
                format!("--secure-port={port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--cert-dir={}", p(&pki_dir)),
                format!("--tls-cert-file={}", p(&pki.serving_cert)),
                format!("--tls-private-key-file={}", p(&pki.serving_key)),
                format!("--client-ca-file={}", p(&pki.ca_cert)),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p(&pki.sa_pub)),
                format!("--service-account-signing-key-file={}", p(&pki.sa_key)),
                "--authorization-mode=RBAC".into(),
                "--disable-admission-plugins=ServiceAccount".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
            &[],
            &dir.join("kube-apiserver.log"),
            Some(&dir),
        )?;

        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: flmon-test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: flmon-test\n  context:\n    cluster: flmon-test\n    user: admin\n    namespace: default\ncurrent-context: flmon-test\n",
                ca = p(&pki.ca_cert),
                cert = p(&pki.admin_cert),
                key = p(&pki.admin_key),
            ),
        )?;
        let kubectl = tool("kubectl");
        apiserver.wait_ready(READY_TIMEOUT, || {
            Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["get", "--raw", "/readyz"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })?;
        Ok(Kube {
            apiserver,
            etcd,
            dir,
            _tempdir: None,
            server,
            kubeconfig,
            ca_cert: pki.ca_cert,
        })
    }

    /// The apiserver's URL, e.g. `https://127.0.0.1:39123`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// The admin kubeconfig (client certificate in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA that signed the apiserver's serving certificate.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// The folder holding the certificates, data and logs of this environment.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The apiserver's log, for assertions and error messages.
    pub fn apiserver_log(&self) -> &Path {
        self.apiserver.log_path()
    }

    /// The etcd log.
    pub fn etcd_log(&self) -> &Path {
        self.etcd.log_path()
    }

    /// A `kubectl` command already pointed at this apiserver.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(tool("kubectl"));
        c.arg("--kubeconfig").arg(&self.kubeconfig);
        c
    }

    /// A client for this apiserver, made for the calling test's runtime.
    ///
    /// # Errors
    /// When the kubeconfig cannot be read or the client cannot be built.
    pub async fn try_client(&self) -> Result<kube::Client> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Like [`Kube::try_client`], for tests.
    ///
    /// # Panics
    /// When the client cannot be built.
    pub async fn client(&self) -> kube::Client {
        match self.try_client().await {
            Ok(c) => c,
            Err(e) => panic!("cannot build a client for the test apiserver: {e:#}"),
        }
    }

    /// Creates a fresh namespace named after `prefix` and returns its name.
    ///
    /// # Panics
    /// When the namespace cannot be created.
    pub async fn namespace(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let clean: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let name = format!(
            "{}-{}-{}",
            clean.trim_matches('-'),
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let client = self.client().await;
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        if let Err(e) = Api::<Namespace>::all(client)
            .create(&PostParams::default(), &ns)
            .await
        {
            panic!("cannot create namespace {name}: {e}");
        }
        name
    }

    /// Server-side applies every CustomResourceDefinition in `yaml` (multi-document) and waits until
    /// each is Established.
    ///
    /// # Errors
    /// When a document is not a CRD, the apiserver rejects one, or one is not Established in 60 s.
    pub async fn install_crds_yaml(&self, client: &kube::Client, yaml: &str) -> Result<Vec<String>> {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut names = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
            let value = serde_yaml_ng::Value::deserialize(doc)?;
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition =
                serde_yaml_ng::from_value(value).context("a document is not a CustomResourceDefinition")?;
            let name = crd
                .metadata
                .name
                .clone()
                .ok_or_else(|| anyhow!("a CRD without metadata.name"))?;
            api.patch(
                &name,
                &PatchParams::apply("flmon-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("applying CRD {name}"))?;
            names.push(name);
        }
        for name in &names {
            let established = await_condition(api.clone(), name, conditions::is_crd_established());
            match tokio::time::timeout(Duration::from_secs(60), established).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bail!("waiting for CRD {name}: {e}"),
                Err(_) => bail!("CRD {name} was not Established within 60 s"),
            }
        }
        Ok(names)
    }

    /// Installs the real Prometheus Operator CRDs (ServiceMonitor, PodMonitor, PrometheusRule, …)
    /// with server-side apply; the large ones exceed client-side apply's annotation limit.
    ///
    /// # Errors
    /// When they are not installed on disk or the apiserver rejects one.
    pub async fn install_prometheus_operator_crds(&self, client: &kube::Client) -> Result<Vec<String>> {
        let dir = crate::promop_crds_dir();
        let mut files: Vec<_> = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        let mut names = Vec::new();
        for f in files {
            let yaml = std::fs::read_to_string(&f)?;
            names.extend(
                self.install_crds_yaml(client, &yaml)
                    .await
                    .with_context(|| format!("installing {}", f.display()))?,
            );
        }
        Ok(names)
    }
}
