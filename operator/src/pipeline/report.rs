//! The final performance report, kept in a ConfigMap `<monitor>-flmon-report` in the monitor's
//! namespace (owned by the monitor), so it survives the job's pods; and the plots, report and
//! page written into `--report-dir` for a local reader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flmon_crds::FLMonitor;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use crate::analysis::Analyzer;
use crate::render::{self, RenderError, Size};

/// Field manager of what the pipeline writes (status fields, annotations, reports).
pub const FIELD_MANAGER: &str = "flmon-operator-analysis";

/// Key of the report in the ConfigMap's data.
pub const REPORT_KEY: &str = "report.md";

/// Name of a monitor's report ConfigMap.
pub fn configmap_name(monitor: &str) -> String {
    format!("{monitor}-flmon-report")
}

/// The report ConfigMap of `monitor` holding `markdown`, owned by the monitor.
pub fn report_configmap(monitor: &FLMonitor, markdown: &str) -> ConfigMap {
    let labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "flmon".to_owned()),
        ("app.kubernetes.io/component".to_owned(), "report".to_owned()),
    ]);
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(configmap_name(&monitor.name_any())),
            namespace: monitor.namespace(),
            labels: Some(labels),
            owner_references: monitor.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(REPORT_KEY.to_owned(), markdown.to_owned())])),
        ..ConfigMap::default()
    }
}

/// Writes the report ConfigMap with server-side apply.
///
/// # Errors
/// The apiserver's error.
pub async fn write_configmap(
    client: &kube::Client,
    monitor: &FLMonitor,
    markdown: &str,
) -> Result<(), kube::Error> {
    let configmap = report_configmap(monitor, markdown);
    let namespace = monitor.namespace().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    api.patch(
        &configmap_name(&monitor.name_any()),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&configmap),
    )
    .await?;
    Ok(())
}

/// Where a monitor's files go under `--report-dir`: `<dir>/<namespace>/<name>/`.
pub fn monitor_dir(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    dir.join(namespace).join(name)
}

/// Renders the five figures (PNG and SVG), `report.md` and `index.html` of `analyzer` into
/// `out` (blocking: run it off the async workers).
///
/// # Errors
/// A drawing failure or a file that could not be written.
pub fn write_dir(analyzer: &Analyzer, name: &str, out: &Path) -> Result<(), RenderError> {
    render::render_analyzer_dir(analyzer, name, out, Size::DEFAULT)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flmon_crds::FLMonitorSpec;

    #[test]
    fn the_report_configmap_is_named_after_the_monitor_and_owned_by_it() {
        let mut monitor = FLMonitor::new(
            "mnist",
            serde_json::from_value::<FLMonitorSpec>(serde_json::json!({"selector": {}}))
                .expect("a minimal spec"),
        );
        monitor.metadata.namespace = Some("fl".into());
        monitor.metadata.uid = Some("uid-1".into());
        let configmap = report_configmap(&monitor, "# Report\n");
        assert_eq!(configmap.metadata.name.as_deref(), Some("mnist-flmon-report"));
        assert_eq!(configmap.metadata.namespace.as_deref(), Some("fl"));
        let owners = configmap.metadata.owner_references.expect("owned");
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].uid.as_str()),
            ("FLMonitor", "uid-1")
        );
        assert_eq!(configmap.data.expect("data")[REPORT_KEY], "# Report\n");
    }
}
