//! A watch-fed view of the namespace's VMs and VMIs, indexed by the volumes
//! they mention, for ControllerPublish. Listing every VM and VMI on each
//! publish made a burst of N publishes cost N full listings (time and memory
//! growing as N², 624 MB at 1,000 claims); with this view a publish reads only
//! the few VMs that may hold its volume, fresh from the host.
//!
//! The view names candidates and never decides alone; what it must never do is
//! miss a VM that holds the volume, which could let the volume be plugged into
//! a second VM. So:
//! - It answers only while both watches are synced and the last thing each
//!   watch did was not an error; otherwise the caller lists as before.
//! - A watch lags the writes this process makes. Every hot-plug this process
//!   asks for stays a candidate until the view shows it, or until an unplug of
//!   it was confirmed on the host (see [`VmView::note_plugging`]). A view that
//!   still shows a finished detach costs a fresh read of that VM, nothing more.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{watcher, WatchStreamExt};
use tokio_util::sync::CancellationToken;

use super::attachment::{attachment_in, volumes_named, Attachment};
use super::{vm_of, vmi_of, Vm, Vmi};

#[derive(Default)]
struct Index {
    vms: HashMap<String, Vm>,
    vmis: HashMap<String, Vmi>,
    /// Volume → the VMs whose VM or VMI object mentions it.
    holders: HashMap<String, BTreeSet<String>>,
    /// Objects of each kind this driver could not read: what they hold is
    /// unknown, so while any is there the view does not answer (the listing
    /// it falls back to fails loudly on them, as before the view).
    unreadable: [BTreeSet<String>; 2],
}

impl Index {
    fn mentioned(&self, name: &str) -> BTreeSet<String> {
        volumes_named(self.vms.get(name), self.vmis.get(name)).into_iter().map(String::from).collect()
    }

    /// Runs `change` on the objects of VM `name` and moves the index along.
    fn update(&mut self, name: &str, change: impl FnOnce(&mut Self)) {
        let before = self.mentioned(name);
        change(self);
        let after = self.mentioned(name);
        for gone in before.difference(&after) {
            if let Some(set) = self.holders.get_mut(gone) {
                set.remove(name);
                if set.is_empty() {
                    self.holders.remove(gone);
                }
            }
        }
        for new in after.difference(&before) {
            self.holders.entry(new.clone()).or_default().insert(name.to_string());
        }
    }

    fn rebuild_holders(&mut self) {
        self.holders.clear();
        let names: BTreeSet<String> = self.vms.keys().chain(self.vmis.keys()).cloned().collect();
        for name in names {
            for volume in self.mentioned(&name) {
                self.holders.entry(volume).or_default().insert(name.clone());
            }
        }
    }

    fn attachment(&self, vm: &str, volume: &str) -> Attachment {
        attachment_in(vm, self.vms.get(vm), self.vmis.get(vm), volume)
    }

    /// Takes in the object `obj` of `kind` (None: deleted) named `name`.
    fn set(&mut self, kind: Kind, name: &str, obj: Option<&DynamicObject>) {
        let unreadable = &mut self.unreadable[kind as usize];
        unreadable.remove(name);
        let parsed = match (kind, obj) {
            (_, None) => Ok(None),
            (Kind::Vm, Some(o)) => vm_of(o).map(|v| Some(Typed::Vm(v))),
            (Kind::Vmi, Some(o)) => vmi_of(o).map(|v| Some(Typed::Vmi(v))),
        };
        let parsed = parsed.unwrap_or_else(|e| {
            tracing::warn!(object = %name, error = %e, "unreadable object in the host VM watch");
            unreadable.insert(name.to_string());
            None
        });
        self.update(name, |i| match (kind, parsed) {
            (_, Some(Typed::Vm(v))) => {
                i.vms.insert(name.to_string(), v);
            }
            (_, Some(Typed::Vmi(v))) => {
                i.vmis.insert(name.to_string(), v);
            }
            (Kind::Vm, None) => {
                i.vms.remove(name);
            }
            (Kind::Vmi, None) => {
                i.vmis.remove(name);
            }
        });
    }

    /// Replaces every object of `kind` with a listing's.
    fn replace(&mut self, kind: Kind, listing: impl Iterator<Item = DynamicObject>) {
        match kind {
            Kind::Vm => self.vms.clear(),
            Kind::Vmi => self.vmis.clear(),
        }
        self.unreadable[kind as usize].clear();
        self.rebuild_holders();
        for obj in listing {
            let name = obj.metadata.name.clone().unwrap_or_default();
            self.set(kind, &name, Some(&obj));
        }
    }

    fn all_readable(&self) -> bool {
        self.unreadable.iter().all(BTreeSet::is_empty)
    }
}

/// A VM or VMI as this driver reads it.
enum Typed {
    Vm(Vm),
    Vmi(Vmi),
}

/// Which of the two watches an event came from.
#[derive(Clone, Copy)]
enum Kind {
    Vm,
    Vmi,
}

/// One watch's state: synced once its first listing is in, and trusted
/// while its last event was not an error.
#[derive(Default)]
struct Health {
    synced: AtomicBool,
    trusted: AtomicBool,
}

pub struct VmView {
    index: Mutex<Index>,
    health: [Health; 2],
    /// (volume, VM) pairs this process hot-plugged that the view may not show yet.
    plugging: Mutex<HashSet<(String, String)>>,
    /// Bumped on every change the view takes in: what waiters wake on.
    changed: tokio::sync::watch::Sender<u64>,
}

/// How a wait on the view ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// The condition held, as the view saw it.
    Done,
    /// The deadline passed first.
    TimedOut,
    /// The view stopped being usable (a watch error): wait by other means.
    Unusable,
}

impl VmView {
    fn empty() -> Self {
        Self {
            index: Mutex::new(Index::default()),
            health: Default::default(),
            plugging: Mutex::new(HashSet::new()),
            changed: tokio::sync::watch::channel(0).0,
        }
    }

    /// Watches `vms` and `vmis` (one namespace's) until `shutdown`.
    pub fn start(vms: Api<DynamicObject>, vmis: Api<DynamicObject>, shutdown: CancellationToken) -> Arc<Self> {
        let view = Arc::new(Self::empty());
        for (api, kind) in [(vms, Kind::Vm), (vmis, Kind::Vmi)] {
            let (view, shutdown) = (view.clone(), shutdown.clone());
            tokio::spawn(async move {
                let stream = watcher(api, watcher::Config::default()).default_backoff();
                let mut stream = std::pin::pin!(stream);
                let mut listing: Vec<DynamicObject> = Vec::new();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        item = stream.next() => match item {
                            Some(Ok(event)) => view.apply(kind, event, &mut listing),
                            Some(Err(e)) => {
                                view.distrust(kind);
                                tracing::debug!(error = %e, "host VM watch error (publishes list the host until it recovers)");
                            }
                            None => return,
                        }
                    }
                }
            });
        }
        view
    }

    fn health(&self, kind: Kind) -> &Health {
        &self.health[kind as usize]
    }

    /// A watch failed: no answers until it runs again, and waiters find out now
    /// (they wait by other means instead of sleeping to their deadline).
    fn distrust(&self, kind: Kind) {
        self.health(kind).trusted.store(false, Ordering::SeqCst);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn apply(&self, kind: Kind, event: watcher::Event<DynamicObject>, listing: &mut Vec<DynamicObject>) {
        // A listing done, or an event after an error (the watch resumes where it
        // stopped, so what it missed arrives in order): the watch runs again.
        let running = !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_));
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Init => listing.clear(),
            watcher::Event::InitApply(obj) => listing.push(obj),
            watcher::Event::InitDone => {
                index.replace(kind, listing.drain(..));
                self.health(kind).synced.store(true, Ordering::SeqCst);
            }
            watcher::Event::Apply(obj) => {
                let name = obj.metadata.name.clone().unwrap_or_default();
                index.set(kind, &name, Some(&obj));
            }
            watcher::Event::Delete(obj) => {
                let name = obj.metadata.name.clone().unwrap_or_default();
                index.set(kind, &name, None);
            }
        }
        if running {
            self.health(kind).trusted.store(true, Ordering::SeqCst);
        }
        drop(index);
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Waits until `done` holds for the VMI named `vm` as the view shows it
    /// (`None`: no such VMI), or `deadline`. Every publish used to open a watch
    /// of its own for this, hundreds at once in a burst; they now share the
    /// view's. The caller confirms the outcome with a fresh read: the view only
    /// says when to look.
    pub async fn wait_vmi(
        &self,
        vm: &str,
        deadline: tokio::time::Instant,
        done: impl Fn(Option<&Vmi>) -> bool,
    ) -> Waited {
        let mut changes = self.changed.subscribe();
        loop {
            // Marked seen before the look: a change after it wakes the next wait.
            changes.borrow_and_update();
            {
                let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
                if !self.usable(&index) {
                    return Waited::Unusable;
                }
                if done(index.vmis.get(vm)) {
                    return Waited::Done;
                }
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Waited::Unusable,
                Err(_) => return Waited::TimedOut,
            }
        }
    }

    fn usable(&self, index: &Index) -> bool {
        index.all_readable()
            && self.health.iter().all(|h| h.synced.load(Ordering::SeqCst) && h.trusted.load(Ordering::SeqCst))
    }

    /// The VMs other than `except` that may hold `volume`: those whose objects
    /// in the view mention it, and those this process hot-plugged it into that
    /// the view does not show yet. None when the view cannot be trusted now
    /// (the caller then lists the host). The caller reads the candidates fresh:
    /// the view only has to never miss one, and a lagging view that still shows
    /// a finished detach then costs a read, not a refused publish.
    pub fn candidates(&self, volume: &str, except: &str) -> Option<BTreeSet<String>> {
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        if !self.usable(&index) {
            return None;
        }
        let mut plugging = self.plugging.lock().unwrap_or_else(|p| p.into_inner());
        // Hot-plugs the view shows now need no remembering.
        plugging.retain(|(v, vm)| v != volume || !index.attachment(vm, v).is_present());
        let mentioned = index.holders.get(volume).into_iter().flatten();
        let plugged = plugging.iter().filter(|(v, _)| v == volume).map(|(_, vm)| vm);
        Some(mentioned.chain(plugged).filter(|vm| *vm != except).cloned().collect())
    }

    /// Before this process asks the host to hot-plug `volume` into `vm`: until
    /// the view shows it, the volume counts as attached there.
    pub fn note_plugging(&self, volume: &str, vm: &str) {
        self.plugging.lock().unwrap_or_else(|p| p.into_inner()).insert((volume.to_string(), vm.to_string()));
    }

    /// The host confirmed `volume` gone from `vm` (fresh reads, not this view).
    pub fn note_detached(&self, volume: &str, vm: &str) {
        self.plugging.lock().unwrap_or_else(|p| p.into_inner()).remove(&(volume.to_string(), vm.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use watcher::Event;

    /// A VM whose template hot-plugs `volumes`.
    fn vm(name: &str, volumes: &[&str]) -> DynamicObject {
        let vols: Vec<_> = volumes
            .iter()
            .map(|v| json!({"name": v, "persistentVolumeClaim": {"claimName": v, "hotpluggable": true}}))
            .collect();
        serde_json::from_value(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name}, "spec": {"template": {"spec": {"volumes": vols}}},
            "status": {"printableStatus": "Running", "ready": true}}))
        .expect("a VM")
    }

    /// A VMI with `volume` in its status at `phase`.
    fn vmi(name: &str, volume: &str, phase: &str) -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name}, "spec": {"volumes": []},
            "status": {"phase": "Running", "volumeStatus": [
                {"name": volume, "phase": phase, "target": "sda", "hotplugVolume": {},
                 "persistentVolumeClaimInfo": {"claimName": volume}}]}}))
        .expect("a VMI")
    }

    /// A view whose watches listed `vms` and `vmis`.
    fn synced(vms: Vec<DynamicObject>, vmis: Vec<DynamicObject>) -> VmView {
        let view = VmView::empty();
        for (kind, objects) in [(Kind::Vm, vms), (Kind::Vmi, vmis)] {
            let mut listing = Vec::new();
            view.apply(kind, Event::Init, &mut listing);
            for o in objects {
                view.apply(kind, Event::InitApply(o), &mut listing);
            }
            view.apply(kind, Event::InitDone, &mut listing);
        }
        view
    }

    fn holders(found: Option<BTreeSet<String>>) -> Option<Vec<String>> {
        found.map(|f| f.into_iter().collect())
    }

    #[test]
    fn it_answers_only_once_both_watches_listed() {
        let view = VmView::empty();
        let mut listing = Vec::new();
        view.apply(Kind::Vm, Event::Init, &mut listing);
        view.apply(Kind::Vm, Event::InitApply(vm("a", &["pvc-1"])), &mut listing);
        view.apply(Kind::Vm, Event::InitDone, &mut listing);
        assert_eq!(holders(view.candidates("pvc-1", "b")), None, "the VMIs are not listed yet");
        let mut listing = Vec::new();
        view.apply(Kind::Vmi, Event::Init, &mut listing);
        view.apply(Kind::Vmi, Event::InitDone, &mut listing);
        assert_eq!(holders(view.candidates("pvc-1", "b")), Some(vec!["a".to_string()]));
    }

    #[test]
    fn the_vm_asked_about_is_left_out_and_unrelated_vms_are_not_looked_at() {
        let view = synced(vec![vm("a", &["pvc-1"]), vm("b", &["pvc-2"])], vec![vmi("c", "pvc-1", "Detaching")]);
        assert_eq!(holders(view.candidates("pvc-1", "a")), Some(vec!["c".to_string()]));
        assert_eq!(holders(view.candidates("pvc-1", "b")), Some(vec!["a".to_string(), "c".to_string()]));
        assert_eq!(holders(view.candidates("pvc-3", "b")), Some(vec![]));
    }

    #[test]
    fn a_hotplug_of_this_process_counts_until_the_view_shows_it() {
        let view = synced(vec![vm("a", &[]), vm("b", &[])], vec![]);
        view.note_plugging("pvc-1", "a");
        // The watch has not delivered the patched VM: the volume is still held by a.
        assert_eq!(holders(view.candidates("pvc-1", "b")), Some(vec!["a".to_string()]));
        assert_eq!(holders(view.candidates("pvc-1", "a")), Some(vec![]));
        view.apply(Kind::Vm, Event::Apply(vm("a", &["pvc-1"])), &mut Vec::new());
        assert_eq!(holders(view.candidates("pvc-1", "b")), Some(vec!["a".to_string()]));
        assert!(view.plugging.lock().expect("lock").is_empty(), "seen, so no longer remembered");
    }

    #[test]
    fn an_unplug_never_hides_an_attachment_the_view_still_shows() {
        let view = synced(vec![vm("a", &["pvc-1"])], vec![vmi("a", "pvc-1", "Ready")]);
        view.note_plugging("pvc-1", "a");
        view.note_detached("pvc-1", "a");
        // Confirmed gone on the host, but the watch lags: still refused elsewhere.
        assert_eq!(holders(view.candidates("pvc-1", "b")), Some(vec!["a".to_string()]));
        view.apply(Kind::Vm, Event::Apply(vm("a", &[])), &mut Vec::new());
        view.apply(Kind::Vmi, Event::Delete(vmi("a", "pvc-1", "Ready")), &mut Vec::new());
        assert_eq!(holders(view.candidates("pvc-1", "b")), Some(vec![]));
        assert!(view.index.lock().expect("lock").holders.is_empty());
    }

    #[test]
    fn a_remembered_hotplug_that_was_confirmed_unplugged_is_forgotten() {
        let view = synced(vec![vm("a", &[])], vec![]);
        view.note_plugging("pvc-1", "a");
        view.note_detached("pvc-1", "a");
        assert_eq!(holders(view.candidates("pvc-1", "b")), Some(vec![]));
    }

    #[test]
    fn after_a_watch_error_it_does_not_answer_until_the_watch_runs_again() {
        let view = synced(vec![vm("a", &["pvc-1"])], vec![]);
        view.health(Kind::Vmi).trusted.store(false, Ordering::SeqCst);
        assert_eq!(holders(view.candidates("pvc-1", "b")), None);
        // A re-list under way is not enough; its end is.
        let mut listing = Vec::new();
        view.apply(Kind::Vmi, Event::Init, &mut listing);
        view.apply(Kind::Vmi, Event::InitApply(vmi("b", "pvc-1", "Ready")), &mut listing);
        assert_eq!(holders(view.candidates("pvc-1", "c")), None);
        view.apply(Kind::Vmi, Event::InitDone, &mut listing);
        assert_eq!(holders(view.candidates("pvc-1", "c")), Some(vec!["a".to_string(), "b".to_string()]));
    }

    fn ready_in(vm: &'static str, volume: &'static str) -> impl Fn(Option<&Vmi>) -> bool {
        move |vmi| vmi.is_some_and(|v| attachment_in(vm, None, Some(v), volume).is_ready())
    }

    /// A view with pvc-1 on its way into VM a, and a task waiting (up to 30 s)
    /// for it to be Ready there, already asleep.
    async fn waiting_for_ready() -> (Arc<VmView>, tokio::task::JoinHandle<Waited>) {
        let view = Arc::new(synced(vec![vm("a", &["pvc-1"])], vec![vmi("a", "pvc-1", "AttachedToNode")]));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let waiter = {
            let view = view.clone();
            tokio::spawn(async move { view.wait_vmi("a", deadline, ready_in("a", "pvc-1")).await })
        };
        tokio::task::yield_now().await;
        (view, waiter)
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_view_sees_the_volume_ready() {
        let (view, waiter) = waiting_for_ready().await;
        view.apply(Kind::Vmi, Event::Apply(vmi("a", "pvc-1", "MountedToPod")), &mut Vec::new());
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "not ready yet");
        view.apply(Kind::Vmi, Event::Apply(vmi("a", "pvc-1", "Ready")), &mut Vec::new());
        assert_eq!(waiter.await.expect("the waiter"), Waited::Done);
    }

    #[tokio::test]
    async fn a_waiter_learns_at_once_that_a_watch_failed() {
        let (view, waiter) = waiting_for_ready().await;
        view.distrust(Kind::Vmi);
        let waited = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
        assert_eq!(waited.expect("woken, not left to its deadline").expect("the waiter"), Waited::Unusable);
    }

    #[tokio::test]
    async fn a_wait_times_out_or_gives_up_when_the_view_is_unusable() {
        let view = synced(vec![vm("a", &["pvc-1"])], vec![vmi("a", "pvc-1", "AttachedToNode")]);
        let soon = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
        assert_eq!(view.wait_vmi("a", soon, ready_in("a", "pvc-1")).await, Waited::TimedOut);
        view.health(Kind::Vm).trusted.store(false, Ordering::SeqCst);
        let later = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        assert_eq!(view.wait_vmi("a", later, ready_in("a", "pvc-1")).await, Waited::Unusable);
    }

    /// A VM whose template this driver cannot read.
    fn unreadable_vm(name: &str) -> DynamicObject {
        serde_json::from_value(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name}, "spec": {"template": {"spec": {"volumes": "not a list"}}}}))
        .expect("a dynamic object")
    }

    #[test]
    fn an_object_it_cannot_read_stops_its_answers_until_it_is_readable_or_gone() {
        // In a listing: what b holds is unknown, so no answer (not "nobody holds it").
        let view = synced(vec![vm("a", &[]), unreadable_vm("b")], vec![]);
        assert_eq!(holders(view.candidates("pvc-1", "a")), None);
        view.apply(Kind::Vm, Event::Apply(vm("b", &["pvc-1"])), &mut Vec::new());
        assert_eq!(holders(view.candidates("pvc-1", "a")), Some(vec!["b".to_string()]));
        // In an update: the old reading of b must not stand in for the new one.
        view.apply(Kind::Vm, Event::Apply(unreadable_vm("b")), &mut Vec::new());
        assert_eq!(holders(view.candidates("pvc-1", "a")), None);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let waited = futures::executor::block_on(view.wait_vmi("a", deadline, |_| false));
        assert_eq!(waited, Waited::Unusable);
        view.apply(Kind::Vm, Event::Delete(unreadable_vm("b")), &mut Vec::new());
        assert_eq!(holders(view.candidates("pvc-1", "a")), Some(vec![]));
    }

    #[test]
    fn a_relisting_replaces_what_the_view_held() {
        let view = synced(vec![vm("a", &["pvc-1"]), vm("b", &["pvc-2"])], vec![]);
        let mut listing = Vec::new();
        view.apply(Kind::Vm, Event::Init, &mut listing);
        view.apply(Kind::Vm, Event::InitApply(vm("b", &["pvc-1"])), &mut listing);
        view.apply(Kind::Vm, Event::InitDone, &mut listing);
        assert_eq!(holders(view.candidates("pvc-1", "c")), Some(vec!["b".to_string()]));
        assert_eq!(holders(view.candidates("pvc-2", "c")), Some(vec![]));
    }
}
