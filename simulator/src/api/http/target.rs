//! What the verb handlers act on: the served type, the addressed object and
//! the request's options, resolved by `resource`.

use crate::api::ops::WriteOptions;
use crate::api::request::ResourceRequest;
use crate::api::resources::ResourceType;
use crate::api::selector::{FieldSelector, LabelSelector};

/// What a write does with fields the schema does not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::api::http) enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// What the verb handlers act on.
pub(in crate::api::http) struct Target {
    pub rt: ResourceType,
    pub req: ResourceRequest,
    pub namespace: String,
    pub name: String,
    /// `""` or `status`.
    pub subresource: String,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub write: WriteOptions,
    /// The client asked for a `meta.k8s.io` Table (kubectl get).
    pub as_table: bool,
    pub include_object: String,
    pub field_validation: FieldValidation,
}
