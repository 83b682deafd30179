//! Prometheus metrics (per-RPC count/latency/code, host API latency, in-flight
//! operations, the capability report) and the HTTP endpoint serving them with
//! `/healthz` and `/capabilities`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    operation: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeatureLabels {
    feature: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostInfoLabels {
    version: String,
    hotplug: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.002, 2.0, 16))
}

/// The capability report in the plain terms the metrics need; built by the host
/// module's feature detection, which owns the report's types.
#[derive(Debug, Clone)]
pub struct CapabilitySnapshot {
    /// (feature name, enabled).
    pub features: Vec<(String, bool)>,
    pub host_version: String,
    pub hotplug: String,
    /// The report as served on `/capabilities`.
    pub report: serde_json::Value,
}

pub struct Metrics {
    registry: Registry,
    rpc_total: Family<RpcLabels, Counter>,
    rpc_duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    method_in_flight: Family<MethodLabels, Gauge>,
    host_total: Family<HostLabels, Counter>,
    host_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    features: Family<FeatureLabels, Gauge>,
    host_info: Family<HostInfoLabels, Gauge>,
    kubelet_registered: Gauge,
    kubelet_registration_failures: Counter,
    report: RwLock<Option<serde_json::Value>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("harvester_csi");
        let rpc_total = Family::<RpcLabels, Counter>::default();
        let rpc_duration = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let in_flight = Gauge::default();
        let method_in_flight = Family::<MethodLabels, Gauge>::default();
        let host_total = Family::<HostLabels, Counter>::default();
        let host_duration = Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let features = Family::<FeatureLabels, Gauge>::default();
        let host_info = Family::<HostInfoLabels, Gauge>::default();
        let kubelet_registered = Gauge::default();
        let kubelet_registration_failures = Counter::default();
        registry.register("csi_operations", "CSI RPCs by method and gRPC code", rpc_total.clone());
        registry.register("csi_operation_duration_seconds", "CSI RPC latency", rpc_duration.clone());
        registry.register("csi_operations_in_flight", "CSI RPCs being served", in_flight.clone());
        registry.register(
            "csi_method_operations_in_flight",
            "CSI RPCs being served, by method (e.g. a NodeStageVolume under way)",
            method_in_flight.clone(),
        );
        registry.register("host_api_requests", "Harvester API calls by operation and outcome", host_total.clone());
        registry.register("host_api_request_duration_seconds", "Harvester API call latency", host_duration.clone());
        registry.register(
            "feature_enabled",
            "1 when a capability is on (see /capabilities for reasons)",
            features.clone(),
        );
        registry.register("host_info", "Harvester version and hotplug form in use", host_info.clone());
        registry.register(
            "kubelet_plugin_registered",
            "1 once the kubelet reported this node plugin registered (--plugin-registration-dir)",
            kubelet_registered.clone(),
        );
        registry.register(
            "kubelet_plugin_registration_failures",
            "Registrations the kubelet reported as failed",
            kubelet_registration_failures.clone(),
        );
        Self {
            registry,
            rpc_total,
            rpc_duration,
            in_flight,
            method_in_flight,
            host_total,
            host_duration,
            features,
            host_info,
            kubelet_registered,
            kubelet_registration_failures,
            report: RwLock::new(None),
        }
    }
}

/// Tracks one RPC; records its outcome when finished.
/// Counts one RPC in flight until dropped. A handler future that tonic drops
/// (the caller went away) never reaches `finish`; it is counted as Cancelled
/// so the in-flight gauge cannot creep upwards.
pub struct RpcTimer<'a> {
    metrics: &'a Metrics,
    method: &'static str,
    started: std::time::Instant,
    code: Option<tonic::Code>,
}

impl Metrics {
    pub fn start_rpc(&self, method: &'static str) -> RpcTimer<'_> {
        self.in_flight.inc();
        self.method_in_flight.get_or_create(&MethodLabels { method: method.into() }).inc();
        RpcTimer { metrics: self, method, started: std::time::Instant::now(), code: None }
    }

    pub fn observe_host(&self, operation: &str, outcome: &str, took: Duration) {
        self.host_total.get_or_create(&HostLabels { operation: operation.into(), outcome: outcome.into() }).inc();
        self.host_duration.get_or_create(&OperationLabels { operation: operation.into() }).observe(took.as_secs_f64());
    }

    /// Publishes the capability report: a gauge per feature, the host's version and
    /// hotplug form, and the whole report (as JSON) for `/capabilities`.
    pub fn set_capabilities(&self, capabilities: CapabilitySnapshot) {
        for (feature, enabled) in capabilities.features {
            self.features.get_or_create(&FeatureLabels { feature }).set(i64::from(enabled));
        }
        self.host_info.clear();
        self.host_info
            .get_or_create(&HostInfoLabels { version: capabilities.host_version, hotplug: capabilities.hotplug })
            .set(1);
        *self.report.write().unwrap_or_else(|p| p.into_inner()) = Some(capabilities.report);
    }

    /// What the kubelet said about this plugin's registration.
    pub fn set_kubelet_registration(&self, registered: bool) {
        self.kubelet_registered.set(i64::from(registered));
        if !registered {
            self.kubelet_registration_failures.inc();
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

impl RpcTimer<'_> {
    pub fn finish(mut self, code: tonic::Code) {
        self.code = Some(code);
    }
}

impl Drop for RpcTimer<'_> {
    fn drop(&mut self) {
        let code = format!("{:?}", self.code.unwrap_or(tonic::Code::Cancelled));
        self.metrics.rpc_total.get_or_create(&RpcLabels { method: self.method.into(), code }).inc();
        self.metrics
            .rpc_duration
            .get_or_create(&MethodLabels { method: self.method.into() })
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics.in_flight.dec();
        self.metrics.method_in_flight.get_or_create(&MethodLabels { method: self.method.into() }).dec();
    }
}

async fn metrics_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], m.render())
}

async fn capabilities_handler(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    let report = m.report.read().unwrap_or_else(|p| p.into_inner()).clone();
    match report {
        Some(r) => (StatusCode::OK, axum::Json(r)).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "not probed yet").into_response(),
    }
}

/// Binds the metrics address. Part of starting up, not of serving: the chart's
/// liveness probe asks this port's `/healthz`, so a driver that could not bind
/// it (the port taken on a host-network node) would run on unprobed, or be
/// probed by whatever holds the port, and restarted minutes later for no
/// reason it says. It fails at start instead, naming the address.
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("binding the metrics address {address}: {e}")))
}

/// Serves `/metrics`, `/healthz` and `/capabilities` on `listener` until shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_handler))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/capabilities", axum::routing::get(capabilities_handler))
        .with_state(metrics);
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "serving metrics");
    }
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_metrics_port_is_an_error_that_names_the_address() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let address = taken.local_addr().expect("its address");
        let err = bind(address).await.expect_err("the port is taken");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&format!("binding the metrics address {address}")), "{err}");
    }

    #[test]
    fn finished_and_abandoned_rpcs_both_leave_the_in_flight_gauge() {
        let m = Metrics::default();
        m.start_rpc("NodeStageVolume").finish(tonic::Code::Ok);
        {
            let _abandoned = m.start_rpc("NodeStageVolume");
            assert!(m.render().contains("harvester_csi_csi_operations_in_flight 1\n"), "{}", m.render());
        }
        let text = m.render();
        assert!(text.contains("harvester_csi_csi_operations_in_flight 0\n"), "{text}");
        assert!(text.contains(r#"csi_method_operations_in_flight{method="NodeStageVolume"} 0"#), "{text}");
        assert!(text.contains(r#"csi_operations_total{method="NodeStageVolume",code="Ok"} 1"#), "{text}");
        assert!(text.contains(r#"csi_operations_total{method="NodeStageVolume",code="Cancelled"} 1"#), "{text}");
    }
}
