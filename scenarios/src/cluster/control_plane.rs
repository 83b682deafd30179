//! kube-apiserver, kube-controller-manager and kube-scheduler (v1.34 built by
//! ci/cluster/build-tools.sh), with the minimal flags that work here
//! (../shared/reference/local-cluster.md).

use std::time::Duration;

use super::etcd::Etcd;
use super::{process, wait_until, ClusterError, Result, Spec, API_ADDRESS, API_PORT, SERVICE_RANGE};

/// Off the default ports, so another cluster on this machine does not collide.
const CONTROLLER_MANAGER_PORT: u16 = 20257;
const SCHEDULER_PORT: u16 = 20259;

pub async fn start(spec: &Spec, etcd: &Etcd) -> Result<()> {
    let pki = spec.state_dir.join("pki");
    let p = |f: &str| pki.join(f).display().to_string();
    let bin = |b: &str| spec.tools.kubernetes.join(b);
    let apiserver: Vec<String> = vec![
        format!("--etcd-servers={}", etcd.url),
        format!("--bind-address={API_ADDRESS}"),
        format!("--advertise-address={API_ADDRESS}"),
        format!("--secure-port={API_PORT}"),
        format!("--tls-cert-file={}", p("apiserver.crt")),
        format!("--tls-private-key-file={}", p("apiserver.key")),
        format!("--client-ca-file={}", p("ca.crt")),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", p("sa.pub")),
        format!("--service-account-signing-key-file={}", p("sa.key")),
        format!("--service-cluster-ip-range={SERVICE_RANGE}"),
        "--authorization-mode=Node,RBAC".into(),
        "--allow-privileged=true".into(),
        "--endpoint-reconciler-type=none".into(),
        format!("--kubelet-client-certificate={}", p("apiserver-kubelet-client.crt")),
        format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
        "--kubelet-preferred-address-types=InternalIP".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ];
    let pid = process::spawn(&spec.state_dir, "kube-apiserver", &bin("kube-apiserver"), &apiserver)?;
    let client = super::admin_client(spec).await?;
    wait_until("kube-apiserver", Duration::from_secs(90), || {
        let client = client.clone();
        async move {
            if process::gone(pid) {
                return Some("exited".into());
            }
            let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
            match client.request_text(req).await {
                Ok(t) if t.trim() == "ok" => None,
                Ok(t) => Some(t),
                Err(e) => Some(e.to_string()),
            }
        }
    })
    .await
    .map_err(|e| ClusterError::NotReady(format!("{e}\n{}", process::tail(&spec.state_dir, "kube-apiserver", 8))))?;

    let cm: Vec<String> = vec![
        format!("--kubeconfig={}", p("controller-manager.kubeconfig")),
        "--leader-elect=false".into(),
        format!("--service-account-private-key-file={}", p("sa.key")),
        format!("--root-ca-file={}", p("ca.crt")),
        "--use-service-account-credentials=true".into(),
        format!("--cluster-signing-cert-file={}", p("ca.crt")),
        format!("--cluster-signing-key-file={}", p("ca.key")),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={CONTROLLER_MANAGER_PORT}"),
        "--v=2".into(),
    ];
    process::spawn(&spec.state_dir, "kube-controller-manager", &bin("kube-controller-manager"), &cm)?;
    let sched: Vec<String> = vec![
        format!("--kubeconfig={}", p("scheduler.kubeconfig")),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={SCHEDULER_PORT}"),
    ];
    process::spawn(&spec.state_dir, "kube-scheduler", &bin("kube-scheduler"), &sched)?;
    Ok(())
}
