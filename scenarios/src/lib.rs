//! The YAML end-to-end scenario suite: a runner that plays the Kubernetes side
//! (provisioner, attacher, kubelet, resizer, snapshotter) against the real
//! driver and a simulated Harvester, and checks guest objects, host objects
//! and data.

pub mod backend;
pub mod bench;
pub mod chaos;
pub mod cluster;
pub mod components;
pub mod csi;
pub mod deployment;
pub mod env;
pub mod model;
pub mod quantity;
pub mod report;
pub mod runner;
pub mod steps;
pub mod work_dir;

/// Why a scenario (or a step) failed, in words for the report.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);
