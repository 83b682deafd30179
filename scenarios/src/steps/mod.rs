//! Executing scenario steps against a running backend: the dispatcher and the polling
//! and error helpers the step modules share.

mod data;
mod fault;
mod guest;
mod host;
pub mod upstream;

use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::backend::Cluster;
use crate::model::{self, Step};
use crate::Failure;
use data::{read, write};
use fault::fault;
use guest::{apply, delete, expect, run_pod};
use host::{expect_host, orphan_report};

type Result<T> = std::result::Result<T, Failure>;

fn fail(msg: impl Into<String>) -> Failure {
    Failure(msg.into())
}

/// Polls `check` every 100 ms until it returns Ok(true) or `within` passes.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>>>,
{
    let deadline = Instant::now() + within;
    loop {
        let last = match check().await {
            Ok(None) => return Ok(()),
            Ok(Some(why)) => why,
            Err(e) => e.0,
        };
        if Instant::now() >= deadline {
            return Err(fail(format!("{what}: not within {within:?}: {last}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run_step<C: Cluster>(c: &mut C, step: &Step) -> Result<()> {
    match step {
        Step::Apply(objs) => apply(c, objs).await,
        Step::Delete(d) => delete(c, d).await,
        Step::RunPod(p) => run_pod(c, p).await,
        Step::Expect(e) => expect(c, e).await,
        Step::ExpectHost(e) => expect_host(c, e).await,
        Step::Write(w) => write(c, w).await,
        Step::Read(r) => read(c, r).await,
        Step::Expand(e) => {
            let size = model::parse_size(&e.size).map_err(fail)?;
            c.env()
                .pvcs(&e.namespace)
                .patch(
                    &e.pvc,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": size.to_string()}}}})),
                )
                .await
                .map_err(|x| fail(format!("expanding {}: {x}", e.pvc)))?;
            Ok(())
        }
        Step::Snapshot(s) => {
            let mut spec = json!({"source": {"persistentVolumeClaimName": s.pvc}});
            if let Some(class) = &s.class_name {
                spec["volumeSnapshotClassName"] = json!(class);
            }
            apply(c, &[json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": s.name, "namespace": s.namespace}, "spec": spec})]).await
        }
        Step::Fault(f) => fault(c, f).await,
        Step::Sleep(d) => {
            tokio::time::sleep(*d).await;
            Ok(())
        }
        Step::OrphanReport(o) => orphan_report(c, o).await,
        Step::InFlight(f) => {
            let phase = f.phase.to_string();
            let c = &*c;
            eventually(f.within, &format!("a {phase} call in flight on {}", f.node), || async {
                Ok((!c.in_flight(&phase, &f.node).await?).then(|| "none under way".to_string()))
            })
            .await
        }
        Step::NeverDoubleAttached(on) => {
            if *on {
                c.watch_double_attach();
            }
            Ok(())
        }
        Step::NeverPluggedInto(vm) => {
            host::never_plugged_into(c.env(), vm.clone());
            Ok(())
        }
        Step::NoFailed(phase) => {
            let failed: Vec<String> = c
                .env()
                .timeline
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|p| p.name == *phase && !p.ok)
                .map(|p| format!("{} at {} ms", p.subject, p.start_ms))
                .collect();
            if failed.is_empty() {
                Ok(())
            } else {
                Err(fail(format!("{} failed {phase} call(s): {}", failed.len(), failed.join(", "))))
            }
        }
    }
}
