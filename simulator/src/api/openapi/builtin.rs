//! Schemas of the built-in Kubernetes kinds, from k8s-openapi's JSON schemas
//! (its `schemars` feature: the published definitions, with descriptions,
//! generated from the Kubernetes 1.33 OpenAPI document). One generator
//! collects every definition the kinds reference, under the names the
//! apiserver uses (`io.k8s.api.core.v1.Pod`), with `#/definitions/` references.

use k8s_openapi::api::{authorization::v1 as authorization, coordination::v1 as coordination};
use k8s_openapi::api::{core::v1 as core, rbac::v1 as rbac, storage::v1 as storage};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::generate::SchemaSettings;
use k8s_openapi::schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value};

pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(super) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(super) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

pub(super) struct Builtins {
    generator: SchemaGenerator,
}

impl Builtins {
    pub(super) fn new() -> Self {
        // Plain JSON Schema without transforms: keeps `description` next to
        // `$ref`, as the apiserver's own documents do.
        let settings = SchemaSettings::draft07().with(|s| {
            s.definitions_path = "/definitions".into();
            s.meta_schema = None;
            s.transforms.clear();
        });
        let mut b = Self { generator: settings.into_generator() };
        // What every document needs: object metadata (CRDs refer to it) and the
        // request and response types of the operations.
        b.add::<meta::ObjectMeta>();
        b.add::<meta::Status>();
        b.add::<meta::DeleteOptions>();
        b.add::<meta::Patch>();
        b
    }

    fn add<T: JsonSchema>(&mut self) -> String {
        self.generator.subschema_for::<T>();
        T::schema_name().into_owned()
    }

    /// Adds the schema of a built-in kind and returns its definition name.
    pub(super) fn kind(&mut self, group: &str, kind: &str) -> Option<String> {
        Some(match (group, kind) {
            ("", "Namespace") => self.add::<core::Namespace>(),
            ("", "Node") => self.add::<core::Node>(),
            ("", "PersistentVolume") => self.add::<core::PersistentVolume>(),
            ("", "PersistentVolumeClaim") => self.add::<core::PersistentVolumeClaim>(),
            ("", "Pod") => self.add::<core::Pod>(),
            ("", "Secret") => self.add::<core::Secret>(),
            ("", "ServiceAccount") => self.add::<core::ServiceAccount>(),
            ("", "ConfigMap") => self.add::<core::ConfigMap>(),
            ("", "Event") => self.add::<core::Event>(),
            ("", "Service") => self.add::<core::Service>(),
            ("", "Endpoints") => self.add::<core::Endpoints>(),
            ("storage.k8s.io", "StorageClass") => self.add::<storage::StorageClass>(),
            ("storage.k8s.io", "VolumeAttachment") => self.add::<storage::VolumeAttachment>(),
            ("storage.k8s.io", "CSIDriver") => self.add::<storage::CSIDriver>(),
            ("storage.k8s.io", "CSINode") => self.add::<storage::CSINode>(),
            ("rbac.authorization.k8s.io", "Role") => self.add::<rbac::Role>(),
            ("rbac.authorization.k8s.io", "ClusterRole") => self.add::<rbac::ClusterRole>(),
            ("rbac.authorization.k8s.io", "RoleBinding") => self.add::<rbac::RoleBinding>(),
            ("rbac.authorization.k8s.io", "ClusterRoleBinding") => self.add::<rbac::ClusterRoleBinding>(),
            ("coordination.k8s.io", "Lease") => self.add::<coordination::Lease>(),
            ("authorization.k8s.io", "SelfSubjectAccessReview") => self.add::<authorization::SelfSubjectAccessReview>(),
            ("authorization.k8s.io", "SelfSubjectRulesReview") => self.add::<authorization::SelfSubjectRulesReview>(),
            _ => return None,
        })
    }

    /// Every definition collected, by name.
    pub(super) fn into_definitions(mut self) -> Map<String, Value> {
        self.generator.take_definitions(false)
    }
}
