//! A Kubernetes-compatible API server engine: store, semantics, HTTP front.
//! Generic: it knows nothing about Harvester; controllers and profiles plug in.

pub mod authn;
pub mod crds;
pub mod discovery;
pub mod error;
pub mod http;
pub mod meta;
pub mod openapi;
pub mod ops;
pub mod patch;
pub mod protobuf;
pub mod quantity;
pub mod rbac;
pub mod request;
pub mod resources;
pub mod selector;
pub mod store;
pub mod table;
pub mod validate;
pub mod watch;
