//! Cluster add-ons the driver's snapshots need: the VolumeSnapshot CRDs and the
//! snapshot-controller (external-snapshotter v8, built by build-tools.sh). The
//! controller runs on the host with a kubeconfig, like the control plane it
//! extends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use serde_json::Value;

use super::{process, wait_until, ClusterError, Result, Spec};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Snapshots {
    /// The snapshot-controller binary.
    pub controller: PathBuf,
    /// Directory of the CRD manifests (`client/config/crd` of external-snapshotter).
    pub crds: PathBuf,
}

/// Applies every CRD in `dir` (server-side apply, so a second `up` is a no-op).
pub async fn apply_crds(client: &kube::Client, dir: &Path) -> Result<usize> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ClusterError::io("reading", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut names = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| ClusterError::io("reading", &f, e))?;
        for doc in text.split("\n---") {
            if doc.trim().trim_start_matches("---").trim().is_empty() {
                continue;
            }
            let v: Value =
                serde_saphyr::from_str(doc).map_err(|e| ClusterError::Invalid(format!("{}: {e}", f.display())))?;
            if v.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
                continue;
            }
            let name = v.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            api.patch(&name, &PatchParams::apply("hcsi-cluster").force(), &Patch::Apply(&v))
                .await
                .map_err(|e| ClusterError::Invalid(format!("applying CRD {name}: {e}")))?;
            names.push(name);
        }
    }
    // Established before anything creates a VolumeSnapshotClass.
    for name in &names {
        wait_until(&format!("CRD {name}"), Duration::from_secs(30), || {
            let api = api.clone();
            async move {
                let crd = api.get(name).await.ok()?;
                let established = crd.data.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.get("type") == Some(&"Established".into()) && c.get("status") == Some(&"True".into())
                    })
                });
                (!established).then(|| "not established".into())
            }
        })
        .await?;
    }
    Ok(names.len())
}

pub async fn start(spec: &Spec, snapshots: &Snapshots) -> Result<()> {
    let client = super::admin_client(spec).await?;
    apply_crds(&client, &snapshots.crds).await?;
    let args = vec![
        format!("--kubeconfig={}", spec.admin_kubeconfig().display()),
        "--leader-election=false".into(),
        "--v=2".into(),
    ];
    process::spawn(&spec.state_dir, "snapshot-controller", &snapshots.controller, &args)?;
    Ok(())
}
