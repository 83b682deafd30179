//! How host (Harvester API) failures map to CSI codes, through
//! `harvester_csi_driver::host::Host` against a wiremock server that answers
//! with real Kubernetes `Status` bodies. The client is built the way the
//! driver builds it (`app::host_client` from a cloud-config), so its retry and
//! timeout behaviour is the production one.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use harvester_csi_driver::config::Config;
use harvester_csi_driver::host::Host;
use harvester_csi_driver::metrics::Metrics;
use rstest::rstest;
use serde_json::{json, Value};
use tonic::Code;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PVC_PATH: &str = "/api/v1/namespaces/default/persistentvolumeclaims/pvc-x";
const PVCS_PATH: &str = "/api/v1/namespaces/default/persistentvolumeclaims";

/// A Kubernetes `Status` failure body exactly as the apiserver writes it.
fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": "pvc-x", "kind": "persistentvolumeclaims"},
        "code": code,
    })
}

/// A Host with the driver's own client for a cloud-config pointing at `server`.
async fn driver_host(server: &MockServer) -> Host {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cloud-config");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: mock\n\
             clusters: [{{name: mock, cluster: {{server: \"{}\"}}}}]\n\
             users: [{{name: guest, user: {{token: guest-token}}}}]\n\
             contexts: [{{name: mock, context: {{cluster: mock, user: guest, namespace: default}}}}]\n",
            server.uri()
        ),
    )
    .expect("writing cloud-config");
    let config = Config::try_parse_from([
        "harvester-csi-driver",
        "--kubeconfig",
        &path.display().to_string(),
        "--no-guest-access",
    ])
    .expect("flags");
    let harvester_csi_driver::app::HostConnection { client, namespace, .. } =
        harvester_csi_driver::app::host_client(&config).await.expect("host client");
    assert_eq!(namespace, "default");
    Host::new(client, namespace, Arc::new(Metrics::default()))
}

/// A Host over a plain `kube::Config` (for a client-side read timeout, which the driver leaves unset).
fn host_with(server: &MockServer, read_timeout: Option<Duration>) -> Host {
    let mut config = kube::Config::new(server.uri().parse().expect("mock server URL"));
    config.read_timeout = read_timeout;
    config.default_retry = false;
    let client = kube::Client::try_from(config).expect("kube client");
    Host::new(client, "default".into(), Arc::new(Metrics::default()))
}

/// A mock server answering `verb at` with `response`, exactly `requests` times: any other
/// count of client-side retries fails the test.
async fn serve_n(verb: &str, at: &str, response: ResponseTemplate, requests: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method(verb)).and(path(at)).respond_with(response).expect(requests).mount(&server).await;
    server
}

/// As [`serve_n`], for an answer the driver takes at once: exactly one request.
async fn serve(verb: &str, at: &str, response: ResponseTemplate) -> MockServer {
    serve_n(verb, at, response, 1).await
}

/// Requests the driver's client makes for one read the host fails with `code`: reads that
/// met 429 or 5xx are sent twice more (host::retry::ReadRetry), anything else once.
fn read_attempts(code: u16) -> u64 {
    if code == 429 || code >= 500 {
        3
    } else {
        1
    }
}

fn pvc_json() -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "pvc-x", "namespace": "default", "resourceVersion": "7"},
        "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Block",
                 "resources": {"requests": {"storage": "16Mi"}}},
        "status": {"phase": "Bound", "capacity": {"storage": "16Mi"}},
    })
}

#[rstest]
#[case::internal_error(500, "InternalError", Code::Unavailable)]
#[case::service_unavailable(503, "ServiceUnavailable", Code::Unavailable)]
#[case::too_many_requests(429, "TooManyRequests", Code::Unavailable)]
#[case::gateway_timeout(504, "Timeout", Code::DeadlineExceeded)]
#[case::forbidden(403, "Forbidden", Code::PermissionDenied)]
#[case::unauthorized(401, "Unauthorized", Code::Unauthenticated)]
#[tokio::test]
async fn get_pvc_errors_map_by_status(#[case] code: u16, #[case] reason: &str, #[case] want: Code) {
    let message = if code == 403 {
        "persistentvolumeclaims \"pvc-x\" is forbidden: User \"system:serviceaccount:default:guest-cluster\" cannot get resource \"persistentvolumeclaims\" in API group \"\" in the namespace \"default\"".to_string()
    } else {
        format!("the host said {reason}")
    };
    let response = ResponseTemplate::new(code).set_body_json(status(code, reason, &message));
    let server = serve_n("GET", PVC_PATH, response, read_attempts(code)).await;
    let host = driver_host(&server).await;
    // Answered within a second, not after minutes of kube's own retries of 429/503/504.
    let err = tokio::time::timeout(Duration::from_secs(5), host.get_pvc("pvc-x"))
        .await
        .expect("the driver reports a host failure promptly")
        .expect_err("the host failed");
    assert_eq!(err.code(), want, "{err}");
    let text = err.to_string();
    assert!(text.contains("get persistentvolumeclaim"), "the error names the operation: {text}");
    assert!(text.contains(&message), "the error carries the host's message: {text}");
    assert!(err.api_response().is_some_and(|s| s.code == code && s.reason == reason), "{err:?}");
}

#[tokio::test]
async fn get_pvc_not_found_is_none() {
    let server = serve(
        "GET",
        PVC_PATH,
        ResponseTemplate::new(404).set_body_json(status(404, "NotFound", "persistentvolumeclaims \"pvc-x\" not found")),
    )
    .await;
    let host = driver_host(&server).await;
    assert!(host.get_pvc("pvc-x").await.expect("404 is not an error").is_none());
}

#[tokio::test]
async fn get_pvc_success_parses_the_object() {
    let server = serve("GET", PVC_PATH, ResponseTemplate::new(200).set_body_json(pvc_json())).await;
    let host = driver_host(&server).await;
    let pvc = host.get_pvc("pvc-x").await.expect("get").expect("found");
    assert_eq!(harvester_csi_driver::host::pvc::pvc_capacity(&pvc), 16 << 20);
}

#[tokio::test]
async fn a_500_without_a_status_body_is_still_unavailable() {
    // A proxy in front of the host answers with plain text, not a Status.
    let response = ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>");
    let server = serve_n("GET", PVC_PATH, response, read_attempts(502)).await;
    let host = driver_host(&server).await;
    let err = host.get_pvc("pvc-x").await.expect_err("502");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}

#[tokio::test]
async fn conflict_on_update_is_aborted() {
    let server = serve(
        "PATCH",
        PVC_PATH,
        ResponseTemplate::new(409).set_body_json(status(
            409,
            "Conflict",
            "Operation cannot be fulfilled on persistentvolumeclaims \"pvc-x\": the object has been modified; please apply your changes to the latest version and try again",
        )),
    )
    .await;
    let host = driver_host(&server).await;
    let err = host.resize_pvc("pvc-x", 32 << 20).await.expect_err("409");
    assert_eq!(err.code(), Code::Aborted, "{err}");
    assert!(err.to_string().contains("the object has been modified"), "{err}");
}

#[tokio::test]
async fn already_exists_on_create_is_aborted() {
    let server = serve(
        "POST",
        PVCS_PATH,
        ResponseTemplate::new(409).set_body_json(status(
            409,
            "AlreadyExists",
            "persistentvolumeclaims \"pvc-x\" already exists",
        )),
    )
    .await;
    let host = driver_host(&server).await;
    let pvc = serde_json::from_value(pvc_json()).expect("pvc");
    let err = host.create_pvc(&pvc).await.expect_err("409");
    assert_eq!(err.code(), Code::Aborted, "{err}");
}

#[tokio::test]
async fn webhook_refusal_is_failed_precondition() {
    let message = "admission webhook \"validator.harvesterhci.io\" denied the request: PVC_EXPAND: can not expand volume pvc-x while it is used by running VM default/guest-1; stop the VM first";
    let server =
        serve("PATCH", PVC_PATH, ResponseTemplate::new(422).set_body_json(status(422, "Invalid", message))).await;
    let host = driver_host(&server).await;
    let err = host.resize_pvc("pvc-x", 32 << 20).await.expect_err("422");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.to_string().contains("PVC_EXPAND"), "{err}");
}

#[tokio::test]
async fn a_host_slower_than_the_client_timeout_is_unavailable() {
    let server =
        serve("GET", PVC_PATH, ResponseTemplate::new(200).set_body_json(pvc_json()).set_delay(Duration::from_secs(5)))
            .await;
    // A plain kube client with a read timeout (the retry layer is the driver's, tested above).
    let host = host_with(&server, Some(Duration::from_millis(300)));
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(4), host.get_pvc("pvc-x"))
        .await
        .expect("the client timeout fires before the response")
        .expect_err("timed out");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(err.code(), Code::Unavailable, "a timeout is retryable: {err} / {err:?}");
    assert!(err.to_string().contains("get persistentvolumeclaim"), "{err}");
}

#[tokio::test]
async fn an_unreachable_host_is_unavailable() {
    // Bind and drop a listener: nothing serves that port afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().expect("url"));
    let host =
        Host::new(kube::Client::try_from(config).expect("client"), "default".into(), Arc::new(Metrics::default()));
    let err = tokio::time::timeout(Duration::from_secs(40), host.get_pvc("pvc-x"))
        .await
        .expect("bounded")
        .expect_err("connection refused");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}

#[tokio::test]
async fn a_read_that_fails_once_is_retried_and_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(PVC_PATH))
        .respond_with(ResponseTemplate::new(500).set_body_json(status(500, "InternalError", "etcd hiccup")))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(PVC_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(pvc_json()))
        .expect(1)
        .mount(&server)
        .await;
    let host = driver_host(&server).await;
    let pvc = host.get_pvc("pvc-x").await.expect("the retry hides one failed read").expect("found");
    assert_eq!(harvester_csi_driver::host::pvc::pvc_capacity(&pvc), 16 << 20);
}

#[tokio::test]
async fn a_failed_write_is_never_repeated_by_the_client() {
    let response = ResponseTemplate::new(500).set_body_json(status(500, "InternalError", "etcd hiccup"));
    let server = serve("PATCH", PVC_PATH, response).await;
    let host = driver_host(&server).await;
    let err = host.resize_pvc("pvc-x", 32 << 20).await.expect_err("500");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}

#[tokio::test]
async fn every_read_gets_its_own_retries() {
    // The policy's budget is per request: a second failing read is retried as the first was.
    let response = ResponseTemplate::new(500).set_body_json(status(500, "InternalError", "etcd hiccup"));
    let server = serve_n("GET", PVC_PATH, response, 2 * read_attempts(500)).await;
    let host = driver_host(&server).await;
    for _ in 0..2 {
        assert_eq!(host.get_pvc("pvc-x").await.expect_err("500").code(), Code::Unavailable);
    }
}
