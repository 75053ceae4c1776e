//! The Helm chart as users meet it: `helm lint`, `helm template | kubeconform -strict` against the
//! built-in and CRD schemas, `helm install` into the real apiserver, the committed `manifests/`
//! rendering kept in sync, and the ValidatingAdmissionPolicy that limits the operator's pod patches.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flmon_tests::{Kube, kubernetes_version, repo_root, tool};

fn chart() -> PathBuf {
    repo_root().join("charts/flmon")
}

fn helm(home: &Path) -> Command {
    let mut c = Command::new(tool("helm"));
    c.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    c
}

fn ok(out: Output, what: &str) -> String {
    let text = flmon_tests::combined_output(&out);
    assert!(out.status.success(), "{what} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn render(home: &Path, extra: &[&str]) -> String {
    let kv = kubernetes_version();
    let out = helm(home)
        .args(["template", "flmon"])
        .arg(chart())
        .args([
            "--namespace",
            "flmon-system",
            "--kube-version",
            kv.trim_start_matches('v'),
        ])
        .args(extra)
        .output()
        .expect("helm runs");
    ok(out, "helm template")
}

/// JSON schemas for flmon's and the Prometheus Operator's CRDs, made by kubeconform's own converter.
fn crd_schemas(dir: &Path) {
    let mut crds: Vec<PathBuf> = std::fs::read_dir(chart().join("crds"))
        .expect("charts/flmon/crds exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    crds.extend(
        ["servicemonitors", "prometheusrules", "podmonitors"]
            .iter()
            .map(|k| flmon_tests::promop_crds_dir().join(format!("monitoring.coreos.com_{k}.yaml"))),
    );
    let out = Command::new(tool("python"))
        .arg(tool("openapi2jsonschema"))
        .args(&crds)
        .current_dir(dir)
        .env("FILENAME_FORMAT", "{kind}-{fullgroup}-{version}")
        .output()
        .expect("openapi2jsonschema runs");
    ok(out, "openapi2jsonschema.py");
}

fn kubeconform(schemas: &Path, manifest: &Path, extra: &[&str]) -> Output {
    let builtin = format!(
        "{}/{{{{.NormalizedKubernetesVersion}}}}-standalone-strict/{{{{.ResourceKind}}}}{{{{.KindSuffix}}}}.json",
        flmon_tests::kubeconform_schemas_dir().display()
    );
    let crds = format!(
        "{}/{{{{.ResourceKind}}}}-{{{{.Group}}}}-{{{{.ResourceAPIVersion}}}}.json",
        schemas.display()
    );
    let kv = kubernetes_version();
    Command::new(tool("kubeconform"))
        .args(["-strict", "-summary", "-output", "text"])
        .args(["-kubernetes-version", kv.trim_start_matches('v')])
        .args(["-schema-location", &builtin, "-schema-location", &crds])
        .args(extra)
        .arg(manifest)
        .output()
        .expect("kubeconform runs")
}

#[test]
fn helm_lint_passes_strict() {
    let home = tempfile::tempdir().unwrap();
    let out = helm(home.path())
        .args(["lint", "--strict"])
        .arg(chart())
        .output()
        .unwrap();
    let text = ok(out, "helm lint --strict");
    assert!(text.contains("0 chart(s) failed"), "{text}");
}

#[test]
fn every_rendered_object_passes_kubeconform_strict_in_every_chart_mode() {
    let home = tempfile::tempdir().unwrap();
    let schemas = tempfile::tempdir().unwrap();
    crd_schemas(schemas.path());
    let variants: [&[&str]; 3] = [
        &[],
        &[
            "--set",
            "serviceMonitor.enabled=true,networkPolicy.enabled=true,networkPolicy.namespaces={fl-a,fl-b}",
        ],
        &[
            "--set",
            "webhook.tls.mode=cert-manager,alerting.defaultRules=false",
        ],
    ];
    for (i, args) in variants.iter().enumerate() {
        let manifest = home.path().join(format!("rendered-{i}.yaml"));
        std::fs::write(&manifest, render(home.path(), args)).unwrap();
        // cert-manager's CRDs are not part of this environment: only its two kinds may lack a schema.
        let skip: &[&str] = if i == 2 {
            &["-skip", "Certificate,Issuer"]
        } else {
            &[]
        };
        let out = kubeconform(schemas.path(), &manifest, skip);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "variant {args:?}:\n{text}");
        assert!(
            text.contains("Invalid: 0, Errors: 0"),
            "variant {args:?}:\n{text}"
        );
        if i < 2 {
            assert!(
                text.contains("Skipped: 0"),
                "variant {args:?} skipped a kind:\n{text}"
            );
        }
    }
}

#[test]
fn invalid_values_are_rejected_by_the_values_schema_naming_the_field() {
    let home = tempfile::tempdir().unwrap();
    let out = helm(home.path())
        .args(["template", "flmon"])
        .arg(chart())
        .args(["--set", "webhook.tls.mode=manual"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("webhook.tls.mode") || err.contains("/webhook/tls/mode"),
        "{err}"
    );
}

/// The committed `manifests/flmon.yaml` is the chart rendered with its defaults.
#[test]
fn committed_manifests_match_the_chart_rendered_with_defaults() {
    let home = tempfile::tempdir().unwrap();
    let rendered = render(home.path(), &[]);
    let want = format!(
        "# The flmon chart rendered with its default values (namespace flmon-system).\n\
         # Regenerate: FLMON_UPDATE_MANIFESTS=1 cargo test -p flmon-tests --test chart\n\
         # Apply the CRDs first: kubectl apply --server-side -f manifests/crds.yaml\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: flmon-system\n{rendered}"
    );
    let path = repo_root().join("manifests/flmon.yaml");
    if std::env::var_os("FLMON_UPDATE_MANIFESTS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "manifests/flmon.yaml is stale; regenerate it with FLMON_UPDATE_MANIFESTS=1 cargo test -p flmon-tests --test chart"
    );
}

/// `v` with every number as a float: the apiserver gives back `16` where the types wrote `16.0`.
fn numbers_as_floats(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Null, |f| serde_json::json!(f)),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn kubectl(kube: &Kube, args: &[&str]) -> Output {
    kube.kubectl().args(args).output().expect("kubectl runs")
}

#[tokio::test]
async fn helm_install_creates_every_object_and_the_pod_patch_policy_holds() {
    let kube = Kube::shared();
    let home = tempfile::tempdir().unwrap();
    // Every object the chart would create, from the same rendering.
    let rendered = render(home.path(), &[]);

    let out = helm(home.path())
        .args(["install", "flmon"])
        .arg(chart())
        .args([
            "--namespace",
            "flmon-system",
            "--create-namespace",
            "--kubeconfig",
        ])
        .arg(kube.kubeconfig())
        .output()
        .unwrap();
    ok(out, "helm install");

    for doc in serde_yaml_ng::Deserializer::from_str(&rendered) {
        use serde::Deserialize;
        let v = serde_yaml_ng::Value::deserialize(doc).unwrap();
        let (Some(kind), Some(name)) = (v["kind"].as_str(), v["metadata"]["name"].as_str()) else {
            continue;
        };
        let mut args = vec!["get", kind, name];
        let ns = v["metadata"]["namespace"].as_str().map(str::to_string);
        if let Some(ns) = &ns {
            args.extend(["-n", ns.as_str()]);
        }
        let out = kubectl(kube, &args);
        assert!(
            out.status.success(),
            "{kind}/{name} was not created: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = kubectl(
        kube,
        &["get", "crd", "flmonitors.flmon.io", "alertrules.flmon.io"],
    );
    assert!(out.status.success(), "the chart's CRDs were not installed");
    // Helm and the apiserver read YAML 1.1: the schemas they installed are the ones the types
    // generate, word for word (an unquoted enum value `Off` would have been read as `false`).
    for crd in flmon_crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let out = kubectl(kube, &["get", "crd", &name, "-o", "json"]);
        let installed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let generated = serde_json::to_value(&crd).unwrap();
        let schema =
            |v: &serde_json::Value| numbers_as_floats(&v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]);
        assert!(
            schema(&installed) == schema(&generated),
            "{name}: the installed schema differs from the generated one"
        );
    }
    // Every GPU mode a user may write is accepted.
    for mode in ["Off", "NodeVisible", "Claim"] {
        let monitor = format!(
            "apiVersion: flmon.io/v1alpha1\nkind: FLMonitor\nmetadata: {{name: gpu-{}, namespace: default}}\n\
             spec:\n  selector: {{matchLabels: {{app: fl}}}}\n  agent: {{gpu: {{mode: \"{mode}\"}}}}\n",
            mode.to_lowercase()
        );
        let mut apply = kube.kubectl();
        apply
            .args(["apply", "--dry-run=server", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = apply.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(monitor.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "gpu.mode {mode} was refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The example NOTES.txt points users at is accepted by the installed CRD.
    let example = repo_root().join("manifests/examples/flmonitor.yaml");
    let out = kubectl(kube, &["create", "namespace", "fl-team"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kube
        .kubectl()
        .args(["apply", "--dry-run=server", "-f"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The operator's service account may patch flmon.io/* pod metadata and nothing else.
    let ns = kube.namespace("chart-vap").await;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {app: fl}\nspec:\n  containers: [{name: c, image: busybox}]\n";
    let mut apply = kube.kubectl();
    apply
        .args(["apply", "-n", &ns, "-f", "-"])
        .stdin(std::process::Stdio::piped());
    let mut child = apply.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(pod.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let operator = "system:serviceaccount:flmon-system:flmon-operator";
    let allowed = kubectl(
        kube,
        &[
            "--as",
            operator,
            "-n",
            &ns,
            "label",
            "pod",
            "p",
            "flmon.io/straggler=true",
        ],
    );
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let denied = kubectl(
        kube,
        &[
            "--as",
            operator,
            "-n",
            &ns,
            "label",
            "--overwrite",
            "pod",
            "p",
            "app=other",
        ],
    );
    assert!(
        !denied.status.success(),
        "the operator could relabel a pod's app label"
    );
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("only flmon.io/* pod labels"), "{err}");
    // The operator cannot read Secrets outside its namespace.
    let secrets = kubectl(
        kube,
        &["--as", operator, "auth", "can-i", "get", "secrets", "-n", &ns],
    );
    assert_eq!(String::from_utf8_lossy(&secrets.stdout).trim(), "no");
}
