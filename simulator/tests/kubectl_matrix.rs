//! Every kubectl a Harvester user runs, against every profile: each kubectl
//! client installed next to the machine's `kubectl` dispatcher (the gcloud
//! SDK's `kubectl` runs the `kubectl.1.<minor>` matching the server) × each
//! simulator profile, which serves its own Kubernetes version. One simulator
//! per profile; the clients share it, each in its own namespace.
//!
//! Versions are found as `kubectl.1.<minor>` in `$KUBECTL_CLIENTS_DIR` or in
//! the directory the `kubectl` on PATH resolves to. The versions wanted are
//! those installed plus those the profiles serve; the absent ones are printed
//! as skipped. The results table is printed and written to
//! `<target tmp>/kubectl-matrix.md`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use harvester_simulator::profiles::{self, PROFILES};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::Semaphore;

/// Cells running at once: a kubectl run is mostly waiting on the server and on
/// its own start, so more cells than cores keep the machine busy.
const PARALLEL_CELLS: usize = 8;

/// One kubectl client binary.
#[derive(Debug, Clone)]
struct Client {
    minor: u32,
    path: PathBuf,
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

/// The installed clients, oldest first, and the directory they were found in.
fn installed_clients() -> (PathBuf, Vec<Client>) {
    let dir = match std::env::var_os("KUBECTL_CLIENTS_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let kubectl = which("kubectl").expect("kubectl is on PATH (or set KUBECTL_CLIENTS_DIR)");
            let real = std::fs::canonicalize(&kubectl).expect("resolving kubectl");
            real.parent().expect("kubectl has a directory").to_path_buf()
        }
    };
    let mut clients: Vec<Client> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let minor = name.strip_prefix("kubectl.1.")?.parse().ok()?;
            Some(Client { minor, path: e.path() })
        })
        .collect();
    clients.sort_by_key(|c| c.minor);
    (dir, clients)
}

/// One kubectl invocation's outcome.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// A client bound to one simulator, with its own cache and home directory.
struct Kubectl {
    client: Client,
    admin: PathBuf,
    cloud_config: PathBuf,
    home: PathBuf,
    namespace: String,
}

impl Kubectl {
    fn command(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(&self.client.path);
        c.args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", &self.home)
            .env("KUBECACHEDIR", self.home.join("cache"))
            .env("KUBE_EDITOR", self.home.join("editor.sh"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    async fn run_as(&self, kubeconfig: &Path, args: &[&str]) -> Run {
        let out = tokio::time::timeout(Duration::from_secs(60), self.command(kubeconfig, args).output()).await;
        match out {
            Ok(Ok(o)) => Run {
                ok: o.status.success(),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            },
            Ok(Err(e)) => Run { ok: false, stdout: String::new(), stderr: format!("starting kubectl: {e}") },
            Err(_) => Run { ok: false, stdout: String::new(), stderr: "kubectl did not finish within 60 s".into() },
        }
    }

    async fn admin(&self, args: &[&str]) -> Run {
        self.run_as(&self.admin, args).await
    }

    fn file(&self, name: &str, content: &str) -> String {
        let path = self.home.join(name);
        std::fs::write(&path, content).expect("writing a manifest");
        path.display().to_string()
    }
}

/// The failures of one cell, as `step: why`.
#[derive(Default)]
struct Outcome {
    steps: usize,
    failures: Vec<String>,
}

impl Outcome {
    /// Records a step: the run must succeed and `check` must hold on its stdout.
    fn expect(&mut self, step: &str, run: &Run, check: impl FnOnce(&str) -> bool) {
        self.steps += 1;
        if !run.ok {
            self.failures.push(format!("{step}: failed: {}{}", run.stderr.trim(), run.stdout.trim()));
        } else if !check(&run.stdout) {
            self.failures.push(format!("{step}: unexpected output:\n{}\n{}", run.stdout.trim(), run.stderr.trim()));
        }
    }

    /// Records a step that must fail, with `check` holding on its stderr.
    fn expect_failure(&mut self, step: &str, run: &Run, check: impl FnOnce(&str) -> bool) {
        self.steps += 1;
        if run.ok {
            self.failures.push(format!("{step}: succeeded:\n{}", run.stdout.trim()));
        } else if !check(&run.stderr) {
            self.failures.push(format!("{step}: unexpected error:\n{}", run.stderr.trim()));
        }
    }

    /// Records a step whose answer is yes (exit 0) or no (exit 1), as `auth can-i` gives it.
    fn expect_answer(&mut self, step: &str, run: &Run, yes: bool) {
        self.steps += 1;
        let answer = run.stdout.trim();
        let wanted = if yes { "yes" } else { "no" };
        if answer != wanted || run.ok != yes {
            self.failures.push(format!("{step}: wanted {wanted}, got {answer:?} ({})", run.stderr.trim()));
        }
    }
}

fn pvc(ns: &str, label: &str) -> String {
    format!(
        "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: claim
  namespace: {ns}
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

fn config_map(ns: &str, name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\ndata:\n  key: {value}\n")
}

fn setting(name: &str, value: &str) -> String {
    format!("apiVersion: harvesterhci.io/v1beta1\nkind: Setting\nmetadata:\n  name: {name}\nvalue: \"{value}\"\n")
}

/// Streams `kubectl get configmap NAME -w` until a second row shows the change `change` makes.
async fn watch_sees_change(k: &Kubectl, name: &str, change: impl std::future::Future<Output = Run>) -> Run {
    let mut child = match k
        .command(&k.admin, &["get", "configmap", name, "-n", &k.namespace, "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Run { ok: false, stdout: String::new(), stderr: format!("starting kubectl: {e}") },
    };
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let rows = |s: &str| s.lines().filter(|l| l.starts_with(&format!("{name} "))).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The first row, then the change, then the second row.
    let mut changed: Option<Run> = None;
    let mut change = Some(change);
    while Instant::now() < deadline {
        if rows(&seen) >= 1 {
            if let Some(c) = change.take() {
                changed = Some(c.await);
            }
        }
        if rows(&seen) >= 2 {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(500), stdout.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Ok(Err(_)) => break,
            Err(_) => {}
        }
    }
    let still_running = child.try_wait().ok().flatten().is_none();
    let _ = child.start_kill();
    let _ = child.wait().await;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr).await;
    }
    if let Some(c) = changed.as_ref().filter(|c| !c.ok) {
        stderr = format!("the change failed: {}\n{stderr}", c.stderr);
    }
    Run { ok: still_running && rows(&seen) >= 2 && changed.is_some_and(|c| c.ok), stdout: seen, stderr }
}

/// Every command of the matrix, in order, for one client against one profile.
async fn cell(k: &Kubectl, profile: &profiles::Profile) -> Outcome {
    let mut o = Outcome::default();
    let ns = k.namespace.as_str();
    let prefix = format!("kc-{}", k.client.minor);

    // create, get (table and YAML)
    let claim1 = k.file("claim1.yaml", &pvc(ns, "one"));
    o.expect("create -f pvc", &k.admin(&["create", "-f", &claim1]).await, |s| {
        s.contains("persistentvolumeclaim/claim created")
    });
    o.expect("get pvc (table)", &k.admin(&["get", "pvc", "-n", ns]).await, |s| {
        s.starts_with("NAME") && s.contains("STORAGECLASS") && s.lines().any(|l| l.starts_with("claim "))
    });
    o.expect("get pvc -o yaml", &k.admin(&["get", "pvc", "claim", "-n", ns, "-o", "yaml"]).await, |s| {
        s.contains("name: claim") && s.contains("storageClassName: harvester-longhorn")
    });
    o.expect("get vm (table)", &k.admin(&["get", "vm", "-A"]).await, |s| s.contains("guest-1"));
    // kubectl leaves validation to the server (fieldValidation=Strict): a typo is refused.
    let typo =
        k.file("typo.yaml", &pvc(ns, "typo").replace("claim", "typo").replace("storageClassName", "storageClass"));
    o.expect_failure("create -f with an unknown field", &k.admin(&["create", "-f", &typo]).await, |e| {
        e.contains(r#"strict decoding error: unknown field "spec.storageClass""#)
    });
    // A typed create: kubectl ≥ 1.32 sends it as protobuf.
    o.expect(
        "create secret generic",
        &k.admin(&["create", "secret", "generic", "typed", "-n", ns, "--from-literal=key=value"]).await,
        |s| s.contains("secret/typed created"),
    );
    o.expect(
        "typed secret data",
        &k.admin(&["get", "secret", "typed", "-n", ns, "-o", "jsonpath={.data.key}"]).await,
        |s| s == "dmFsdWU=",
    );
    o.expect(
        "wait pvc Bound",
        &k.admin(&["wait", "--for=jsonpath={.status.phase}=Bound", "pvc/claim", "-n", ns, "--timeout=30s"]).await,
        |s| s.contains("condition met"),
    );

    // patch: strategic (the default for built-ins), merge, JSON
    o.expect(
        "patch strategic",
        &k.admin(&["patch", "pvc", "claim", "-n", ns, "-p", r#"{"metadata":{"labels":{"strategic":"yes"}}}"#]).await,
        |s| s.contains("patched"),
    );
    o.expect(
        "patch merge",
        &k.admin(&[
            "patch",
            "pvc",
            "claim",
            "-n",
            ns,
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"merged":"yes"}}}"#,
        ])
        .await,
        |s| s.contains("patched"),
    );
    o.expect(
        "patch json",
        &k.admin(&[
            "patch",
            "pvc",
            "claim",
            "-n",
            ns,
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/metadata/labels/json","value":"yes"}]"#,
        ])
        .await,
        |s| s.contains("patched"),
    );
    o.expect(
        "patched labels",
        &k.admin(&["get", "pvc", "claim", "-n", ns, "-o", "jsonpath={.metadata.labels}"]).await,
        |s| s.contains(r#""strategic":"yes""#) && s.contains(r#""merged":"yes""#) && s.contains(r#""json":"yes""#),
    );

    // apply, client side: create then change, a built-in kind and a CRD
    let csa = format!("{prefix}-csa");
    let f = k.file("csa1.yaml", &config_map(ns, "csa", "one"));
    o.expect("apply (client) create", &k.admin(&["apply", "-f", &f]).await, |s| s.contains("configmap/csa created"));
    let f = k.file("csa2.yaml", &config_map(ns, "csa", "two"));
    o.expect("apply (client) change", &k.admin(&["apply", "-f", &f]).await, |s| s.contains("configmap/csa configured"));
    o.expect("applied value", &k.admin(&["get", "cm", "csa", "-n", ns, "-o", "jsonpath={.data.key}"]).await, |s| {
        s == "two"
    });
    let f = k.file("csa-setting1.yaml", &setting(&csa, "one"));
    o.expect("apply (client) create CRD", &k.admin(&["apply", "-f", &f]).await, |s| s.contains("created"));
    let f = k.file("csa-setting2.yaml", &setting(&csa, "two"));
    o.expect("apply (client) change CRD", &k.admin(&["apply", "-f", &f]).await, |s| s.contains("configured"));
    o.expect(
        "applied CRD value",
        &k.admin(&["get", "settings.harvesterhci.io", &csa, "-o", "jsonpath={.value}"]).await,
        |s| s == "two",
    );

    // apply, server side: create then change
    let ssa = format!("{prefix}-ssa");
    let f = k.file("ssa1.yaml", &config_map(ns, "ssa", "one"));
    o.expect("apply --server-side create", &k.admin(&["apply", "--server-side", "-f", &f]).await, |s| {
        s.contains("serverside-applied")
    });
    let f = k.file("ssa2.yaml", &config_map(ns, "ssa", "two"));
    o.expect("apply --server-side change", &k.admin(&["apply", "--server-side", "-f", &f]).await, |s| {
        s.contains("serverside-applied")
    });
    o.expect(
        "server-side applied value",
        &k.admin(&["get", "cm", "ssa", "-n", ns, "-o", "jsonpath={.data.key}"]).await,
        |s| s == "two",
    );
    let f = k.file("ssa-setting.yaml", &setting(&ssa, "one"));
    o.expect("apply --server-side CRD", &k.admin(&["apply", "--server-side", "-f", &f]).await, |s| {
        s.contains("serverside-applied")
    });

    // edit with a non-interactive editor
    o.expect("edit", &k.admin(&["edit", "configmap", "csa", "-n", ns]).await, |s| s.contains("edited"));
    o.expect("edited value", &k.admin(&["get", "cm", "csa", "-n", ns, "-o", "jsonpath={.data.edited}"]).await, |s| {
        s == "by-editor"
    });

    // get -w, bounded: the first row, a change, the second row
    let label_args = ["label", "configmap", "ssa", "-n", ns, "watched=yes"];
    let label = k.admin(&label_args);
    o.expect("get -w", &watch_sees_change(k, "ssa", label).await, |_| true);

    // auth can-i with the cloud-config identity (the guest's ServiceAccount)
    let cc = &k.cloud_config;
    o.expect_answer(
        "auth can-i get vm",
        &k.run_as(cc, &["auth", "can-i", "get", "virtualmachines.kubevirt.io", "-n", "default"]).await,
        true,
    );
    o.expect_answer(
        "auth can-i list storageclasses",
        &k.run_as(cc, &["auth", "can-i", "list", "storageclasses.storage.k8s.io"]).await,
        profile.csi_driver_role.is_some(),
    );
    o.expect_answer(
        "auth can-i create volumeremotebackups",
        &k.run_as(cc, &["auth", "can-i", "create", "volumeremotebackups.harvesterhci.io", "-n", "default"]).await,
        profile.remote_backups,
    );
    o.expect_answer("auth can-i delete nodes", &k.run_as(cc, &["auth", "can-i", "delete", "nodes"]).await, false);
    o.expect("auth can-i --list", &k.run_as(cc, &["auth", "can-i", "--list", "-n", "default"]).await, |s| {
        s.contains("virtualmachines.subresources.kubevirt.io/addvolume")
            && s.contains("persistentvolumeclaims")
            && s.contains("selfsubjectrulesreviews.authorization.k8s.io")
            && s.contains("[/api/*]")
            && s.contains("storageclasses.storage.k8s.io") == profile.csi_driver_role.is_some()
    });

    // explain
    o.expect(
        "explain vm.spec.template.spec.volumes",
        &k.admin(&["explain", "vm.spec.template.spec.volumes"]).await,
        |s| s.contains("VirtualMachine") && s.contains("persistentVolumeClaim") && s.contains("dataVolume"),
    );

    // delete, waiting for it to be gone
    o.expect("delete pvc", &k.admin(&["delete", "pvc", "claim", "-n", ns, "--wait", "--timeout=30s"]).await, |s| {
        s.contains("deleted")
    });
    o.expect("deleted pvc is gone", &k.admin(&["get", "pvc", "claim", "-n", ns, "--ignore-not-found"]).await, |s| {
        s.trim().is_empty()
    });
    o.expect("delete CRDs", &k.admin(&["delete", "settings.harvesterhci.io", &csa, &ssa]).await, |s| {
        s.matches("deleted").count() == 2
    });
    o
}

const EDITOR: &str = "#!/bin/sh\n# kubectl edit's editor: adds a key under data, in place.\nsed -i 's/^data:$/data:\\n  edited: by-editor/' \"$1\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs kubectl: the gcloud SDK's kubectl dispatcher with kubectl.1.<minor> clients beside it (or KUBECTL_CLIENTS_DIR)"]
async fn every_kubectl_against_every_profile() {
    let (dir, clients) = installed_clients();
    assert!(!clients.is_empty(), "no kubectl.1.<minor> in {}", dir.display());
    let installed: BTreeSet<u32> = clients.iter().map(|c| c.minor).collect();
    let served: BTreeSet<u32> = PROFILES.iter().map(|p| p.kubernetes_minor.parse().expect("numeric minor")).collect();
    let absent: Vec<String> = served.difference(&installed).map(|m| format!("1.{m}")).collect();
    println!(
        "kubectl clients in {}: {}; absent (skipped): {}",
        dir.display(),
        installed.iter().map(|m| format!("1.{m}")).collect::<Vec<_>>().join(", "),
        if absent.is_empty() { "none".to_string() } else { absent.join(", ") }
    );

    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(PARALLEL_CELLS));
    let mut profile_tasks = Vec::new();
    for profile in PROFILES {
        let clients = clients.clone();
        let limit = limit.clone();
        profile_tasks.push(tokio::spawn(async move {
            let s = common::start(common::Options::profile(profile.name)).await;
            let namespaces: Api<Namespace> = Api::all(s.admin.clone());
            let mut cells = Vec::new();
            for client in clients {
                let namespace = format!("kubectl-1-{}", client.minor);
                let ns =
                    serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).expect("namespace");
                namespaces.create(&PostParams::default(), &ns).await.expect("creating the client's namespace");
                let home = s.path().join(format!("home-{}", client.minor));
                std::fs::create_dir_all(&home).expect("home directory");
                let editor = home.join("editor.sh");
                std::fs::write(&editor, EDITOR).expect("editor script");
                std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .expect("making the editor executable");
                let k = Kubectl {
                    client,
                    admin: s.sim.admin_kubeconfig_path(),
                    cloud_config: s.sim.cloud_config_path(),
                    home,
                    namespace,
                };
                let limit = limit.clone();
                cells.push(tokio::spawn(async move {
                    let _slot = limit.acquire_owned().await.expect("semaphore");
                    let t = Instant::now();
                    let profile = profiles::lookup(profile.name).expect("known profile");
                    let outcome = cell(&k, &profile).await;
                    (k.client.minor, outcome, t.elapsed())
                }));
            }
            let mut results = Vec::new();
            for c in cells {
                results.push(c.await.expect("cell task"));
            }
            s.shutdown().await;
            (profile, results)
        }));
    }

    let mut rows = Vec::new();
    for t in profile_tasks {
        rows.push(t.await.expect("profile task"));
    }
    let mut table = String::from("| profile (server) |");
    for c in &clients {
        table.push_str(&format!(" kubectl 1.{} |", c.minor));
    }
    table.push_str("\n|---|");
    table.push_str(&"---|".repeat(clients.len()));
    table.push('\n');
    let mut failures = Vec::new();
    for (profile, results) in &rows {
        table.push_str(&format!("| {} ({}) |", profile.name, profile.kubernetes_git_version));
        for (minor, outcome, took) in results {
            if outcome.failures.is_empty() {
                table.push_str(&format!(" pass ({:.0} s) |", took.as_secs_f64()));
            } else {
                table.push_str(&format!(" FAIL: {} of the steps |", outcome.failures.len()));
                for f in &outcome.failures {
                    failures.push(format!("{} × kubectl 1.{minor}: {f}", profile.name));
                }
            }
        }
        table.push('\n');
    }
    let steps: usize = rows.iter().flat_map(|(_, r)| r.iter().map(|(_, o, _)| o.steps)).sum();
    println!(
        "\n{table}\n{} cells, {steps} checked steps, {:.0} s",
        rows.len() * clients.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::write(Path::new(env!("CARGO_TARGET_TMPDIR")).join("kubectl-matrix.md"), &table);
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n\n"));
}
