//! The real `kubectl` against the real `harvester-sim` binary.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::bounded;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

fn kubectl_available() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `harvester-sim serve` and returns it with its printed address.
async fn serve(state: &Path, world: &Path) -> (Child, String) {
    let args = ["serve", "--listen", "127.0.0.1:0", "--devices", "file", "--state-dir"].map(OsStr::new);
    let args: Vec<&OsStr> =
        args.into_iter().chain([state.as_os_str(), OsStr::new("--world"), world.as_os_str()]).collect();
    let (child, mut printed) = common::spawn_sim(&args, &["address"]).await;
    (child, printed.remove("address").unwrap_or_default())
}

struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs kubectl, asserts exit 0, returns stdout.
    async fn run(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(
            Duration::from_secs(40),
            Command::new("kubectl").args(args).env("KUBECONFIG", &self.kubeconfig).kill_on_drop(true).output(),
        )
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} hung"))
        .expect("running kubectl");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

fn pvc_manifest(label: &str) -> String {
    format!(
        "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: x
  namespace: default
  labels:
    app: {label}
spec:
  accessModes: [ReadWriteOnce]
  volumeMode: Block
  storageClassName: harvester-longhorn
  resources:
    requests:
      storage: 32Mi
"
    )
}

/// Through the `kubectl` on PATH (on this machine the gcloud SDK's dispatcher,
/// which picks the client matching the server); `kubectl_matrix` runs every
/// installed client directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs kubectl: put one on PATH (`ci/cluster/tool-dir.sh kubernetes` prints a directory holding one)"]
async fn kubectl_smoke() {
    assert!(kubectl_available(), "kubectl_smoke needs `kubectl` on PATH (`kubectl version --client` must work)");
    bounded(110, async {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let world = dir.path().join("world.yaml");
        std::fs::write(&world, common::FAST_TIMING).unwrap();
        let (mut child, address) = serve(&state, &world).await;
        assert!(address.starts_with("https://127.0.0.1:"), "{address}");
        let k = Kubectl { kubeconfig: state.join("admin.kubeconfig") };

        let nodes = k.run(&["get", "nodes", "-o", "yaml"]).await;
        assert!(nodes.contains("name: harvester-1") && nodes.contains("topology.kubernetes.io/zone"), "{nodes}");
        let listed = k.run(&["get", "vm,vmi,sc"]).await;
        assert!(listed.contains("guest-1") && listed.contains("harvester-longhorn"), "{listed}");

        let m1 = dir.path().join("pvc1.yaml");
        let m2 = dir.path().join("pvc2.yaml");
        std::fs::write(&m1, pvc_manifest("one")).unwrap();
        std::fs::write(&m2, pvc_manifest("two")).unwrap();
        let out = k.run(&["apply", "-f", m1.to_str().unwrap()]).await;
        assert!(out.contains("created"), "{out}");
        // A changed manifest goes through the strategic-merge patch path.
        let out = k.run(&["apply", "-f", m2.to_str().unwrap()]).await;
        assert!(out.contains("configured"), "{out}");
        let label = k.run(&["get", "pvc", "x", "-o", "jsonpath={.metadata.labels.app}"]).await;
        assert_eq!(label, "two");

        k.run(&["patch", "pvc", "x", "--type", "merge", "-p", r#"{"metadata":{"labels":{"merged":"yes"}}}"#]).await;
        k.run(&[
            "patch",
            "pvc",
            "x",
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/metadata/labels/json","value":"yes"}]"#,
        ])
        .await;
        let labels = k.run(&["get", "pvc", "x", "-o", "jsonpath={.metadata.labels}"]).await;
        assert!(labels.contains("\"merged\":\"yes\"") && labels.contains("\"json\":\"yes\""), "{labels}");

        k.run(&["wait", "--for=jsonpath={.status.phase}=Bound", "pvc/x", "--timeout=20s"]).await;

        // `get -w` streams until killed; it must print the claim and not fail on its own.
        let mut watch = Command::new("kubectl")
            .args(["get", "pvc", "-w"])
            .env("KUBECONFIG", &k.kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        k.run(&["label", "pvc", "x", "watched=yes"]).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(watch.try_wait().unwrap().is_none(), "kubectl get -w exited early");
        watch.start_kill().unwrap();
        let _ = watch.wait().await;
        let mut out = String::new();
        watch.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
        let mut err = String::new();
        watch.stderr.take().unwrap().read_to_string(&mut err).await.unwrap();
        assert!(out.lines().filter(|l| l.starts_with("x ")).count() >= 2, "stdout: {out}\nstderr: {err}");
        assert!(out.contains("Bound"), "{out}");

        let described = k.run(&["describe", "pvc", "x"]).await;
        assert!(described.contains("Name:") && described.contains("harvester-longhorn"), "{described}");

        k.run(&["delete", "pvc", "x", "--wait", "--timeout=20s"]).await;
        let gone = k.run(&["get", "pvc", "--ignore-not-found", "x"]).await;
        assert_eq!(gone.trim(), "");

        child.start_kill().unwrap();
        let _ = child.wait().await;
    })
    .await
}
