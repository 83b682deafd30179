//! Write and read semantics of the API server, shared by the HTTP layer and the
//! in-process controllers: metadata bookkeeping, status subresources, finalizers,
//! validation and admission, optimistic concurrency.

use std::sync::{Arc, RwLock};

use rand::Rng;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult, Cause};
use super::meta;
use super::patch::{self, PatchError};
use super::resources::{Registry, ResourceKey, ResourceType};
use super::store::{resource_version, Store, StoreError};
use super::validate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// What an admission plugin sees.
pub struct AdmissionRequest<'a> {
    pub operation: Operation,
    pub resource: &'a ResourceType,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub old: Option<&'a Value>,
    pub new: Option<&'a Value>,
}

/// A webhook: Harvester's, KubeVirt's and Longhorn's validating/mutating rules.
pub trait Admission: Send + Sync {
    fn mutate(&self, _api: &Api, _op: Operation, _rt: &ResourceType, _obj: &mut Value) -> ApiResult<()> {
        Ok(())
    }
    fn validate(&self, _api: &Api, _req: &AdmissionRequest<'_>) -> ApiResult<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }

    /// What PATCH accepts, in the order the apiserver lists it in a 415: CRDs
    /// take no strategic merge patch.
    pub fn accepted(builtin: bool) -> &'static [&'static str] {
        if builtin {
            &[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml",
            ]
        } else {
            &["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    /// In-process controllers create objects with their status already set;
    /// API clients cannot (status is reset on create for status-subresource types).
    pub keep_status: bool,
    pub field_manager: Option<String>,
    pub force: bool,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

pub struct Api {
    pub store: Arc<Store>,
    pub registry: Registry,
    admission: RwLock<Vec<Arc<dyn Admission>>>,
}

const GENERATE_NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..5).map(|_| GENERATE_NAME_ALPHABET[rng.random_range(0..GENERATE_NAME_ALPHABET.len())] as char).collect()
}

fn store_err(rt: &ResourceType, name: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found(rt.group, rt.plural, name),
        StoreError::AlreadyExists => ApiError::already_exists(rt.group, rt.plural, name),
        StoreError::Conflict => ApiError::stale(rt.group, rt.plural, name),
    }
}

/// Whether anything other than metadata and status differs (bumps `generation`).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    strip(old) != strip(new)
}

/// Equality ignoring the fields the server stamps on every write.
fn same_content(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        v
    };
    strip(old) == strip(new)
}

impl Api {
    pub fn new(store: Arc<Store>, registry: Registry) -> Self {
        Self { store, registry, admission: RwLock::new(Vec::new()) }
    }

    pub fn add_admission(&self, plugin: Arc<dyn Admission>) {
        self.admission.write().unwrap_or_else(|p| p.into_inner()).push(plugin);
    }

    fn plugins(&self) -> Vec<Arc<dyn Admission>> {
        self.admission.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Looks a type up by `(group, plural)`; controllers use this for the kinds
    /// the profile may or may not serve.
    pub fn resource(&self, group: &str, plural: &str) -> Option<ResourceType> {
        self.registry.by_key(&ResourceKey::new(group, plural)).cloned()
    }

    pub fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> ApiResult<Arc<Value>> {
        self.store.get(&rt.key(), namespace, name).ok_or_else(|| ApiError::not_found(rt.group, rt.plural, name))
    }

    pub fn get_opt(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.store.get(&ResourceKey::new(group, plural), namespace, name)
    }

    pub fn list(&self, group: &str, plural: &str, namespace: Option<&str>) -> Vec<Arc<Value>> {
        self.store.list(&ResourceKey::new(group, plural), namespace).0
    }

    fn check_namespace(&self, rt: &ResourceType, namespace: &str) -> ApiResult<()> {
        if !rt.namespaced {
            return Ok(());
        }
        if namespace.is_empty() {
            return Err(ApiError::bad_request("the namespace of the object is required"));
        }
        if self.store.get(&ResourceKey::new("", "namespaces"), "", namespace).is_none() {
            return Err(ApiError::not_found("", "namespaces", namespace));
        }
        Ok(())
    }

    pub fn create(
        &self,
        rt: &ResourceType,
        namespace: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Arc<Value>> {
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body of the request is not a JSON object"));
        }
        let namespace = if rt.namespaced { namespace } else { "" };
        {
            let m = obj.as_object_mut().ok_or_else(|| ApiError::bad_request("not an object"))?;
            m.entry("apiVersion").or_insert_with(|| json!(rt.api_version()));
            m.entry("kind").or_insert_with(|| json!(rt.kind));
        }
        let body_ns = meta::namespace(&obj).to_string();
        if rt.namespaced && !body_ns.is_empty() && body_ns != namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut name = meta::name(&obj).to_string();
        if name.is_empty() {
            let prefix = meta::str_at(&obj, "/metadata/generateName").to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    rt.group,
                    rt.kind,
                    "",
                    vec![Cause {
                        reason: "FieldValueRequired",
                        message: "Required value: name or generateName is required".into(),
                        field: "metadata.name".into(),
                    }],
                ));
            }
            // Retry on the (rare) collision, as newer apiservers do.
            for _ in 0..8 {
                let candidate = format!("{prefix}{}", random_suffix());
                if self.store.get(&rt.key(), namespace, &candidate).is_none() {
                    name = candidate;
                    break;
                }
            }
            if name.is_empty() {
                return Err(ApiError::already_exists(rt.group, rt.plural, &prefix));
            }
        }
        self.check_namespace(rt, namespace)?;
        {
            let m = meta::metadata_mut(&mut obj);
            m.insert("name".into(), json!(name));
            if rt.namespaced {
                m.insert("namespace".into(), json!(namespace));
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
            m.insert("generation".into(), json!(1));
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
        }
        if rt.status_subresource && !opts.keep_status {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        let causes = validate::on_create(rt, &obj);
        if !causes.is_empty() {
            return Err(ApiError::invalid(rt.group, rt.kind, &name, causes));
        }
        let plugins = self.plugins();
        for p in &plugins {
            p.mutate(self, Operation::Create, rt, &mut obj)?;
        }
        for p in &plugins {
            p.validate(
                self,
                &AdmissionRequest {
                    operation: Operation::Create,
                    resource: rt,
                    subresource: "",
                    namespace,
                    name: &name,
                    old: None,
                    new: Some(&obj),
                },
            )?;
        }
        if opts.dry_run {
            if self.store.get(&rt.key(), namespace, &name).is_some() {
                return Err(ApiError::already_exists(rt.group, rt.plural, &name));
            }
            return Ok(Arc::new(obj));
        }
        self.store.create(&rt.key(), namespace, &name, obj).map_err(|e| store_err(rt, &name, e))
    }

    /// PUT semantics. `subresource` is "" or "status".
    pub fn replace(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        subresource: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Arc<Value>> {
        let namespace = if rt.namespaced { namespace } else { "" };
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body of the request is not a JSON object"));
        }
        let body_name = meta::name(&obj);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta::namespace(&obj);
        if rt.namespaced && !body_ns.is_empty() && body_ns != namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let rv_text = meta::str_at(&obj, "/metadata/resourceVersion").to_string();
        let expected = if rv_text.is_empty() {
            if rt.is_crd() {
                return Err(ApiError::invalid(
                    rt.group,
                    rt.kind,
                    name,
                    vec![Cause::invalid_raw("metadata.resourceVersion", "0x0", "must be specified for an update")],
                ));
            }
            None
        } else {
            Some(
                rv_text
                    .parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion \"{rv_text}\"")))?,
            )
        };
        let old = self.get(rt, namespace, name)?;
        self.commit_update(rt, namespace, name, subresource, &old, obj, expected, opts)
    }

    /// Builds the object to store from `old` and the client's `incoming`, checks it,
    /// and writes it. Shared by PUT, PATCH and controller updates.
    #[allow(clippy::too_many_arguments)]
    fn commit_update(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        subresource: &str,
        old: &Arc<Value>,
        incoming: Value,
        expected_rv: Option<u64>,
        opts: &WriteOptions,
    ) -> ApiResult<Arc<Value>> {
        if let Some(want) = expected_rv {
            if want != resource_version(old) {
                return Err(ApiError::stale(rt.group, rt.plural, name));
            }
        }
        let mut new = match subresource {
            "" => {
                let mut new = incoming;
                if rt.status_subresource {
                    if let Some(m) = new.as_object_mut() {
                        match old.get("status") {
                            Some(s) => m.insert("status".into(), s.clone()),
                            None => m.remove("status"),
                        };
                    }
                }
                new
            }
            "status" if rt.status_subresource => {
                let mut new = (**old).clone();
                if let Some(m) = new.as_object_mut() {
                    match incoming.get("status") {
                        Some(s) => m.insert("status".into(), s.clone()),
                        None => m.remove("status"),
                    };
                }
                new
            }
            other => {
                return Err(ApiError::not_found(rt.group, &format!("{}/{other}", rt.plural), name));
            }
        };
        // Fields the server owns.
        {
            let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
            let m = meta::metadata_mut(&mut new);
            for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
                match old_meta.get(field) {
                    Some(v) => m.insert(field.into(), v.clone()),
                    None => m.remove(field),
                };
            }
            m.insert("name".into(), json!(name));
            if rt.namespaced {
                m.insert("namespace".into(), json!(namespace));
            }
        }
        if let Some(m) = new.as_object_mut() {
            m.insert("apiVersion".into(), json!(meta::str_at(old, "/apiVersion")));
            m.insert("kind".into(), json!(rt.kind));
        }
        if meta::is_deleting(old) {
            let before = meta::finalizers(old);
            let mut added: Vec<String> = meta::finalizers(&new).into_iter().filter(|f| !before.contains(f)).collect();
            if !added.is_empty() {
                added.sort();
                let listed = added.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join(", ");
                return Err(ApiError::invalid(
                    rt.group,
                    rt.kind,
                    name,
                    vec![Cause::forbidden(
                        "metadata.finalizers",
                        &format!(
                            "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{listed}}}"
                        ),
                    )],
                ));
            }
        }
        if spec_changed(old, &new) {
            let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(1) + 1;
            meta::metadata_mut(&mut new).insert("generation".into(), json!(generation));
        }
        if same_content(old, &new) {
            return Ok(old.clone());
        }
        let causes = validate::on_update(rt, old, &new);
        if !causes.is_empty() {
            return Err(ApiError::invalid(rt.group, rt.kind, name, causes));
        }
        let plugins = self.plugins();
        for p in &plugins {
            p.mutate(self, Operation::Update, rt, &mut new)?;
        }
        for p in &plugins {
            p.validate(
                self,
                &AdmissionRequest {
                    operation: Operation::Update,
                    resource: rt,
                    subresource,
                    namespace,
                    name,
                    old: Some(old),
                    new: Some(&new),
                },
            )?;
        }
        if opts.dry_run {
            return Ok(Arc::new(new));
        }
        let old_rv = resource_version(old);
        if meta::is_deleting(&new) && meta::finalizers(&new).is_empty() {
            return self.store.remove(&rt.key(), namespace, name, Some(old_rv)).map_err(|e| store_err(rt, name, e));
        }
        self.store.update(&rt.key(), namespace, name, new, Some(old_rv)).map_err(|e| store_err(rt, name, e))
    }

    /// PATCH semantics: applied to the current object; retried internally when a
    /// concurrent writer wins, unless the patch itself pins a resourceVersion.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        subresource: &str,
        patch_type: PatchType,
        body: &Value,
        opts: &WriteOptions,
    ) -> ApiResult<Arc<Value>> {
        let namespace = if rt.namespaced { namespace } else { "" };
        if patch_type == PatchType::Strategic && rt.is_crd() {
            return Err(ApiError::unsupported_media_type(PatchType::accepted(false)));
        }
        if patch_type == PatchType::Apply && opts.field_manager.as_deref().unwrap_or("").is_empty() {
            return Err(ApiError::invalid("meta.k8s.io", "PatchOptions", "", vec![Cause::required("fieldManager")]));
        }
        let pinned_rv = match patch_type {
            PatchType::Merge | PatchType::Strategic | PatchType::Apply => {
                body.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(String::from)
            }
            PatchType::Json => None,
        };
        for _attempt in 0..16 {
            let old = match self.store.get(&rt.key(), namespace, name) {
                Some(o) => o,
                None if patch_type == PatchType::Apply && subresource.is_empty() => {
                    return self.create(rt, namespace, body.clone(), opts);
                }
                None => return Err(ApiError::not_found(rt.group, rt.plural, name)),
            };
            if let Some(pin) = &pinned_rv {
                if *pin != resource_version(&old).to_string() {
                    return Err(ApiError::stale(rt.group, rt.plural, name));
                }
            }
            let mut target = (*old).clone();
            match patch_type {
                PatchType::Merge | PatchType::Apply => patch::merge_patch(&mut target, body),
                PatchType::Json => patch::json_patch(&mut target, body).map_err(patch_error)?,
                PatchType::Strategic => {
                    patch::strategic_merge_patch(&mut target, body, rt.kind).map_err(patch_error)?
                }
            }
            match self.commit_update(rt, namespace, name, subresource, &old, target, Some(resource_version(&old)), opts)
            {
                Err(e) if e.reason == "Conflict" && pinned_rv.is_none() && e.message.contains("has been modified") => {
                    continue
                }
                other => return other,
            }
        }
        Err(ApiError::stale(rt.group, rt.plural, name))
    }

    pub fn delete(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Arc<Value>> {
        let namespace = if rt.namespaced { namespace } else { "" };
        let old = self.get(rt, namespace, name)?;
        if let Some(uid) = &opts.precondition_uid {
            if uid != meta::uid(&old) {
                return Err(ApiError::conflict(
                    rt.group,
                    rt.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&old)
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            if *rv != resource_version(&old).to_string() {
                return Err(ApiError::conflict(
                    rt.group,
                    rt.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        resource_version(&old)
                    ),
                ));
            }
        }
        for p in &self.plugins() {
            p.validate(
                self,
                &AdmissionRequest {
                    operation: Operation::Delete,
                    resource: rt,
                    subresource: "",
                    namespace,
                    name,
                    old: Some(&old),
                    new: None,
                },
            )?;
        }
        if opts.dry_run {
            return Ok(old);
        }
        if !meta::finalizers(&old).is_empty() {
            if meta::is_deleting(&old) {
                return Ok(old);
            }
            let mut new = (*old).clone();
            let m = meta::metadata_mut(&mut new);
            m.insert("deletionTimestamp".into(), json!(meta::now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            return self
                .store
                .update(&rt.key(), namespace, name, new, Some(resource_version(&old)))
                .map_err(|e| store_err(rt, name, e));
        }
        self.store.remove(&rt.key(), namespace, name, Some(resource_version(&old))).map_err(|e| store_err(rt, name, e))
    }

    /// Read-modify-write for in-process controllers: `change` edits a copy and
    /// returns whether it changed anything; conflicts are retried.
    pub fn modify(
        &self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        subresource: &str,
        mut change: impl FnMut(&mut Value) -> bool,
    ) -> ApiResult<Arc<Value>> {
        for _ in 0..32 {
            let old = self.get(rt, namespace, name)?;
            let mut new = (*old).clone();
            if !change(&mut new) {
                return Ok(old);
            }
            let opts = WriteOptions { keep_status: true, ..Default::default() };
            match self.commit_update(rt, namespace, name, subresource, &old, new, Some(resource_version(&old)), &opts) {
                Err(e) if e.reason == "Conflict" && e.message.contains("has been modified") => continue,
                other => return other,
            }
        }
        Err(ApiError::stale(rt.group, rt.plural, name))
    }

    /// Creates with status kept (controllers), or returns the existing object.
    pub fn ensure(&self, rt: &ResourceType, namespace: &str, obj: Value) -> ApiResult<Arc<Value>> {
        let name = meta::name(&obj).to_string();
        if let Some(existing) = self.store.get(&rt.key(), if rt.namespaced { namespace } else { "" }, &name) {
            return Ok(existing);
        }
        match self.create(rt, namespace, obj, &WriteOptions { keep_status: true, ..Default::default() }) {
            Err(e) if e.reason == "AlreadyExists" => self.get(rt, namespace, &name),
            other => other,
        }
    }

    /// Deletes if present; absent is success (controllers clean up idempotently).
    pub fn delete_if_exists(&self, rt: &ResourceType, namespace: &str, name: &str) -> ApiResult<()> {
        match self.delete(rt, namespace, name, &DeleteOptions::default()) {
            Ok(_) => Ok(()),
            Err(e) if e.reason == "NotFound" => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn patch_error(e: PatchError) -> ApiError {
    match e {
        PatchError::Invalid { detail } => {
            tracing::debug!(%detail, "patch not applicable");
            ApiError::patch_rejected()
        }
        PatchError::TooManyOperations(n) => ApiError::too_large(format!(
            "The allowed maximum operations in a JSON patch is {}, got {n}",
            patch::MAX_JSON_PATCH_OPERATIONS
        )),
        PatchError::Malformed(m) => ApiError::bad_request(m),
    }
}
