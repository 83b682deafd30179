//! Seed → scenario. The generator draws a random volume workflow (claims of three
//! kinds, moves, writes, reads, expansion, snapshot and restore, RWX readers) and
//! interleaves faults (kill -9 and restart of the controller, a node plugin or the
//! simulator, host API error rates, watch drops), as an ordinary
//! [`model::Scenario`]: the runner plays it like any YAML case, and `--write` saves
//! it as one.
//!
//! The plan keeps itself valid by tracking what runs where: an RWO claim's pod is
//! always deleted before the next one is created (a move, possibly while the old
//! pod still terminates, as a Deployment does), block ranges and file names are
//! never reused (so every earlier checksum stays true), and only operations the
//! driver supports on a kind are drawn: expansion for xfs filesystems and block
//! devices (ext4 grows online only with CAP_SYS_RESOURCE, which CI may lack; RWX
//! exports do not grow), snapshots for ext4 filesystems and block devices (a
//! restored xfs shares its source's UUID, which one kernel — the embedded backend's
//! VMs share this machine's — refuses to mount twice), RWX readers on other VMs.

use std::time::Duration;

use serde_json::{json, Value};

use super::rng::Rng;
use crate::model::{
    Delete, Expand, Expect, ExpectHost, Fault, PodVolume, Read, RunPod, Scenario, Snapshot, Step, World, Write,
};

/// The Harvester release every chaos scenario plays (RWX needs ≥ v1.4, snapshots
/// ≥ v1.7; v1.8 hot-plugs declaratively).
pub const PROFILE: &str = "v1.8";

/// The convergence bound: every wait (claim bound, pod running, snapshot ready,
/// capacity grown, VM unplugged, host volumes gone) must hold within this. Moves
/// take about a second here and a killed process is back within a few; 90 s leaves
/// room for the attacher's and kubelet's back-off after faults on a loaded machine
/// while still catching an operation that never converges.
pub const BOUND: Duration = Duration::from_secs(90);

/// The whole scenario, as a last resort behind the per-step bounds.
pub const TIMEOUT: Duration = Duration::from_secs(15 * 60);

const MI: u64 = 1 << 20;
/// Block claims are written in slots of this size, each slot once.
const SLOT: u64 = 4 * MI;
/// At most this many claims, counting restored ones.
const MAX_CLAIMS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// RWO filesystem; xfs ones expand, ext4 ones snapshot.
    Fs { xfs: bool },
    /// RWO raw block device.
    Block,
    /// RWX filesystem (NFS export).
    Rwx,
}

impl Kind {
    fn class(self) -> &'static str {
        match self {
            Kind::Fs { xfs: true } => "harvester-xfs",
            Kind::Fs { xfs: false } | Kind::Block => "harvester",
            Kind::Rwx => "harvester-rwx",
        }
    }
    fn path(self) -> &'static str {
        match self {
            Kind::Fs { .. } => "/data",
            Kind::Block => "/dev/xvda",
            Kind::Rwx => "/shared",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Kind::Fs { xfs: true } => "xfs",
            Kind::Fs { xfs: false } => "fs",
            Kind::Block => "blk",
            Kind::Rwx => "rwx",
        }
    }
    fn initial_mi(self) -> u64 {
        // xfs needs 300 MiB at least; the files are sparse.
        if matches!(self, Kind::Fs { xfs: true }) {
            320
        } else {
            64
        }
    }
    fn can_expand(self) -> bool {
        matches!(self, Kind::Fs { xfs: true } | Kind::Block)
    }
    fn can_snapshot(self) -> bool {
        matches!(self, Kind::Fs { xfs: false } | Kind::Block)
    }
}

/// Data written to a claim: a file (filesystems) or a range (block).
#[derive(Debug, Clone)]
struct Datum {
    remember: String,
    /// File path in the pod, or the device path.
    path: String,
    offset: u64,
    len: u64,
}

#[derive(Debug, Clone)]
struct Claim {
    name: String,
    kind: Kind,
    size_mi: u64,
    /// (pod, vm) of the pods using it now.
    pods: Vec<(String, String)>,
    data: Vec<Datum>,
    /// Block slots written so far (index = offset / SLOT).
    used_slots: Vec<u64>,
}

struct Gen {
    rng: Rng,
    vms: Vec<String>,
    steps: Vec<Step>,
    claims: Vec<Claim>,
    counter: u64,
    /// Actions left until the active API error rate is cleared.
    errors_for: Option<u32>,
}

fn within(step: Expect) -> Step {
    Step::Expect(step)
}

fn expect() -> Expect {
    Expect {
        pvc: None,
        pod: None,
        snapshot: None,
        namespace: "default".into(),
        phase: None,
        event: None,
        capacity_at_least: None,
        filesystem_at_least: None,
        path: None,
        handle_prefix: None,
        within: BOUND,
    }
}

fn expect_host() -> ExpectHost {
    ExpectHost {
        pvc_of: None,
        labels: Default::default(),
        annotations: Default::default(),
        fields: Default::default(),
        vmi: None,
        vm_spec: None,
        hotplugged: None,
        hotplug_phase: None,
        export_of: None,
        export_state: None,
        no_host_volumes: false,
        loop_devices: None,
        within: BOUND,
    }
}

fn fault() -> Fault {
    Fault {
        set: None,
        clear: false,
        stop_vm: None,
        start_vm: None,
        rbac: None,
        drop_watches: false,
        move_share_of: None,
        kill_and_restart: None,
        change_host_address: None,
    }
}

fn delete_pod(pod: &str, wait: bool) -> Step {
    Step::Delete(Delete { pod: Some(pod.into()), pvc: None, snapshot: None, namespace: "default".into(), wait })
}

fn claim_object(name: &str, kind: Kind, size_mi: u64, snapshot: Option<&str>) -> Value {
    let mode = if kind == Kind::Block { "Block" } else { "Filesystem" };
    let access = if kind == Kind::Rwx { "ReadWriteMany" } else { "ReadWriteOnce" };
    let mut spec = json!({
        "storageClassName": kind.class(),
        "volumeMode": mode,
        "accessModes": [access],
        "resources": {"requests": {"storage": format!("{size_mi}Mi")}},
    });
    if let Some(s) = snapshot {
        spec["dataSource"] = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": s});
    }
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn guest_classes() -> Vec<Value> {
    vec![
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "harvester"},
               "provisioner": "driver.harvesterhci.io", "allowVolumeExpansion": true}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "harvester-xfs"},
               "provisioner": "driver.harvesterhci.io", "allowVolumeExpansion": true,
               "parameters": {"csi.storage.k8s.io/fstype": "xfs"}}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "harvester-rwx"},
               "provisioner": "driver.harvesterhci.io", "parameters": {"hostStorageClass": "longhorn-rwx"}}),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
               "metadata": {"name": "harvester-snapshot", "annotations": {"snapshot.storage.kubernetes.io/is-default-class": "true"}},
               "driver": "driver.harvesterhci.io", "deletionPolicy": "Delete"}),
    ]
}

/// The scenario of a seed. Pure: the same seed gives the same scenario.
pub fn scenario(seed: u64) -> Scenario {
    let mut g = Gen {
        rng: Rng::new(seed),
        vms: Vec::new(),
        steps: Vec::new(),
        claims: Vec::new(),
        counter: 0,
        errors_for: None,
    };
    let vm_count = g.rng.range(2, 3);
    g.vms = (1..=vm_count).map(|i| format!("guest-{i}")).collect();
    // A slower hotplug widens the window a kill can land in.
    let hotplug_ms = *g.rng.pick(&[400u64, 800, 1500]);
    let unplug_ms = *g.rng.pick(&[200u64, 600]);
    let mut guest = guest_classes();
    g.steps.push(Step::NeverDoubleAttached(true));

    let kinds = [Kind::Fs { xfs: false }, Kind::Fs { xfs: true }, Kind::Block, Kind::Rwx];
    for _ in 0..g.rng.range(1, 3) {
        let kind = *g.rng.pick(&kinds);
        let name = g.name(kind.prefix());
        guest.push(claim_object(&name, kind, kind.initial_mi(), None));
        g.claims.push(Claim {
            name,
            kind,
            size_mi: kind.initial_mi(),
            pods: Vec::new(),
            data: Vec::new(),
            used_slots: Vec::new(),
        });
    }
    for i in 0..g.claims.len() {
        let claim = g.claims[i].name.clone();
        g.steps.push(within(Expect { pvc: Some(claim), phase: Some("Bound".into()), ..expect() }));
    }
    for i in 0..g.claims.len() {
        let vm = g.rng.pick(&g.vms).clone();
        g.start_pod(i, &vm);
        g.write(i);
    }
    for _ in 0..g.rng.range(3, 8) {
        if g.rng.chance(40) {
            g.random_fault();
        }
        let i = g.rng.below(g.claims.len() as u64) as usize;
        g.random_action(i);
        if let Some(n) = g.errors_for.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.clear_errors();
            }
        }
    }
    if g.errors_for.is_some() {
        g.clear_errors();
    }
    // Every checksum, once more at the end.
    for i in 0..g.claims.len() {
        g.read_all(i);
    }
    g.cleanup();
    Scenario {
        name: format!("chaos-seed-{seed}"),
        proves: format!(
            "Seed {seed} of `scenarios chaos`: a random volume workflow with faults injected at random points \
             converges within {}s per operation, never attaches an RWO volume to two VMs, keeps every checksum \
             and leaves nothing behind.",
            BOUND.as_secs()
        ),
        world: World {
            profile: PROFILE.into(),
            vms: g.vms.iter().map(|v| crate::model::VmSpec(json!({"name": v}))).collect(),
            timing: Some(json!({"provisionMs": 100, "hotplugMs": hotplug_ms, "unplugMs": unplug_ms,
                                "snapshotMs": 200, "expandMs": 100, "exportMs": 200})),
            ..World::default()
        },
        guest,
        upstream_volumes: Vec::new(),
        steps: g.steps,
        timeout: TIMEOUT,
    }
}

impl Gen {
    fn name(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{}", self.counter)
    }

    /// Runs a pod for claim `i` on `vm`; sometimes kills something while it starts.
    fn start_pod(&mut self, i: usize, vm: &str) {
        let pod = self.name("pod");
        let c = &self.claims[i];
        self.steps.push(Step::RunPod(RunPod {
            name: pod.clone(),
            node: vm.into(),
            volumes: vec![PodVolume { pvc: c.name.clone(), path: c.kind.path().into(), readonly: false }],
            namespace: "default".into(),
            security_context: None,
        }));
        if self.rng.chance(30) {
            // Mid-operation: while it is provisioned, attached, staged or published.
            let ms = self.rng.range(0, 15) * 100;
            if ms > 0 {
                self.steps.push(Step::Sleep(Duration::from_millis(ms)));
            }
            self.kill();
        }
        self.steps.push(within(Expect { pod: Some(pod.clone()), phase: Some("Running".into()), ..expect() }));
        self.claims[i].pods.push((pod, vm.into()));
    }

    fn kill(&mut self) {
        let target = match self.rng.below(3) {
            0 => "controller".to_string(),
            1 => format!("node:{}", self.rng.pick(&self.vms)),
            _ => "simulator".to_string(),
        };
        self.steps.push(Step::Fault(Fault { kill_and_restart: Some(target), ..fault() }));
    }

    fn random_fault(&mut self) {
        match self.rng.below(4) {
            0 | 1 => self.kill(),
            2 if self.errors_for.is_none() => {
                let rate = *self.rng.pick(&[0.05, 0.1, 0.15, 0.2]);
                self.steps.push(Step::Fault(Fault {
                    set: Some(json!({"errors": [{"verb": "*", "resource": "*", "rate": rate, "code": 500}]})),
                    ..fault()
                }));
                self.errors_for = Some(self.rng.range(1, 3) as u32);
            }
            _ => self.steps.push(Step::Fault(Fault { drop_watches: true, ..fault() })),
        }
    }

    fn clear_errors(&mut self) {
        self.steps.push(Step::Fault(Fault { clear: true, ..fault() }));
        self.errors_for = None;
    }

    /// New data on claim `i`, through its first pod.
    fn write(&mut self, i: usize) {
        let len = self.rng.range(1, 4) * MI;
        let remember = self.name("d");
        let c = &self.claims[i];
        let pod = c.pods[0].0.clone();
        let (path, offset) = match c.kind {
            Kind::Block => {
                let slots = c.size_mi * MI / SLOT;
                let free: Vec<u64> = (0..slots).filter(|s| !c.used_slots.contains(s)).collect();
                let Some(&slot) = (!free.is_empty()).then(|| self.rng.pick(&free)) else { return };
                self.claims[i].used_slots.push(slot);
                (self.claims[i].kind.path().to_string(), slot * SLOT)
            }
            kind => (format!("{}/{remember}", kind.path()), 0),
        };
        self.steps.push(Step::Write(Write {
            pod,
            path: path.clone(),
            random_bytes: len,
            remember: remember.clone(),
            offset,
        }));
        self.claims[i].data.push(Datum { remember, path, offset, len });
    }

    /// Every checksum of claim `i`, read through each of its pods.
    fn read_all(&mut self, i: usize) {
        let c = &self.claims[i];
        for (pod, _) in &c.pods {
            for d in &c.data {
                self.steps.push(Step::Read(Read {
                    pod: pod.clone(),
                    path: d.path.clone(),
                    checksum: d.remember.clone(),
                    offset: d.offset,
                    length: (c.kind == Kind::Block).then_some(d.len),
                }));
            }
        }
    }

    fn random_action(&mut self, i: usize) {
        let kind = self.claims[i].kind;
        let mut actions = vec!["write", "move"];
        if kind == Kind::Rwx && self.claims[i].pods.len() < self.vms.len() {
            actions.push("reader");
        }
        if kind.can_expand() && self.claims[i].size_mi < 2 * kind.initial_mi() {
            actions.push("expand");
        }
        if kind.can_snapshot() && self.claims.len() < MAX_CLAIMS {
            actions.push("snapshot");
        }
        match *self.rng.pick(&actions) {
            "write" => {
                self.write(i);
                self.read_all(i);
            }
            "move" => self.move_pod(i),
            "reader" => {
                let used: Vec<&String> = self.claims[i].pods.iter().map(|(_, vm)| vm).collect();
                let free: Vec<String> = self.vms.iter().filter(|v| !used.contains(v)).cloned().collect();
                let vm = self.rng.pick(&free).clone();
                self.start_pod(i, &vm);
                self.read_all(i);
            }
            "expand" => self.expand(i),
            _ => self.snapshot_and_restore(i),
        }
    }

    /// A pod of claim `i` moves to a VM none of its pods is on (RWO: its only pod).
    fn move_pod(&mut self, i: usize) {
        let k = self.rng.below(self.claims[i].pods.len() as u64) as usize;
        let (pod, _) = self.claims[i].pods.remove(k);
        let used: Vec<String> = self.claims[i].pods.iter().map(|(_, vm)| vm.clone()).collect();
        let (old_vm, free): (String, Vec<String>) = {
            let old = self.steps.iter().rev().find_map(|s| match s {
                Step::RunPod(p) if p.name == pod => Some(p.node.clone()),
                _ => None,
            });
            let old = old.unwrap_or_default();
            let free = self.vms.iter().filter(|v| **v != old && !used.contains(v)).cloned().collect();
            (old, free)
        };
        // RWX pods may have taken every other VM: then it comes back to its own.
        let vm = if free.is_empty() { old_vm } else { self.rng.pick(&free).clone() };
        // Half the time as a Deployment does: the new pod while the old one terminates.
        let wait = self.rng.chance(50);
        self.steps.push(delete_pod(&pod, wait));
        self.start_pod(i, &vm);
        self.read_all(i);
    }

    fn expand(&mut self, i: usize) {
        let old = self.claims[i].size_mi;
        // xfs keeps a 64 MiB log of the original size: a growth shows in `df` only
        // well past that, so filesystems grow by 128 or 192 MiB, devices by 32 or 64.
        let step = if self.claims[i].kind == Kind::Block { 32 } else { 64 };
        let new = old + self.rng.range(1, 2) * step + if step == 64 { 64 } else { 0 };
        let name = self.claims[i].name.clone();
        self.steps.push(Step::Expand(Expand {
            pvc: name.clone(),
            size: format!("{new}Mi"),
            namespace: "default".into(),
        }));
        if self.rng.chance(30) {
            self.kill();
        }
        self.steps.push(within(Expect { pvc: Some(name), capacity_at_least: Some(format!("{new}Mi")), ..expect() }));
        self.claims[i].size_mi = new;
        match self.claims[i].kind {
            Kind::Block => {
                // Past the old end: only a grown device takes it.
                let slot = old * MI / SLOT;
                let remember = self.name("d");
                let pod = self.claims[i].pods[0].0.clone();
                self.steps.push(Step::Write(Write {
                    pod,
                    path: Kind::Block.path().into(),
                    random_bytes: MI,
                    remember: remember.clone(),
                    offset: slot * SLOT,
                }));
                self.claims[i].used_slots.push(slot);
                self.claims[i].data.push(Datum {
                    remember,
                    path: Kind::Block.path().into(),
                    offset: slot * SLOT,
                    len: MI,
                });
            }
            kind => {
                // The filesystem the pod sees grew too (xfs: online, NodeExpandVolume):
                // past the old device's whole size, less than the new one minus the
                // log and metadata.
                let pod = self.claims[i].pods[0].0.clone();
                self.steps.push(within(Expect {
                    pod: Some(pod),
                    path: Some(kind.path().into()),
                    filesystem_at_least: Some(format!("{}Mi", new - 96)),
                    ..expect()
                }));
            }
        }
        self.read_all(i);
    }

    fn snapshot_and_restore(&mut self, i: usize) {
        let snap = self.name("snap");
        let source = self.claims[i].clone();
        self.steps.push(Step::Snapshot(Snapshot {
            name: snap.clone(),
            pvc: source.name.clone(),
            class_name: None,
            namespace: "default".into(),
        }));
        if self.rng.chance(30) {
            self.kill();
        }
        // The handle and the host object it names are checked too, under an injected
        // error rate as well (seed 152 found that check reading only once).
        let handle_prefix = Some("snapshot-".to_string());
        self.steps.push(within(Expect { snapshot: Some(snap.clone()), handle_prefix, ..expect() }));
        // The source moves on; the restore has what it had at the snapshot.
        if self.rng.chance(50) {
            self.write(i);
        }
        let name = self.name(&format!("{}-restored", source.kind.prefix()));
        self.steps.push(Step::Apply(vec![claim_object(&name, source.kind, source.size_mi, Some(&snap))]));
        self.steps.push(within(Expect { pvc: Some(name.clone()), phase: Some("Bound".into()), ..expect() }));
        self.claims.push(Claim { name, pods: Vec::new(), ..source });
        let restored = self.claims.len() - 1;
        let vm = self.rng.pick(&self.vms).clone();
        self.start_pod(restored, &vm);
        self.read_all(restored);
    }

    /// Pods, claims and snapshots go; nothing may stay plugged or on the host.
    fn cleanup(&mut self) {
        let pods: Vec<String> = self.claims.iter().flat_map(|c| c.pods.iter().map(|(p, _)| p.clone())).collect();
        for p in pods {
            self.steps.push(delete_pod(&p, true));
        }
        for c in &self.claims {
            self.steps.push(Step::Delete(Delete {
                pod: None,
                pvc: Some(c.name.clone()),
                snapshot: None,
                namespace: "default".into(),
                wait: true,
            }));
        }
        let snapshots: Vec<String> = self
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Snapshot(s) => Some(s.name.clone()),
                _ => None,
            })
            .collect();
        for s in snapshots {
            self.steps.push(Step::Delete(Delete {
                pod: None,
                pvc: None,
                snapshot: Some(s),
                namespace: "default".into(),
                wait: true,
            }));
        }
        for vm in self.vms.clone() {
            self.steps.push(Step::ExpectHost(ExpectHost {
                vmi: Some(vm),
                hotplugged: Some(Vec::new()),
                ..expect_host()
            }));
        }
        self.steps.push(Step::ExpectHost(ExpectHost { no_host_volumes: true, ..expect_host() }));
    }
}
