//! The Node service's RPCs against a fake mounter and a fake host: every
//! stage/publish/expand path, including retries, read-only and refusals,
//! without root, devices or a Harvester. Device files and kubelet directories
//! are real (in a temporary directory), so by-id links and targets behave as
//! on a node; what a mount or mkfs would do is the fake's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use csi::volume_capability::access_mode::Mode;
use csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use csi_proto::csi::v1 as csi;
use csi_proto::Node as _;
use rstest::rstest;
use tokio::time::Instant;
use tonic::{Code, Request};

use super::{NodeHost, NodeService};
use crate::contexts::publish as ctx;
use crate::error::{Error, Result};
use crate::guard::VolumeLocks;
use crate::host::nfs::Export;
use crate::metrics::Metrics;
use crate::mount::fake::{Counts, FakeMounter};

const VOLUME: &str = "pvc-0a1b2c3d";
const GIB: u64 = 1 << 30;

/// The host as the node sees it: which volumes are Ready in this VM, and the exports.
#[derive(Default)]
struct FakeHost {
    attached: Mutex<HashSet<String>>,
    exports: Mutex<HashMap<String, Export>>,
    host_pvs: Mutex<HashMap<String, String>>,
}

impl NodeHost for Arc<FakeHost> {
    async fn wait_attached(&self, vm: &str, volume: &str, _deadline: Instant) -> Result<()> {
        if self.attached.lock().expect("lock").contains(volume) {
            Ok(())
        } else {
            Err(Error::DeadlineExceeded(format!("timed out waiting for volume {volume} to become Ready in VM {vm}")))
        }
    }

    async fn host_pv_of(&self, volume: &str) -> Result<Option<String>> {
        Ok(self.host_pvs.lock().expect("lock").get(volume).cloned())
    }

    async fn wait_export_ready(&self, pv: &str, _deadline: Instant) -> Result<Export> {
        let export = self.exports.lock().expect("lock").get(pv).cloned();
        export.filter(|e| e.ready).ok_or_else(|| Error::DeadlineExceeded(format!("timed out waiting for export {pv}")))
    }
}

struct Node {
    dir: tempfile::TempDir,
    host: Arc<FakeHost>,
    mounter: Arc<FakeMounter>,
    service: NodeService<FakeMounter, Arc<FakeHost>>,
}

fn node() -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("dev/disk/by-id")).expect("by-id dir");
    let host = Arc::new(FakeHost::default());
    let mounter = Arc::new(FakeMounter::new());
    let service = NodeService {
        node_id: "guest-1".into(),
        root,
        kubelet_root: super::KubeletRoot::new(dir.path().join("kubelet")),
        host: host.clone(),
        mounter: mounter.clone(),
        locks: VolumeLocks::default(),
        metrics: Arc::new(Metrics::default()),
        max_volumes_per_node: 8,
        topology: BTreeMap::new(),
        // A missing device is waited for this long.
        timeout: Duration::from_millis(300),
    };
    Node { dir, host, mounter, service }
}

fn by_id_of(volume: &str) -> String {
    format!("scsi-0QEMU_QEMU_HARDDISK_{volume}")
}

impl Node {
    /// A hot-plugged disk of `size` bytes, Ready on the host, its by-id link in the VM root.
    fn disk(&self, volume: &str, size: u64, signature: Option<&str>) -> PathBuf {
        let devices = self.dir.path().join("devices");
        std::fs::create_dir_all(&devices).expect("devices dir");
        let device = devices.join(volume);
        std::fs::write(&device, b"").expect("device file");
        let link = self.service.root.join("dev/disk/by-id").join(by_id_of(volume));
        std::os::unix::fs::symlink(&device, link).expect("by-id link");
        self.mounter.add_device(&device, size, signature);
        self.host.attached.lock().expect("lock").insert(volume.into());
        device
    }

    fn export(&self, volume: &str, pv: &str, endpoint: &str) {
        self.host.host_pvs.lock().expect("lock").insert(volume.into(), pv.into());
        self.host.exports.lock().expect("lock").insert(
            pv.into(),
            Export {
                endpoint: endpoint.into(),
                path: format!("/{pv}"),
                options: "vers=4".into(),
                ready: true,
                desired_enabled: true,
            },
        );
    }

    /// Kubelet's staging path (it creates the parent; the driver the directory).
    fn staging(&self, volume: &str) -> PathBuf {
        let p = self.dir.path().join("kubelet/plugins/kubernetes.io/csi/driver.harvesterhci.io").join(volume);
        std::fs::create_dir_all(&p).expect("staging parent");
        p.join("globalmount")
    }

    /// Kubelet's publish path for a pod (parent created as the kubelet does).
    fn target(&self, volume: &str, pod: &str) -> PathBuf {
        let p = self.dir.path().join("kubelet/pods").join(pod).join("volumes/kubernetes.io~csi").join(volume);
        std::fs::create_dir_all(&p).expect("target parent");
        p.join("mount")
    }

    async fn stage(&self, req: csi::NodeStageVolumeRequest) -> std::result::Result<(), tonic::Status> {
        self.service.node_stage_volume(Request::new(req)).await.map(|_| ())
    }

    async fn unstage(&self, volume: &str, staging: &Path) -> std::result::Result<(), tonic::Status> {
        let req = csi::NodeUnstageVolumeRequest {
            volume_id: volume.into(),
            staging_target_path: staging.display().to_string(),
        };
        self.service.node_unstage_volume(Request::new(req)).await.map(|_| ())
    }

    async fn publish(&self, req: csi::NodePublishVolumeRequest) -> std::result::Result<(), tonic::Status> {
        self.service.node_publish_volume(Request::new(req)).await.map(|_| ())
    }

    async fn unpublish(&self, volume: &str, target: &str) -> std::result::Result<(), tonic::Status> {
        let req = csi::NodeUnpublishVolumeRequest { volume_id: volume.into(), target_path: target.into() };
        self.service.node_unpublish_volume(Request::new(req)).await.map(|_| ())
    }

    async fn expand(&self, volume: &str, path: &Path) -> std::result::Result<i64, tonic::Status> {
        let req = csi::NodeExpandVolumeRequest {
            volume_id: volume.into(),
            volume_path: path.display().to_string(),
            ..Default::default()
        };
        self.service.node_expand_volume(Request::new(req)).await.map(|r| r.into_inner().capacity_bytes)
    }

    /// A filesystem volume staged and ready to publish.
    async fn staged(&self, fs: &str) -> PathBuf {
        self.disk(VOLUME, GIB, None);
        let staging = self.staging(VOLUME);
        self.stage(stage_req(&staging, mount_cap(Mode::SingleNodeWriter, fs), GIB)).await.expect("stage");
        staging
    }
}

fn mount_cap(mode: Mode, fs: &str) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume { fs_type: fs.into(), ..Default::default() })),
    }
}

fn block_cap(mode: Mode) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    }
}

fn disk_context(size: u64) -> HashMap<String, String> {
    HashMap::from([
        (ctx::BY_ID.to_string(), by_id_of(VOLUME)),
        (ctx::SIZE.to_string(), size.to_string()),
        (ctx::SHARED.to_string(), "false".to_string()),
    ])
}

fn stage_req(staging: &Path, cap: csi::VolumeCapability, size: u64) -> csi::NodeStageVolumeRequest {
    csi::NodeStageVolumeRequest {
        volume_id: VOLUME.into(),
        publish_context: disk_context(size),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap),
        ..Default::default()
    }
}

fn publish_req(
    staging: &Path,
    target: &Path,
    cap: csi::VolumeCapability,
    readonly: bool,
) -> csi::NodePublishVolumeRequest {
    csi::NodePublishVolumeRequest {
        volume_id: VOLUME.into(),
        publish_context: disk_context(GIB),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap),
        readonly,
        ..Default::default()
    }
}

fn code(r: std::result::Result<(), tonic::Status>) -> Code {
    match r {
        Ok(()) => Code::Ok,
        Err(s) => s.code(),
    }
}

// ---------------------------------------------------------------- NodeStage

type StageEdit = fn(&mut csi::NodeStageVolumeRequest);

#[rstest]
#[case::no_volume_id(|r: &mut csi::NodeStageVolumeRequest| r.volume_id.clear())]
#[case::malformed_volume_id(|r: &mut csi::NodeStageVolumeRequest| r.volume_id = "PVC_Upper".into())]
#[case::no_staging_path(|r: &mut csi::NodeStageVolumeRequest| r.staging_target_path.clear())]
#[case::relative_staging_path(|r: &mut csi::NodeStageVolumeRequest| r.staging_target_path = "staging/x".into())]
#[case::dot_dot_in_staging_path(|r: &mut csi::NodeStageVolumeRequest| r.staging_target_path = "/var/lib/kubelet/../../etc".into())]
#[case::no_capability(|r: &mut csi::NodeStageVolumeRequest| r.volume_capability = None)]
#[case::capability_without_access_type(|r: &mut csi::NodeStageVolumeRequest| {
    r.volume_capability.as_mut().expect("cap").access_type = None
})]
#[case::unsupported_fs(|r: &mut csi::NodeStageVolumeRequest| {
    r.volume_capability = Some(mount_cap(Mode::SingleNodeWriter, "ntfs"))
})]
#[case::multi_node_block(|r: &mut csi::NodeStageVolumeRequest| {
    r.volume_capability = Some(block_cap(Mode::MultiNodeMultiWriter))
})]
#[case::rwx_capability_on_a_disk(|r: &mut csi::NodeStageVolumeRequest| {
    r.volume_capability = Some(mount_cap(Mode::MultiNodeMultiWriter, ""))
})]
#[case::no_device_name(|r: &mut csi::NodeStageVolumeRequest| { r.publish_context.remove(ctx::BY_ID); })]
#[case::device_name_with_a_slash(|r: &mut csi::NodeStageVolumeRequest| {
    r.publish_context.insert(ctx::BY_ID.into(), "../../../etc/passwd".into());
})]
#[case::hidden_device_name(|r: &mut csi::NodeStageVolumeRequest| {
    r.publish_context.insert(ctx::BY_ID.into(), ".hidden".into());
})]
#[tokio::test]
async fn stage_refuses_bad_requests_with_invalid_argument(#[case] edit: StageEdit) {
    let n = node();
    n.disk(VOLUME, GIB, None);
    let mut req = stage_req(&n.staging(VOLUME), mount_cap(Mode::SingleNodeWriter, ""), GIB);
    edit(&mut req);
    assert_eq!(code(n.stage(req).await), Code::InvalidArgument);
    assert_eq!(n.mounter.counts(), Counts::default(), "nothing formatted or mounted");
}

/// What staging a filesystem volume does with what the device holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// Formatted with this filesystem, then mounted.
    Formatted(&'static str),
    /// The filesystem found is kept (checked, mounted, never formatted).
    Kept(&'static str),
    /// Refused with this code; the device keeps what it held, nothing mounted.
    Refused(Code),
}

#[rstest]
#[case::blank_defaults_to_ext4(None, "", Outcome::Formatted("ext4"))]
#[case::blank_as_xfs(None, "xfs", Outcome::Formatted("xfs"))]
#[case::blank_as_btrfs_any_case(None, "BTRFS", Outcome::Formatted("btrfs"))]
#[case::ext4_kept(Some("ext4"), "", Outcome::Kept("ext4"))]
#[case::ext4_kept_when_asked_for(Some("ext4"), "ext4", Outcome::Kept("ext4"))]
#[case::xfs_kept_any_case(Some("xfs"), "XFS", Outcome::Kept("xfs"))]
#[case::ext4_never_reformatted_as_xfs(Some("ext4"), "xfs", Outcome::Refused(Code::FailedPrecondition))]
#[case::xfs_never_reformatted_as_default_ext4(Some("xfs"), "", Outcome::Refused(Code::FailedPrecondition))]
#[case::encrypted_device_untouched(Some("crypto_LUKS"), "ext4", Outcome::Refused(Code::FailedPrecondition))]
#[case::partitioned_device_untouched(Some("partition-table"), "", Outcome::Refused(Code::FailedPrecondition))]
#[case::unknown_signature_untouched(Some("unknown"), "", Outcome::Refused(Code::FailedPrecondition))]
#[tokio::test]
async fn stage_formats_only_blank_devices(
    #[case] holds: Option<&'static str>,
    #[case] fs: &str,
    #[case] outcome: Outcome,
) {
    let n = node();
    let device = n.disk(VOLUME, GIB, holds);
    let staging = n.staging(VOLUME);
    let req = stage_req(&staging, mount_cap(Mode::SingleNodeWriter, fs), GIB);
    let first = n.stage(req.clone()).await;
    match outcome {
        Outcome::Formatted(made) | Outcome::Kept(made) => {
            first.expect("stage");
            let formatted = usize::from(matches!(outcome, Outcome::Formatted(_)));
            assert_eq!(n.mounter.signature(&device).as_deref(), Some(made));
            let mounts = n.mounter.mounts_at(&staging);
            assert_eq!(mounts.len(), 1, "{mounts:?}");
            assert_eq!(mounts[0].fs_type, made);
            assert_eq!(n.mounter.counts().formats, formatted);
            // The kubelet retries stage after a lost answer: nothing happens twice.
            n.stage(req).await.expect("repeated stage");
            assert_eq!(n.mounter.mounts_at(&staging).len(), 1, "no stacked mount");
            assert_eq!(n.mounter.counts().formats, formatted, "no second format");
        }
        Outcome::Refused(c) => {
            assert_eq!(code(first), c);
            assert_eq!(n.mounter.signature(&device).as_deref(), holds, "device left as it was");
            assert!(n.mounter.mounts_at(&staging).is_empty());
            assert_eq!(n.mounter.counts().formats, 0);
        }
    }
}

#[rstest]
#[case::xfs_gets_nouuid("xfs", &[], &["rw", "nouuid"])]
#[case::xfs_keeps_the_class_flags("xfs", &["noatime"], &["rw", "noatime", "nouuid"])]
#[case::xfs_nouuid_once("xfs", &["nouuid"], &["rw", "nouuid"])]
#[case::ext4_as_asked("ext4", &["noatime"], &["rw", "noatime"])]
#[tokio::test]
async fn stage_mounts_xfs_with_nouuid_so_a_restore_mounts_beside_its_source(
    #[case] fs: &str,
    #[case] flags: &[&str],
    #[case] want: &[&str],
) {
    let n = node();
    n.disk(VOLUME, GIB, Some(fs));
    let staging = n.staging(VOLUME);
    let mut cap = mount_cap(Mode::SingleNodeWriter, fs);
    if let Some(AccessType::Mount(m)) = cap.access_type.as_mut() {
        m.mount_flags = flags.iter().map(|f| f.to_string()).collect();
    }
    n.stage(stage_req(&staging, cap, GIB)).await.expect("stage");
    let mounts = n.mounter.mounts_at(&staging);
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].options, want.iter().map(|o| o.to_string()).collect::<Vec<_>>());
}

#[tokio::test]
async fn stage_checks_an_existing_filesystem_and_refuses_a_damaged_one() {
    let n = node();
    let device = n.disk(VOLUME, GIB, Some("ext4"));
    n.mounter.mark_corrupt(&device);
    let staging = n.staging(VOLUME);
    let r = n.stage(stage_req(&staging, mount_cap(Mode::SingleNodeWriter, ""), GIB)).await;
    assert_eq!(code(r), Code::FailedPrecondition);
    assert_eq!(n.mounter.counts().checks, 1);
    assert!(n.mounter.mounts_at(&staging).is_empty());
}

#[tokio::test]
async fn stage_refuses_a_staging_path_holding_another_device() {
    let n = node();
    n.disk(VOLUME, GIB, None);
    let other = n.dir.path().join("devices/other");
    std::fs::write(&other, b"").expect("other device");
    n.mounter.add_device(&other, GIB, Some("ext4"));
    let staging = n.staging(VOLUME);
    std::fs::create_dir_all(&staging).expect("staging dir");
    crate::mount::Mounter::mount(n.mounter.as_ref(), &other, &staging, None, &[]).await.expect("foreign mount");
    let r = n.stage(stage_req(&staging, mount_cap(Mode::SingleNodeWriter, ""), GIB)).await;
    assert_eq!(code(r), Code::FailedPrecondition);
    assert_eq!(n.mounter.counts().formats, 0);
}

#[tokio::test]
async fn stage_refuses_a_device_smaller_than_the_volume() {
    let n = node();
    let device = n.disk(VOLUME, GIB / 2, None);
    let staging = n.staging(VOLUME);
    let r = n.stage(stage_req(&staging, mount_cap(Mode::SingleNodeWriter, ""), GIB)).await;
    assert_eq!(code(r), Code::FailedPrecondition);
    assert_eq!(n.mounter.signature(&device), None, "not formatted");
}

#[tokio::test]
async fn stage_waits_for_the_host_and_then_for_the_device() {
    let n = node();
    let staging = n.staging(VOLUME);
    // Not attached on the host: the host wait's answer is returned.
    let r = n.stage(stage_req(&staging, mount_cap(Mode::SingleNodeWriter, ""), GIB)).await;
    assert_eq!(code(r), Code::DeadlineExceeded);
    // Ready on the host, but the guest never shows the disk: UNAVAILABLE after the deadline.
    n.host.attached.lock().expect("lock").insert(VOLUME.into());
    let r = n.stage(stage_req(&staging, mount_cap(Mode::SingleNodeWriter, ""), GIB)).await;
    assert_eq!(code(r), Code::Unavailable);
}

#[tokio::test]
async fn stage_of_a_block_volume_checks_the_device_and_mounts_nothing() {
    let n = node();
    let device = n.disk(VOLUME, GIB, None);
    let staging = n.staging(VOLUME);
    let req = stage_req(&staging, block_cap(Mode::SingleNodeWriter), GIB);
    n.stage(req.clone()).await.expect("stage");
    n.stage(req).await.expect("repeated stage");
    assert_eq!(n.mounter.counts(), Counts::default());
    assert_eq!(n.mounter.signature(&device), None, "a block volume is never formatted");
}

#[rstest]
#[case::ext4_restored_into_a_larger_claim("ext4", GIB / 2, GIB, 1)]
#[case::xfs_restored_into_a_larger_claim("xfs", GIB / 2, GIB, 1)]
#[case::btrfs_cloned_into_a_larger_claim("btrfs", GIB / 4, GIB, 1)]
#[case::filesystem_fills_the_device("ext4", GIB, GIB, 0)]
#[case::rounding_is_not_growth("xfs", GIB - (512 << 10), GIB, 0)]
#[tokio::test]
async fn stage_grows_a_filesystem_smaller_than_its_device(
    #[case] fs: &'static str,
    #[case] fs_size: u64,
    #[case] device_size: u64,
    #[case] resizes: usize,
) {
    let n = node();
    let device = n.disk(VOLUME, device_size, Some(fs));
    n.mounter.add_device_with_fs(&device, device_size, Some(fs), fs_size);
    let staging = n.staging(VOLUME);
    let req = stage_req(&staging, mount_cap(Mode::SingleNodeWriter, fs), device_size);
    n.stage(req.clone()).await.expect("stage");
    n.stage(req).await.expect("repeated stage");
    assert_eq!(n.mounter.counts().resizes, resizes, "grown once, and only when smaller");
    assert_eq!(n.mounter.counts().formats, 0, "an existing filesystem is grown, never replaced");
    if resizes > 0 {
        assert_eq!(n.mounter.filesystem_size(&device), Some(device_size));
    }
}

#[tokio::test]
async fn a_retried_stage_grows_what_an_interrupted_one_mounted() {
    let n = node();
    let device = n.disk(VOLUME, GIB, Some("xfs"));
    n.mounter.add_device_with_fs(&device, GIB, Some("xfs"), GIB / 2);
    let staging = n.staging(VOLUME);
    std::fs::create_dir_all(&staging).expect("staging dir");
    // The first attempt mounted and then the plugin was killed.
    crate::mount::Mounter::mount(n.mounter.as_ref(), &device, &staging, Some("xfs"), &[]).await.expect("mount");
    n.stage(stage_req(&staging, mount_cap(Mode::SingleNodeWriter, "xfs"), GIB)).await.expect("stage");
    assert_eq!(n.mounter.filesystem_size(&device), Some(GIB));
    assert_eq!(n.mounter.mounts_at(&staging).len(), 1);
}

fn shared_stage_req(staging: &Path, export: Option<&str>) -> csi::NodeStageVolumeRequest {
    let mut publish_context = HashMap::from([(ctx::SHARED.to_string(), "true".to_string())]);
    if let Some(pv) = export {
        publish_context.insert(ctx::EXPORT.into(), pv.into());
    }
    let mut cap = mount_cap(Mode::MultiNodeMultiWriter, "");
    if let Some(AccessType::Mount(m)) = cap.access_type.as_mut() {
        m.mount_flags = vec!["noatime".into()];
    }
    csi::NodeStageVolumeRequest {
        volume_id: VOLUME.into(),
        publish_context,
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap),
        ..Default::default()
    }
}

#[rstest]
#[case::export_named_by_the_controller(Some("pvc-host-1"))]
#[case::export_found_from_the_host_volume(None)]
#[tokio::test]
async fn stage_of_an_export_mounts_it_once(#[case] named: Option<&str>) {
    let n = node();
    n.export(VOLUME, "pvc-host-1", "10.53.0.7");
    let staging = n.staging(VOLUME);
    n.stage(shared_stage_req(&staging, named)).await.expect("stage");
    n.stage(shared_stage_req(&staging, named)).await.expect("repeated stage");
    let mounts = n.mounter.mounts_at(&staging);
    assert_eq!(mounts.len(), 1, "no stacked NFS mounts: {mounts:?}");
    assert_eq!(mounts[0].source, "10.53.0.7:/pvc-host-1");
    assert!(mounts[0].options.iter().any(|o| o == "vers=4") && mounts[0].options.iter().any(|o| o == "noatime"));
}

#[rstest]
#[case::stale_mount(false)]
#[case::share_manager_moved(true)]
#[tokio::test]
async fn stage_of_an_export_replaces_a_stale_or_moved_mount(#[case] moved: bool) {
    let n = node();
    n.export(VOLUME, "pvc-host-1", "10.53.0.7");
    let staging = n.staging(VOLUME);
    n.stage(shared_stage_req(&staging, Some("pvc-host-1"))).await.expect("stage");
    if moved {
        n.export(VOLUME, "pvc-host-1", "10.53.0.9");
    } else {
        n.mounter.mark_stale(&staging);
    }
    n.stage(shared_stage_req(&staging, Some("pvc-host-1"))).await.expect("stage again");
    let mounts = n.mounter.mounts_at(&staging);
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    let endpoint = if moved { "10.53.0.9" } else { "10.53.0.7" };
    assert_eq!(mounts[0].source, format!("{endpoint}:/pvc-host-1"));
    assert!(!crate::mount::Mounter::is_stale(n.mounter.as_ref(), &staging));
}

#[tokio::test]
async fn stage_of_an_export_that_is_not_ready_waits_and_mounts_nothing() {
    let n = node();
    let staging = n.staging(VOLUME);
    let r = n.stage(shared_stage_req(&staging, Some("pvc-host-1"))).await;
    assert_eq!(code(r), Code::DeadlineExceeded);
    let r = n.stage(shared_stage_req(&staging, None)).await;
    assert_eq!(code(r), Code::NotFound, "no host volume behind the claim");
    assert!(n.mounter.mounts_at(&staging).is_empty());
}

#[rstest]
#[case::outside_the_kubelet_root("/tmp/elsewhere/globalmount")]
#[case::the_kubelet_root_itself("")]
#[case::through_a_link_out_of_the_root("escape/globalmount")]
#[tokio::test]
async fn stage_refuses_paths_it_must_not_mount_on(#[case] where_: &str) {
    let n = node();
    n.disk(VOLUME, GIB, None);
    let kubelet = n.dir.path().join("kubelet");
    let outside = n.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::create_dir_all(&kubelet).expect("kubelet root");
    std::os::unix::fs::symlink(&outside, kubelet.join("escape")).expect("link out");
    let staging = match where_ {
        p if p.starts_with('/') => PathBuf::from(p),
        "" => kubelet.clone(),
        rel => kubelet.join(rel),
    };
    let r = n.stage(stage_req(&staging, mount_cap(Mode::SingleNodeWriter, ""), GIB)).await;
    assert_eq!(code(r), Code::InvalidArgument);
    assert_eq!(n.mounter.counts(), Counts::default(), "nothing formatted or mounted");
    assert!(std::fs::read_dir(&outside).expect("outside").next().is_none(), "nothing created outside");
}

#[tokio::test]
async fn publish_refuses_a_target_that_is_a_symlink() {
    let n = node();
    let staging = n.staged("").await;
    let target = n.target(VOLUME, "pod-1");
    std::os::unix::fs::symlink("/etc", &target).expect("link at the target");
    let r = n.publish(publish_req(&staging, &target, mount_cap(Mode::SingleNodeWriter, ""), false)).await;
    assert_eq!(code(r), Code::InvalidArgument);
    assert!(n.mounter.mounts_at(&target).is_empty());
}

#[tokio::test]
async fn a_device_link_to_something_that_is_no_block_device_is_refused() {
    let n = node();
    n.host.attached.lock().expect("lock").insert(VOLUME.into());
    // A by-id name leading to a regular file (or /etc/passwd): never formatted or mounted.
    let file = n.dir.path().join("not-a-device");
    std::fs::write(&file, b"").expect("file");
    std::os::unix::fs::symlink(&file, n.service.root.join("dev/disk/by-id").join(by_id_of(VOLUME))).expect("link");
    let staging = n.staging(VOLUME);
    let r = n.stage(stage_req(&staging, mount_cap(Mode::SingleNodeWriter, ""), GIB)).await;
    assert_eq!(code(r), Code::FailedPrecondition);
    assert_eq!(n.mounter.counts(), Counts::default());
}

// -------------------------------------------------------------- NodeUnstage

#[tokio::test]
async fn unstage_is_idempotent() {
    let n = node();
    let staging = n.staged("").await;
    n.unstage(VOLUME, &staging).await.expect("unstage");
    assert!(n.mounter.mounts_at(&staging).is_empty());
    n.unstage(VOLUME, &staging).await.expect("repeated unstage");
    // A staging directory that never existed is unstaged too.
    n.unstage(VOLUME, &n.dir.path().join("kubelet/never/staged")).await.expect("unstage of nothing");
}

#[rstest]
#[case::no_volume_id("", "/var/lib/kubelet/x", Code::InvalidArgument)]
#[case::no_path(VOLUME, "", Code::InvalidArgument)]
#[case::relative_path(VOLUME, "x/globalmount", Code::InvalidArgument)]
#[tokio::test]
async fn unstage_refuses_bad_requests(#[case] volume: &str, #[case] path: &str, #[case] want: Code) {
    let n = node();
    assert_eq!(code(n.unstage(volume, Path::new(path)).await), want);
}

#[tokio::test]
async fn unstage_of_a_busy_mount_is_retryable_and_keeps_the_mount() {
    let n = node();
    let staging = n.staged("").await;
    n.mounter.mark_busy(&staging);
    assert_eq!(code(n.unstage(VOLUME, &staging).await), Code::Unavailable);
    assert_eq!(n.mounter.mounts_at(&staging).len(), 1);
}

// -------------------------------------------------------------- NodePublish

#[rstest]
#[case::writer(Mode::SingleNodeWriter, false, false)]
#[case::writer_published_readonly(Mode::SingleNodeWriter, true, true)]
#[case::reader_only_mode(Mode::SingleNodeReaderOnly, false, true)]
#[case::single_writer(Mode::SingleNodeSingleWriter, false, false)]
#[case::multi_writer(Mode::SingleNodeMultiWriter, false, false)]
#[tokio::test]
async fn publish_binds_the_staging_mount(#[case] mode: Mode, #[case] readonly: bool, #[case] want_ro: bool) {
    let n = node();
    let staging = n.staged("").await;
    let target = n.target(VOLUME, "pod-1");
    let req = publish_req(&staging, &target, mount_cap(mode, ""), readonly);
    n.publish(req.clone()).await.expect("publish");
    n.publish(req).await.expect("repeated publish");
    let mounts = n.mounter.mounts_at(&target);
    assert_eq!(mounts.len(), 1, "one bind, not stacked: {mounts:?}");
    assert_eq!(mounts[0].is_read_only(), want_ro);
    let stage = &n.mounter.mounts_at(&staging)[0];
    assert_eq!(mounts[0].major_minor, stage.major_minor, "the staged filesystem");
}

#[tokio::test]
async fn publish_refuses_a_foreign_mount_at_the_target() {
    let n = node();
    let staging = n.staged("").await;
    let target = n.target(VOLUME, "pod-1");
    std::fs::create_dir_all(&target).expect("target");
    n.mounter.mount_foreign(&target, "tmpfs");
    let r = n.publish(publish_req(&staging, &target, mount_cap(Mode::SingleNodeWriter, ""), false)).await;
    assert_eq!(code(r), Code::AlreadyExists);
    assert_eq!(n.mounter.mounts_at(&target).len(), 1, "the foreign mount is left alone");
}

#[tokio::test]
async fn publish_refuses_the_same_target_with_another_readonly_setting() {
    let n = node();
    let staging = n.staged("").await;
    let target = n.target(VOLUME, "pod-1");
    let cap = mount_cap(Mode::SingleNodeWriter, "");
    n.publish(publish_req(&staging, &target, cap.clone(), false)).await.expect("publish");
    let r = n.publish(publish_req(&staging, &target, cap, true)).await;
    assert_eq!(code(r), Code::AlreadyExists);
}

#[tokio::test]
async fn publish_of_an_unstaged_volume_is_a_failed_precondition() {
    let n = node();
    n.disk(VOLUME, GIB, None);
    let staging = n.staging(VOLUME);
    let target = n.target(VOLUME, "pod-1");
    let r = n.publish(publish_req(&staging, &target, mount_cap(Mode::SingleNodeWriter, ""), false)).await;
    assert_eq!(code(r), Code::FailedPrecondition);
    assert!(n.mounter.mounts_at(&target).is_empty());
}

#[rstest]
#[case::single_node_single_writer(Mode::SingleNodeSingleWriter, Code::FailedPrecondition)]
#[case::single_node_multi_writer(Mode::SingleNodeMultiWriter, Code::Ok)]
#[case::single_node_writer(Mode::SingleNodeWriter, Code::Ok)]
#[tokio::test]
async fn a_second_target_on_the_node_follows_the_access_mode(#[case] mode: Mode, #[case] want: Code) {
    let n = node();
    let staging = n.staged("").await;
    let cap = mount_cap(mode, "");
    n.publish(publish_req(&staging, &n.target(VOLUME, "pod-1"), cap.clone(), false)).await.expect("first pod");
    let second = n.target(VOLUME, "pod-2");
    assert_eq!(code(n.publish(publish_req(&staging, &second, cap, false)).await), want);
    assert_eq!(n.mounter.mounts_at(&second).len(), usize::from(want == Code::Ok));
}

#[tokio::test]
async fn block_publish_binds_the_device_and_is_idempotent() {
    let n = node();
    n.disk(VOLUME, GIB, None);
    let staging = n.staging(VOLUME);
    n.stage(stage_req(&staging, block_cap(Mode::SingleNodeWriter), GIB)).await.expect("stage");
    let target =
        n.dir.path().join("kubelet/plugins/kubernetes.io/csi/volumeDevices/publish").join(VOLUME).join("pod-1");
    let req = publish_req(&staging, &target, block_cap(Mode::SingleNodeWriter), false);
    n.publish(req.clone()).await.expect("publish");
    n.publish(req.clone()).await.expect("repeated publish");
    assert!(target.is_file(), "the kubelet's block target is a file");
    assert_eq!(n.mounter.mounts_at(&target).len(), 1);
    // Another device bound there is not this volume.
    n.unpublish(VOLUME, &target.display().to_string()).await.expect("unpublish");
    std::fs::write(&target, b"").expect("target file");
    n.mounter.mount_foreign(&target, "devtmpfs");
    assert_eq!(code(n.publish(req).await), Code::AlreadyExists);
}

type PublishEdit = fn(&mut csi::NodePublishVolumeRequest);

#[rstest]
#[case::no_volume_id(|r: &mut csi::NodePublishVolumeRequest| r.volume_id.clear())]
#[case::no_target(|r: &mut csi::NodePublishVolumeRequest| r.target_path.clear())]
#[case::relative_target(|r: &mut csi::NodePublishVolumeRequest| r.target_path = "pods/x/mount".into())]
#[case::dot_dot_target(|r: &mut csi::NodePublishVolumeRequest| r.target_path = "/var/lib/kubelet/pods/../../../etc".into())]
#[case::no_staging_path(|r: &mut csi::NodePublishVolumeRequest| r.staging_target_path.clear())]
#[case::no_capability(|r: &mut csi::NodePublishVolumeRequest| r.volume_capability = None)]
#[case::block_without_device_name(|r: &mut csi::NodePublishVolumeRequest| {
    r.volume_capability = Some(block_cap(Mode::SingleNodeWriter));
    r.publish_context.remove(ctx::BY_ID);
})]
#[tokio::test]
async fn publish_refuses_bad_requests_with_invalid_argument(#[case] edit: PublishEdit) {
    let n = node();
    let staging = n.staged("").await;
    let mut req = publish_req(&staging, &n.target(VOLUME, "pod-1"), mount_cap(Mode::SingleNodeWriter, ""), false);
    edit(&mut req);
    let mounts_before = n.mounter.counts().mounts;
    assert_eq!(code(n.publish(req).await), Code::InvalidArgument);
    assert_eq!(n.mounter.counts().mounts, mounts_before, "nothing mounted");
}

// ------------------------------------------------------------ NodeUnpublish

#[tokio::test]
async fn unpublish_removes_the_mount_and_the_target_and_is_idempotent() {
    let n = node();
    let staging = n.staged("").await;
    let target = n.target(VOLUME, "pod-1");
    n.publish(publish_req(&staging, &target, mount_cap(Mode::SingleNodeWriter, ""), false)).await.expect("publish");
    let t = target.display().to_string();
    n.unpublish(VOLUME, &t).await.expect("unpublish");
    assert!(n.mounter.mounts_at(&target).is_empty());
    assert!(!target.exists(), "the target directory is removed");
    n.unpublish(VOLUME, &t).await.expect("repeated unpublish");
    assert_eq!(n.mounter.mounts_at(&staging).len(), 1, "the staging mount stays");
}

#[rstest]
#[case::no_volume_id("", "/var/lib/kubelet/pods/x/mount")]
#[case::no_target(VOLUME, "")]
#[case::relative_target(VOLUME, "pods/x/mount")]
#[tokio::test]
async fn unpublish_refuses_bad_requests(#[case] volume: &str, #[case] target: &str) {
    let n = node();
    assert_eq!(code(n.unpublish(volume, target).await), Code::InvalidArgument);
}

// --------------------------------------------------------------- NodeExpand

#[rstest]
#[case::ext4("ext4")]
#[case::xfs("xfs")]
#[case::btrfs("btrfs")]
#[tokio::test]
async fn expand_grows_the_filesystem_to_the_device(#[case] fs: &str) {
    let n = node();
    let staging = n.staged(fs).await;
    let target = n.target(VOLUME, "pod-1");
    n.publish(publish_req(&staging, &target, mount_cap(Mode::SingleNodeWriter, fs), false)).await.expect("publish");
    let device = n.dir.path().join("devices").join(VOLUME);
    n.mounter.grow_device(&device, 2 * GIB);
    let capacity = n.expand(VOLUME, &target).await.expect("expand");
    assert_eq!(capacity, (2 * GIB) as i64);
    assert_eq!(n.mounter.filesystem_size(&device), Some(2 * GIB));
    assert_eq!(n.mounter.counts().resizes, 1);
}

#[tokio::test]
async fn expand_refuses_what_it_cannot_grow() {
    let n = node();
    // Nothing at the path: NOT_FOUND, as the spec asks.
    assert_eq!(code(n.expand(VOLUME, &n.dir.path().join("nothing")).await.map(|_| ())), Code::NotFound);
    let plain = n.dir.path().join("kubelet/plain");
    std::fs::create_dir_all(&plain).expect("dir");
    assert_eq!(code(n.expand(VOLUME, &plain).await.map(|_| ())), Code::NotFound, "a directory that is no mount");
    // An NFS export is grown on the host, not here.
    n.export(VOLUME, "pvc-host-1", "10.53.0.7");
    let staging = n.staging(VOLUME);
    n.stage(shared_stage_req(&staging, Some("pvc-host-1"))).await.expect("stage");
    assert_eq!(code(n.expand(VOLUME, &staging).await.map(|_| ())), Code::InvalidArgument);
    assert_eq!(n.mounter.counts().resizes, 0);
}

#[tokio::test]
async fn expand_of_a_block_volume_reports_the_device_size() {
    let n = node();
    let device = n.disk(VOLUME, GIB, None);
    let staging = n.staging(VOLUME);
    n.stage(stage_req(&staging, block_cap(Mode::SingleNodeWriter), GIB)).await.expect("stage");
    let target = n.dir.path().join("kubelet/volumeDevices").join(VOLUME).join("pod-1");
    n.publish(publish_req(&staging, &target, block_cap(Mode::SingleNodeWriter), false)).await.expect("publish");
    n.mounter.grow_device(&device, 3 * GIB);
    assert_eq!(n.expand(VOLUME, &target).await.expect("expand"), (3 * GIB) as i64);
    assert_eq!(n.mounter.counts().resizes, 0, "nothing to grow on a raw device");
}
