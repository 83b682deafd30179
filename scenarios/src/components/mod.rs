//! The Kubernetes side, played as the real components do it: the
//! external-provisioner, the attach/detach controller with the
//! external-attacher, the kubelet, the external-resizer, the
//! external-snapshotter and the persistent-volume controller's binding. Each
//! is a loop over guest API objects.

pub mod attacher;
pub mod binder;
pub mod fs_group;
pub mod kubelet;
pub mod node_lifecycle;
pub mod provisioner;
pub mod registrar;
pub mod resizer;
pub mod snapshotter;
pub mod workers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::env::Env;

use csi::volume_capability::access_mode::Mode;
use csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use csi_proto::csi::v1 as csi;
use k8s_openapi::api::core::v1::PersistentVolume;

/// The CSI access mode Kubernetes derives from an access-mode list.
pub fn mode_of(access_modes: &[String]) -> Mode {
    if access_modes.iter().any(|m| m == "ReadWriteMany") {
        Mode::MultiNodeMultiWriter
    } else if access_modes.iter().any(|m| m == "ReadOnlyMany") {
        Mode::MultiNodeReaderOnly
    } else if access_modes.iter().any(|m| m == "ReadWriteOncePod") {
        Mode::SingleNodeSingleWriter
    } else {
        Mode::SingleNodeWriter
    }
}

pub fn capability(access_modes: &[String], block: bool, fs_type: &str) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(AccessMode { mode: mode_of(access_modes) as i32 }),
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume { fs_type: fs_type.into(), ..Default::default() })
        }),
    }
}

/// The capability a PV is used with.
pub fn pv_capability(pv: &PersistentVolume) -> csi::VolumeCapability {
    let spec = pv.spec.clone().unwrap_or_default();
    let block = spec.volume_mode.as_deref() == Some("Block");
    let fs = spec.csi.as_ref().and_then(|c| c.fs_type.clone()).unwrap_or_default();
    capability(&spec.access_modes.unwrap_or_default(), block, &fs)
}

pub fn pv_handle(pv: &PersistentVolume) -> String {
    pv.spec.as_ref().and_then(|s| s.csi.as_ref()).map(|c| c.volume_handle.clone()).unwrap_or_default()
}

/// Waits one polling period; false once the run is stopping.
pub async fn tick(stop: &CancellationToken, period: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(period) => true,
    }
}

/// The shortest rest between two passes of a component.
const MIN_GAP: Duration = Duration::from_millis(5);

/// How long a component rests after a pass that took `pass`: as long as the pass
/// took, at least [`MIN_GAP`] and at most `period`. A quiet component answers a
/// change within milliseconds, as a real sidecar's informer does (a fixed 20 ms
/// rest put ~20 ms of the runner's own on each pod start the bench measured),
/// while one whose listings have grown long in a burst spends at most half its
/// time listing and leaves the CPU to the driver and the simulator. Passes do
/// not wait for slow calls (see [`workers`]), so their length is their own work.
fn gap_after(pass: Duration, period: Duration) -> Duration {
    pass.clamp(MIN_GAP, period.max(MIN_GAP))
}

/// Counts the changes `events` brings (a lagging receiver counts as one), until
/// `stop`. The count itself means nothing; a component waits for it to move.
pub fn count_changes(
    mut events: broadcast::Receiver<Arc<harvester_simulator::api::store::Event>>,
    stop: CancellationToken,
) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = events.recv() => e,
            };
            match event {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => tx.send_modify(|n| *n += 1),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    rx
}

/// When a component's next pass starts: at the latest `period` after the last one (the
/// host moves on its own: a snapshot gets ready, a VM halts; retries come due), and
/// sooner when the guest API changed, where the runner sees its changes.
pub struct Wakeup {
    changes: Option<watch::Receiver<u64>>,
    period: Duration,
    /// When the pass now ending began.
    pass_began: Option<tokio::time::Instant>,
}

impl Wakeup {
    pub fn new(env: &Env, period: Duration) -> Self {
        Self::from_parts(env.guest_changes.clone(), period)
    }

    fn from_parts(changes: Option<watch::Receiver<u64>>, period: Duration) -> Self {
        Self { changes, period, pass_began: None }
    }

    /// Waits for the next pass; false once the run is stopping.
    pub async fn next(&mut self, stop: &CancellationToken) -> bool {
        let Some(changes) = &mut self.changes else { return tick(stop, self.period).await };
        let latest = tokio::time::Instant::now() + self.period;
        let pass = self.pass_began.map_or(Duration::ZERO, |t| t.elapsed());
        if !tick(stop, gap_after(pass, self.period)).await {
            return false;
        }
        let go = tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep_until(latest) => true,
            changed = changes.changed() => {
                if changed.is_err() {
                    // The guest API is gone (the run is ending): polling alone from here.
                    self.changes = None;
                }
                true
            }
        };
        self.pass_began = Some(tokio::time::Instant::now());
        go
    }
}

/// Works on independent objects at once, as the sidecars' worker pools do.
pub async fn concurrently<T, R, F, Fut>(items: Vec<T>, work: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = R>,
{
    futures::future::join_all(items.into_iter().map(work)).await
}

/// Lets an object go once this component is done with it. The whole list is
/// written back, so another component's finalizer on the same object stays.
pub async fn remove_finalizer<K>(api: &kube::Api<K>, object: &K, finalizer: &str) -> Result<(), String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let meta = object.meta();
    let name = meta.name.as_deref().ok_or("object has no name")?;
    let kept: Vec<&String> = meta.finalizers.iter().flatten().filter(|f| *f != finalizer).collect();
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"metadata": {"finalizers": kept}})),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    // Real time, with a period far beyond what any wake may take: these check which
    // event ends the wait, never how fast.
    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn a_component_rests_as_long_as_its_last_pass_took_within_bounds() {
        let period = Duration::from_millis(100);
        assert_eq!(gap_after(Duration::ZERO, period), MIN_GAP);
        assert_eq!(gap_after(Duration::from_millis(30), period), Duration::from_millis(30));
        assert_eq!(gap_after(Duration::from_secs(3), period), period);
        // A period shorter than the floor does not turn the bounds around.
        assert_eq!(gap_after(Duration::from_secs(3), Duration::from_millis(1)), MIN_GAP);
    }

    #[tokio::test]
    async fn a_guest_change_wakes_before_the_period() {
        let (tx, rx) = watch::channel(0u64);
        let mut wakeup = Wakeup::from_parts(Some(rx), LONG);
        let stop = CancellationToken::new();
        tx.send_modify(|n| *n += 1);
        let started = Instant::now();
        assert!(wakeup.next(&stop).await);
        assert!(started.elapsed() < LONG / 2, "woke on the change, not the period");
    }

    #[tokio::test]
    async fn changes_during_a_pass_are_not_lost() {
        let (tx, rx) = watch::channel(0u64);
        let mut wakeup = Wakeup::from_parts(Some(rx), LONG);
        let stop = CancellationToken::new();
        tx.send_modify(|n| *n += 1);
        assert!(wakeup.next(&stop).await);
        // A change while the component works: the next wait ends at once.
        tx.send_modify(|n| *n += 1);
        let started = Instant::now();
        assert!(wakeup.next(&stop).await);
        assert!(started.elapsed() < LONG / 2);
    }

    #[tokio::test]
    async fn without_changes_the_period_ends_the_wait() {
        let (_tx, rx) = watch::channel(0u64);
        let mut wakeup = Wakeup::from_parts(Some(rx), Duration::from_millis(50));
        let stop = CancellationToken::new();
        let started = Instant::now();
        assert!(wakeup.next(&stop).await);
        assert!(started.elapsed() >= Duration::from_millis(50));
        let mut polling = Wakeup::from_parts(None, Duration::from_millis(50));
        assert!(polling.next(&stop).await);
    }

    #[tokio::test]
    async fn stopping_ends_the_wait_with_false() {
        let (_tx, rx) = watch::channel(0u64);
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(!Wakeup::from_parts(Some(rx), LONG).next(&stop).await);
        assert!(!Wakeup::from_parts(None, LONG).next(&stop).await);
    }

    #[tokio::test]
    async fn a_closed_feed_falls_back_to_polling() {
        let (tx, rx) = watch::channel(0u64);
        drop(tx);
        let mut wakeup = Wakeup::from_parts(Some(rx), Duration::from_millis(50));
        let stop = CancellationToken::new();
        assert!(wakeup.next(&stop).await);
        assert!(wakeup.changes.is_none());
        let started = Instant::now();
        assert!(wakeup.next(&stop).await);
        assert!(started.elapsed() >= Duration::from_millis(50), "polls once the feed is gone");
    }

    #[tokio::test]
    async fn every_guest_store_change_moves_the_count() {
        use harvester_simulator::api::store::Store;
        let store = Store::new(100);
        let stop = CancellationToken::new();
        let mut counted = count_changes(store.subscribe(), stop.clone());
        let key = harvester_simulator::api::resources::ResourceKey::new("", "configmaps");
        store.create(&key, "ns", "a", serde_json::json!({"metadata": {"name": "a"}})).expect("a");
        tokio::time::timeout(LONG, counted.changed()).await.expect("counted").expect("feed open");
        assert_eq!(*counted.borrow_and_update(), 1);
        store.remove(&key, "ns", "a", None).expect("remove a");
        tokio::time::timeout(LONG, counted.changed()).await.expect("counted").expect("feed open");
        assert_eq!(*counted.borrow_and_update(), 2);
        stop.cancel();
        assert!(tokio::time::timeout(LONG, counted.changed()).await.expect("the feed ends").is_err());
    }
}
