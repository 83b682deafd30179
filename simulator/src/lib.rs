//! A fake Harvester host cluster: a Kubernetes-compatible API server (HTTPS,
//! bearer tokens, RBAC, watches, patches) with controllers that behave like
//! Longhorn, KubeVirt, networkfs-manager and Harvester, real loop devices for
//! hot-plugged disks, version profiles v1.2–v1.8 and fault injection.

pub mod admin;
pub mod api;
pub mod controllers;
pub mod devices;
pub mod faults;
pub mod guest;
pub mod kubeconfig;
pub mod persist;
pub mod profiles;
pub mod seed;
pub mod sim;
pub mod tls;
pub mod world;

pub use sim::{SimConfig, SimError, Simulator};
