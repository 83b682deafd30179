//! The Harvester CSI driver: Identity, Controller and Node services for
//! Kubernetes clusters running in Harvester VMs. `host` is the only code that
//! talks to Harvester; `mount` is the only code that formats and mounts.

pub mod app;
pub mod capabilities;
pub mod cloud_config;
pub mod config;
pub mod contexts;
pub mod controller;
pub mod deadline;
pub mod error;
pub mod guard;
pub mod guest;
pub mod host;
pub mod identity;
pub mod metrics;
pub mod mount;
pub mod names;
pub mod node;
pub mod orphans;
pub mod registration;
pub mod rpc;
pub mod server;
