//! The scenario file format. Unknown keys are errors (serde-saphyr reports
//! file, line and column), so a typo never silently changes what is tested.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// One scenario file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// What the scenario proves, in a sentence or two.
    pub proves: String,
    #[serde(default)]
    pub world: World,
    /// Guest objects applied before the steps (StorageClasses, PVCs, …).
    #[serde(default)]
    pub guest: Vec<Value>,
    /// Volumes the upstream (Go) driver provisioned before the switch to this one:
    /// made on both sides as that driver left them, after `guest`, before the steps.
    #[serde(default, rename = "upstreamVolumes")]
    pub upstream_volumes: Vec<UpstreamVolume>,
    pub steps: Vec<Step>,
    /// Fail the whole scenario after this long.
    #[serde(default = "default_timeout", deserialize_with = "duration", serialize_with = "ser_duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(180)
}

/// The Harvester side: passed to `harvester-sim` as its world file, plus the profile.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct World {
    #[serde(default = "default_profile")]
    pub profile: String,
    /// VMs: names, or full world-file VM entries (`{name, hostNode, macs, …}`).
    #[serde(default)]
    pub vms: Vec<VmSpec>,
    /// These sections are passed to the simulator's world file as they are
    /// (its own schema checks them).
    #[serde(default, rename = "hostNodes", skip_serializing_if = "Option::is_none")]
    pub host_nodes: Option<Value>,
    #[serde(default, rename = "storageClasses", skip_serializing_if = "Option::is_none")]
    pub storage_classes: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Value>,
    /// Start node plugins only for these VMs (default: every VM).
    #[serde(default, rename = "nodePlugins")]
    pub node_plugins: Option<Vec<String>>,
    /// Extra driver flags for the controller (e.g. `--host-storage-class=replica-2`).
    #[serde(default, rename = "controllerArgs")]
    pub controller_args: Vec<String>,
    /// Give the driver no guest cluster access.
    #[serde(default, rename = "noGuestAccess")]
    pub no_guest_access: bool,
}

impl Default for World {
    fn default() -> Self {
        Self {
            profile: default_profile(),
            vms: Vec::new(),
            host_nodes: None,
            storage_classes: None,
            settings: None,
            credentials: None,
            timing: None,
            faults: None,
            namespaces: None,
            node_plugins: None,
            controller_args: Vec::new(),
            no_guest_access: false,
        }
    }
}

impl World {
    /// The simulator world file for this scenario.
    pub fn simulator_world(&self) -> serde_json::Map<String, Value> {
        let mut w = serde_json::Map::new();
        for (key, value) in [
            ("hostNodes", &self.host_nodes),
            ("storageClasses", &self.storage_classes),
            ("settings", &self.settings),
            ("credentials", &self.credentials),
            ("timing", &self.timing),
            ("faults", &self.faults),
            ("namespaces", &self.namespaces),
        ] {
            if let Some(v) = value {
                w.insert(key.into(), v.clone());
            }
        }
        if !self.vms.is_empty() {
            w.insert("vms".into(), Value::Array(self.vms.iter().map(|v| v.0.clone()).collect()));
        }
        w
    }
}

fn default_profile() -> String {
    "v1.5".into()
}

#[derive(Debug, Clone, Serialize)]
pub struct VmSpec(pub Value);

impl<'de> Deserialize<'de> for VmSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::String(name) => Ok(VmSpec(serde_json::json!({"name": name}))),
            Value::Object(_) => Ok(VmSpec(v)),
            other => Err(serde::de::Error::custom(format!("a VM is a name or a map, not {other}"))),
        }
    }
}

impl VmSpec {
    pub fn name(&self) -> &str {
        self.0.get("name").and_then(Value::as_str).unwrap_or("")
    }
}

/// A duration written as `500ms`, `10s`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid duration {s:?} (use e.g. 500ms, 10s, 2m)"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration unit in {s:?} (use ms, s or m)")),
    }
}

/// Writes a duration the way `parse_duration` reads it back (`90s`, `1500ms`), so a
/// serialized scenario (`scenarios chaos --write`) loads again unchanged.
pub fn format_duration(d: &Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(d))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

/// A size written as `8Mi`, `1Gi`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return Err(format!("invalid size unit in {s:?} (use Ki, Mi or Gi)")),
    };
    Ok(n * mult)
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = Value::deserialize(d)?;
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| serde::de::Error::custom("size must be positive")),
        Value::String(s) => parse_size(&s).map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!("invalid size {other}"))),
    }
}

/// A volume the upstream driver provisioned (reference §2.1): host PVC named
/// `volume` with its shape (`[ReadWriteMany]`, Block for RWO / Filesystem for RWX,
/// size rounded up to 2 MiB, no labels), a NetworkFilesystem for RWX, and the guest
/// PV/PVC bound to it as its provisioner made them (handle = `volume`, volume
/// attributes = the StorageClass parameters, no topology).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamVolume {
    /// Volume id = host PVC name = guest PV name (`pvc-<uuid>`).
    pub volume: String,
    /// The guest claim bound to it.
    pub claim: String,
    #[serde(default = "default_ns")]
    pub namespace: String,
    /// A guest StorageClass among the `guest` objects.
    #[serde(rename = "storageClass")]
    pub storage_class: String,
    /// `ReadWriteOnce` or `ReadWriteMany`.
    #[serde(rename = "accessMode")]
    pub access_mode: String,
    /// `Filesystem` (default) or `Block`.
    #[serde(default = "filesystem", rename = "volumeMode")]
    pub volume_mode: String,
    pub size: String,
    /// What the upstream node plugin (or, for RWX, Longhorn's share-manager) left on it.
    #[serde(default)]
    pub data: Option<UpstreamData>,
}

fn filesystem() -> String {
    "Filesystem".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamData {
    /// Filesystem volumes: a file at this path in the volume's root.
    #[serde(default)]
    pub path: Option<String>,
    /// Block volumes: where the bytes start on the device.
    #[serde(default, deserialize_with = "opt_size")]
    pub offset: Option<u64>,
    #[serde(deserialize_with = "size", rename = "randomBytes")]
    pub random_bytes: u64,
    /// Name to remember the checksum under (for `read`).
    pub remember: String,
}

impl UpstreamVolume {
    pub fn rwx(&self) -> bool {
        self.access_mode == "ReadWriteMany"
    }
    pub fn block(&self) -> bool {
        self.volume_mode == "Block"
    }

    /// What the file can get wrong, said before anything starts.
    fn check(&self, guest: &[Value]) -> Result<(), String> {
        let v = &self.volume;
        let uuid = v.strip_prefix("pvc-").unwrap_or("");
        let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
        if groups != [8, 4, 4, 4, 12]
            || !uuid.bytes().all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "upstream volume {v:?} is not named pvc-<uuid> as upstream's provisioner names volumes"
            ));
        }
        if !matches!(self.access_mode.as_str(), "ReadWriteOnce" | "ReadWriteMany") {
            return Err(format!("upstream volume {v}: accessMode must be ReadWriteOnce or ReadWriteMany"));
        }
        if !matches!(self.volume_mode.as_str(), "Filesystem" | "Block") {
            return Err(format!("upstream volume {v}: volumeMode must be Filesystem or Block"));
        }
        if self.rwx() && self.block() {
            return Err(format!("upstream volume {v}: upstream has no RWX block volumes"));
        }
        parse_size(&self.size).map_err(|e| format!("upstream volume {v}: {e}"))?;
        let class_defined = guest.iter().any(|o| {
            o.get("kind").and_then(Value::as_str) == Some("StorageClass")
                && o.pointer("/metadata/name").and_then(Value::as_str) == Some(self.storage_class.as_str())
        });
        if !class_defined {
            return Err(format!(
                "upstream volume {v}: storageClass {:?} is not among the guest objects",
                self.storage_class
            ));
        }
        match &self.data {
            Some(d) if self.block() && (d.path.is_some() || d.offset.is_none()) => {
                Err(format!("upstream volume {v}: block data takes an offset, not a path"))
            }
            Some(d) if !self.block() && (d.path.is_none() || d.offset.is_some()) => {
                Err(format!("upstream volume {v}: filesystem data takes a path, not an offset"))
            }
            _ => Ok(()),
        }
    }
}

/// A pod's use of a PVC.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PodVolume {
    pub pvc: String,
    /// Mount path inside the pod (filesystem volumes) or device path (block).
    pub path: String,
    #[serde(default)]
    pub readonly: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunPod {
    pub name: String,
    /// Guest node = VM name.
    pub node: String,
    pub volumes: Vec<PodVolume>,
    #[serde(default = "default_ns")]
    pub namespace: String,
    /// The pod's `securityContext`: who its container runs as, and its fsGroup.
    #[serde(default, rename = "securityContext")]
    pub security_context: Option<PodSecurity>,
}

/// The subset of a pod's `securityContext` that decides who may write its volumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodSecurity {
    #[serde(default)]
    pub run_as_user: Option<u32>,
    #[serde(default)]
    pub run_as_group: Option<u32>,
    #[serde(default)]
    pub fs_group: Option<u32>,
}

fn default_ns() -> String {
    "default".into()
}

/// Wait until a guest object matches (`within` bounds it).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub pvc: Option<String>,
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub snapshot: Option<String>,
    #[serde(default = "default_ns")]
    pub namespace: String,
    /// PVC/Pod phase (`Bound`, `Pending`, `Running`), or `readyToUse` for snapshots.
    #[serde(default)]
    pub phase: Option<String>,
    /// A Warning event on the object whose message contains this text.
    #[serde(default)]
    pub event: Option<String>,
    /// PVC capacity at least this size.
    #[serde(default, rename = "capacityAtLeast")]
    pub capacity_at_least: Option<String>,
    /// With `pod` and `path`: the filesystem the pod sees at `path` is at least this big
    /// (what NodeExpandVolume grew).
    #[serde(default, rename = "filesystemAtLeast")]
    pub filesystem_at_least: Option<String>,
    /// A path in the pod (for `filesystemAtLeast`).
    #[serde(default)]
    pub path: Option<String>,
    /// A ready snapshot's CSI handle starts with this (`backup:` for remote backups),
    /// and the host object it names exists.
    #[serde(default, rename = "handlePrefix")]
    pub handle_prefix: Option<String>,
    #[serde(default = "default_within", deserialize_with = "duration", serialize_with = "ser_duration")]
    pub within: Duration,
}

fn default_within() -> Duration {
    Duration::from_secs(30)
}

/// Expectations on the Harvester host.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectHost {
    /// The host PVC of a guest PVC: its labels/annotations must include these.
    #[serde(default, rename = "pvcOf")]
    pub pvc_of: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Host PVC field checks (`spec.volumeMode: Block`, `spec.storageClassName: replica-2`).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// A VM whose hot-plugged volumes (guest PVC names) must be exactly these.
    #[serde(default)]
    pub vmi: Option<String>,
    /// Like `vmi`, for the VM's spec (what it will boot with) instead of the running instance.
    #[serde(default, rename = "vmSpec")]
    pub vm_spec: Option<String>,
    #[serde(default)]
    pub hotplugged: Option<Vec<String>>,
    /// With `hotplugged`: every listed volume's VMI phase must be this one (e.g.
    /// `AttachedToNode`, to act while a hotplug is still under way).
    #[serde(default, rename = "hotplugPhase")]
    pub hotplug_phase: Option<String>,
    /// The NetworkFilesystem of a guest RWX PVC must be in this state (`Enabled`, `Disabled`, `absent`).
    #[serde(default, rename = "exportOf")]
    pub export_of: Option<String>,
    #[serde(default, rename = "exportState")]
    pub export_state: Option<String>,
    /// No host volume of this guest cluster is left (after deleting every claim).
    #[serde(default, rename = "noHostVolumes")]
    pub no_host_volumes: bool,
    /// Number of loop devices backing the volume (0 after detach).
    #[serde(default, rename = "loopDevices")]
    pub loop_devices: Option<usize>,
    #[serde(default = "default_within", deserialize_with = "duration", serialize_with = "ser_duration")]
    pub within: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Write {
    pub pod: String,
    /// A path under one of the pod's volume paths.
    pub path: String,
    #[serde(deserialize_with = "size", rename = "randomBytes")]
    pub random_bytes: u64,
    /// Name to remember the checksum under.
    pub remember: String,
    /// For block volumes: byte offset to write at.
    #[serde(default)]
    pub offset: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Read {
    pub pod: String,
    pub path: String,
    /// Remembered checksum the content must have.
    pub checksum: String,
    /// For block volumes: the range to read (offset, length).
    #[serde(default)]
    pub offset: u64,
    #[serde(default, deserialize_with = "opt_size")]
    pub length: Option<u64>,
}

fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v: Option<Value> = Option::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_u64()),
        Some(Value::String(s)) => parse_size(&s).map(Some).map_err(serde::de::Error::custom),
        Some(other) => Err(serde::de::Error::custom(format!("invalid size {other}"))),
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Delete {
    #[serde(default)]
    pub pod: Option<String>,
    #[serde(default)]
    pub pvc: Option<String>,
    #[serde(default)]
    pub snapshot: Option<String>,
    #[serde(default = "default_ns")]
    pub namespace: String,
    /// For pods: wait until the pod is gone (unpublished, unstaged), as `kubectl delete`
    /// does. `false` moves on while it terminates, as a Deployment's replacement does.
    #[serde(default = "yes")]
    pub wait: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expand {
    pub pvc: String,
    pub size: String,
    #[serde(default = "default_ns")]
    pub namespace: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub name: String,
    pub pvc: String,
    #[serde(default, rename = "className")]
    pub class_name: Option<String>,
    #[serde(default = "default_ns")]
    pub namespace: String,
}

/// Changes to the world while running.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Replace the simulator's faults (the world file's `faults` shape).
    #[serde(default)]
    pub set: Option<Value>,
    #[serde(default)]
    pub clear: bool,
    #[serde(default, rename = "stopVm")]
    pub stop_vm: Option<String>,
    #[serde(default, rename = "startVm")]
    pub start_vm: Option<String>,
    /// Apply another release's guest RBAC (e.g. `v1.4`).
    #[serde(default)]
    pub rbac: Option<String>,
    #[serde(default, rename = "dropWatches")]
    pub drop_watches: bool,
    #[serde(default, rename = "moveShareOf")]
    pub move_share_of: Option<String>,
    /// `controller`, `node:<vm>` or `simulator`: kill -9 then start again.
    #[serde(default, rename = "killAndRestart")]
    pub kill_and_restart: Option<String>,
    /// The driver's cloud-config names the host by this address from now on (same
    /// port, same cluster): e.g. `localhost` for an IP-to-DNS switch. Processes
    /// read it when they (re)start.
    #[serde(default, rename = "changeHostAddress")]
    pub change_host_address: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InFlight {
    /// The kubelet call: `stage`.
    pub phase: InFlightPhase,
    pub node: String,
    #[serde(default = "default_within", deserialize_with = "duration", serialize_with = "ser_duration")]
    pub within: Duration,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum InFlightPhase {
    Stage,
}

impl std::fmt::Display for InFlightPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InFlightPhase::Stage => "stage",
        })
    }
}

/// Run the driver's orphan report as if the guest cluster were gone.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrphanReport {
    /// Guest claims (`name` in `default`, or `ns/name`) that must be reported as orphans.
    #[serde(default)]
    pub orphans: Vec<String>,
    /// Guest claims that must be reported as attached (not orphans).
    #[serde(default, rename = "inUse")]
    pub in_use: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    /// Apply guest objects.
    Apply(Vec<Value>),
    Delete(Delete),
    RunPod(RunPod),
    Expect(Expect),
    ExpectHost(ExpectHost),
    Write(Write),
    Read(Read),
    Expand(Expand),
    Snapshot(Snapshot),
    Fault(Fault),
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    Sleep(Duration),
    /// Assert that no volume is ever attached to two VMs until the end.
    NeverDoubleAttached(bool),
    OrphanReport(OrphanReport),
    /// Wait until the kubelet has a call of this phase under way on a node, to act mid-call.
    InFlight(InFlight),
    /// From now on, the scenario fails if this VM's spec lists a hot-plugged volume
    /// (a disk plugged into a stopped or fenced VM).
    NeverPluggedInto(String),
    /// No call of this phase (`attach`, `stage`, ...) has failed so far.
    NoFailed(String),
}

impl Step {
    pub fn label(&self) -> String {
        match self {
            Step::Apply(v) => format!("apply {} object(s)", v.len()),
            Step::Delete(d) => {
                format!("delete {}", d.pod.as_deref().or(d.pvc.as_deref()).or(d.snapshot.as_deref()).unwrap_or("?"))
            }
            Step::RunPod(p) => format!("run pod {} on {}", p.name, p.node),
            Step::Expect(e) => {
                format!("expect {}", e.pvc.as_deref().or(e.pod.as_deref()).or(e.snapshot.as_deref()).unwrap_or("?"))
            }
            Step::ExpectHost(_) => "expect host".into(),
            Step::Write(w) => format!("write {}:{}", w.pod, w.path),
            Step::Read(r) => format!("read {}:{}", r.pod, r.path),
            Step::Expand(e) => format!("expand {} to {}", e.pvc, e.size),
            Step::Snapshot(s) => format!("snapshot {} of {}", s.name, s.pvc),
            Step::Fault(_) => "fault".into(),
            Step::Sleep(d) => format!("sleep {d:?}"),
            Step::NeverDoubleAttached(_) => "watch for double attachment".into(),
            Step::OrphanReport(_) => "orphan report".into(),
            Step::InFlight(f) => format!("wait for {} in flight on {}", f.phase, f.node),
            Step::NeverPluggedInto(vm) => format!("watch that nothing is plugged into {vm}"),
            Step::NoFailed(phase) => format!("no failed {phase} call"),
        }
    }
}

/// Parses and checks a scenario; errors name the file, line and field.
pub fn load(text: &str, origin: &str) -> Result<Scenario, String> {
    let s: Scenario = serde_saphyr::from_str(text).map_err(|e| format!("{origin}: {e}"))?;
    if s.name.trim().is_empty() {
        return Err(format!("{origin}: name must not be empty"));
    }
    if s.steps.is_empty() {
        return Err(format!("{origin}: a scenario needs at least one step"));
    }
    check_world(&s.world, text, origin)?;
    for u in &s.upstream_volumes {
        u.check(&s.guest).map_err(|e| format!("{origin}: {e}"))?;
    }
    let vms: Vec<&str> = s.world.vms.iter().map(VmSpec::name).collect();
    for (i, step) in s.steps.iter().enumerate() {
        if let Step::RunPod(p) = step {
            if !vms.is_empty() && !vms.contains(&p.node.as_str()) {
                return Err(format!(
                    "{origin}: step {} runs pod {} on node {:?}, which is not one of the world's VMs ({})",
                    i + 1,
                    p.name,
                    p.node,
                    vms.join(", ")
                ));
            }
        }
    }
    Ok(s)
}

/// The world is the simulator's to understand: check it with the simulator's own
/// schema and rules now, not when the scenario starts.
fn check_world(world: &World, text: &str, origin: &str) -> Result<(), String> {
    let at = text
        .lines()
        .position(|l| l.starts_with("world:"))
        .map(|i| format!("{origin}, line {} (world)", i + 1))
        .unwrap_or_else(|| format!("{origin} (world)"));
    harvester_simulator::profiles::lookup(&world.profile).map_err(|_| {
        format!(
            "{at}: profile {:?} is not a Harvester release the simulator plays (one of: {})",
            world.profile,
            harvester_simulator::profiles::known_names()
        )
    })?;
    let sim_world = Value::Object(world.simulator_world());
    harvester_simulator::world::World::from_value(sim_world, &at).map_err(|e| match e {
        harvester_simulator::world::WorldError::Parse { message, .. }
        | harvester_simulator::world::WorldError::Invalid { message, .. } => format!("{at}: {message}"),
        other => format!("{at}: {other}"),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name: t
proves: something
world:
  profile: v1.3
  vms: [guest-1, {name: guest-2, hostNode: harvester-2}]
  timing: {hotplugMs: 200}
guest:
  - {apiVersion: v1, kind: PersistentVolumeClaim, metadata: {name: data}, spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 64Mi}}}}
steps:
  - expect: {pvc: data, phase: Bound, within: 10s}
  - runPod: {name: w, node: guest-1, volumes: [{pvc: data, path: /data}]}
  - write: {pod: w, path: /data/f, randomBytes: 1Mi, remember: c1}
  - sleep: 200ms
"#;

    #[test]
    fn parses_a_scenario() {
        let s = load(OK, "t.yaml").unwrap();
        assert_eq!(s.world.profile, "v1.3");
        assert_eq!(s.world.vms[1].name(), "guest-2");
        assert!(s.world.timing.is_some());
        assert_eq!(s.steps.len(), 4);
        assert!(matches!(&s.steps[2], Step::Write(w) if w.random_bytes == 1 << 20));
    }

    #[test]
    fn typos_name_the_line_and_field() {
        let bad = OK.replace("randomBytes", "randomBites");
        let e = load(&bad, "t.yaml").unwrap_err();
        assert!(e.contains("t.yaml") && e.contains("randomBites"), "{e}");
        let bad_node = OK.replace("node: guest-1", "node: guest-9");
        assert!(load(&bad_node, "t.yaml").unwrap_err().contains("guest-9"));
    }

    #[test]
    fn the_world_is_checked_by_the_simulators_rules() {
        let e = load(&OK.replace("profile: v1.3", "profile: v1.9"), "t.yaml").unwrap_err();
        assert!(e.contains("t.yaml, line 4 (world)") && e.contains("v1.9") && e.contains("v1.8"), "{e}");
        let e = load(&OK.replace("hotplugMs", "hotplugMS"), "t.yaml").unwrap_err();
        assert!(e.contains("line 4") && e.contains("hotplugMS"), "{e}");
        let e = load(&OK.replace("hostNode: harvester-2", "hostNode: harvester-9"), "t.yaml").unwrap_err();
        assert!(e.contains("harvester-9"), "{e}");
    }

    const UPSTREAM: &str = r#"
name: u
proves: something
guest:
  - {apiVersion: storage.k8s.io/v1, kind: StorageClass, metadata: {name: harvester}, provisioner: driver.harvesterhci.io}
upstreamVolumes:
  - {volume: pvc-6f1d0c2a-7e3b-4c55-9a10-2b8e4f0d1a01, claim: data, storageClass: harvester, accessMode: ReadWriteOnce, size: 63Mi,
     data: {path: /blob, randomBytes: 1Mi, remember: c}}
  - {volume: pvc-6f1d0c2a-7e3b-4c55-9a10-2b8e4f0d1a02, claim: raw, storageClass: harvester, accessMode: ReadWriteOnce, volumeMode: Block, size: 32Mi,
     data: {offset: 1Mi, randomBytes: 1Mi, remember: b}}
steps:
  - sleep: 1s
"#;

    #[test]
    fn upstream_volumes_parse() {
        let s = load(UPSTREAM, "u.yaml").unwrap();
        assert_eq!(s.upstream_volumes.len(), 2);
        assert!(!s.upstream_volumes[0].block() && s.upstream_volumes[1].block());
        assert_eq!(s.upstream_volumes[1].data.as_ref().and_then(|d| d.offset), Some(1 << 20));
    }

    #[test]
    fn upstream_volumes_are_checked_before_anything_starts() {
        for (from, to, said) in [
            ("pvc-6f1d0c2a-7e3b-4c55-9a10-2b8e4f0d1a01", "pvc-data", "pvc-<uuid>"),
            (
                "storageClass: harvester, accessMode: ReadWriteOnce, size: 63Mi",
                "storageClass: other, accessMode: ReadWriteOnce, size: 63Mi",
                "not among the guest objects",
            ),
            (
                "accessMode: ReadWriteOnce, volumeMode: Block",
                "accessMode: ReadWriteMany, volumeMode: Block",
                "no RWX block",
            ),
            ("offset: 1Mi", "path: /x", "block data takes an offset"),
            ("path: /blob", "offset: 0", "filesystem data takes a path"),
            ("size: 63Mi", "size: 63MB", "invalid size"),
            ("accessMode: ReadWriteOnce, size: 63Mi", "accessMode: ReadWriteOncePod, size: 63Mi", "accessMode must be"),
        ] {
            let e = load(&UPSTREAM.replacen(from, to, 1), "u.yaml").expect_err(said);
            assert!(e.contains("u.yaml") && e.contains(said), "{e}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("8Mi").unwrap(), 8 << 20);
        assert_eq!(parse_duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert!(parse_size("8MB").is_err());
    }
}
