//! The operations the server offers on each served kind, in a neutral form
//! that `v2` and `v3` render. kubectl reads two things from them: that PATCH
//! of a kind (found by `x-kubernetes-group-version-kind`) takes the
//! `fieldValidation` query parameter (then it leaves validation to the
//! server), and which patch types PATCH accepts (strategic merge only for
//! built-in kinds: its client-side apply computes one only when offered).

use super::builtin::{DELETE_OPTIONS, PATCH, STATUS};
use super::definitions::ServedKind;
use crate::api::ops::PatchType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ParamType {
    String,
    Boolean,
    Integer,
}

#[derive(Debug, Clone)]
pub(super) struct Param {
    pub name: &'static str,
    /// `path` or `query`.
    pub location: &'static str,
    pub description: &'static str,
    pub ty: ParamType,
}

#[derive(Debug, Clone)]
pub(super) struct Body {
    pub definition: String,
    pub media_types: Vec<&'static str>,
}

#[derive(Debug, Clone)]
pub(super) struct Operation {
    /// HTTP method, lower case.
    pub method: &'static str,
    /// `x-kubernetes-action`.
    pub action: &'static str,
    pub operation_id: String,
    pub description: String,
    pub tag: String,
    pub params: Vec<Param>,
    pub body: Option<Body>,
    /// Definitions of the 200 (and 201) responses.
    pub response: String,
    pub gvk: serde_json::Value,
}

#[derive(Debug, Clone)]
pub(super) struct PathItem {
    pub path: String,
    pub operations: Vec<Operation>,
}

/// What responses and bodies other than PATCH are served as.
pub(super) const PRODUCES: &[&str] = &["application/json", "application/yaml"];
const CONSUMES: &[&str] = &["application/json", "application/yaml"];

const NAME: Param = Param { name: "name", location: "path", description: "name of the object", ty: ParamType::String };
const NAMESPACE: Param = Param {
    name: "namespace",
    location: "path",
    description: "object name and auth scope, such as for teams and projects",
    ty: ParamType::String,
};
const PRETTY: Param = Param {
    name: "pretty",
    location: "query",
    description: "If 'true', then the output is pretty printed.",
    ty: ParamType::String,
};
const DRY_RUN: Param = Param {
    name: "dryRun",
    location: "query",
    description: "When present, indicates that modifications should not be persisted. The only valid value is All.",
    ty: ParamType::String,
};
const FIELD_MANAGER: Param = Param {
    name: "fieldManager",
    location: "query",
    description: "A name associated with the actor or entity that is making these changes.",
    ty: ParamType::String,
};
const FIELD_VALIDATION: Param = Param {
    name: "fieldValidation",
    location: "query",
    description: "How the server treats unknown or duplicate fields: Ignore, Warn or Strict.",
    ty: ParamType::String,
};
const FORCE: Param = Param {
    name: "force",
    location: "query",
    description: "Force is going to \"force\" Apply requests: re-acquire fields owned by other managers.",
    ty: ParamType::Boolean,
};
const LIST_PARAMS: &[Param] = &[
    Param { name: "labelSelector", location: "query", description: "A selector on labels.", ty: ParamType::String },
    Param { name: "fieldSelector", location: "query", description: "A selector on fields.", ty: ParamType::String },
    Param { name: "limit", location: "query", description: "Most items to return.", ty: ParamType::Integer },
    Param { name: "continue", location: "query", description: "Where a paged list goes on.", ty: ParamType::String },
    Param {
        name: "resourceVersion",
        location: "query",
        description: "The version to list or watch from.",
        ty: ParamType::String,
    },
    Param { name: "watch", location: "query", description: "Watch for changes.", ty: ParamType::Boolean },
    Param {
        name: "timeoutSeconds",
        location: "query",
        description: "How long a list or watch may take.",
        ty: ParamType::Integer,
    },
];

/// `CoreV1`, `StorageV1`, `KubevirtIoV1`: how the apiserver names groups in operation IDs.
fn group_id(group: &str, version: &str, builtin: bool) -> String {
    let name = if group.is_empty() {
        "core"
    } else if builtin {
        group.strip_suffix(".k8s.io").unwrap_or(group)
    } else {
        group
    };
    let mut id: String = name.split(['.', '-']).map(capitalize).collect();
    id.push_str(&capitalize(version));
    id
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn base_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

/// The paths and operations of one served kind.
pub(super) fn for_kind(k: &ServedKind) -> Vec<PathItem> {
    let Some(rt) = &k.rt else {
        return vec![review_path(k)];
    };
    let gid = group_id(k.group, k.version, rt.builtin);
    let base = base_path(k.group, k.version);
    let (collection, scope_params, namespaced) = if rt.namespaced {
        (format!("{base}/namespaces/{{namespace}}/{}", rt.plural), vec![NAMESPACE], "Namespaced")
    } else {
        (format!("{base}/{}", rt.plural), vec![], "")
    };
    let item = format!("{collection}/{{name}}");
    let op = |method: &'static str, action: &'static str, verb: &str, what: &str, params: Vec<Param>| Operation {
        method,
        action,
        operation_id: format!("{verb}{gid}{namespaced}{}{what}", rt.kind),
        description: format!("{verb} {}{}", rt.kind, if what.is_empty() { String::new() } else { format!(" {what}") }),
        tag: gid.clone(),
        params,
        body: None,
        response: k.definition.clone(),
        gvk: k.gvk(),
    };
    let with = |extra: &[Param], scope: &[Param], name: bool| {
        let mut p: Vec<Param> = scope.to_vec();
        if name {
            p.push(NAME);
        }
        p.push(PRETTY);
        p.extend_from_slice(extra);
        p
    };
    let write = [DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
    let patch_params = [DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE];
    let object_body = || Some(Body { definition: k.definition.clone(), media_types: CONSUMES.to_vec() });
    let patch_body = || Some(Body { definition: PATCH.into(), media_types: PatchType::accepted(rt.builtin).to_vec() });

    let mut list = op("get", "list", "list", "", with(LIST_PARAMS, &scope_params, false));
    list.operation_id = format!("list{gid}{namespaced}{}", rt.kind);
    let mut create = op("post", "post", "create", "", with(&write, &scope_params, false));
    create.body = object_body();
    let mut delete_collection =
        op("delete", "deletecollection", "deletecollection", "", with(LIST_PARAMS, &scope_params, false));
    delete_collection.operation_id = format!("deleteCollection{gid}{namespaced}{}", rt.kind);
    delete_collection.body = Some(Body { definition: DELETE_OPTIONS.into(), media_types: CONSUMES.to_vec() });
    delete_collection.response = STATUS.into();

    let read = op("get", "get", "read", "", with(&[], &scope_params, true));
    let mut replace = op("put", "put", "replace", "", with(&write, &scope_params, true));
    replace.body = object_body();
    let mut patch = op("patch", "patch", "patch", "", with(&patch_params, &scope_params, true));
    patch.body = patch_body();
    let mut delete = op("delete", "delete", "delete", "", with(&[DRY_RUN], &scope_params, true));
    delete.body = Some(Body { definition: DELETE_OPTIONS.into(), media_types: CONSUMES.to_vec() });

    let mut items = vec![
        PathItem { path: collection, operations: vec![list.clone(), create, delete_collection] },
        PathItem { path: item.clone(), operations: vec![read, replace, patch, delete] },
    ];
    if rt.namespaced {
        let mut all = list;
        all.operation_id = format!("list{gid}{}ForAllNamespaces", rt.kind);
        all.params = with(LIST_PARAMS, &[], false);
        items.push(PathItem { path: format!("{base}/{}", rt.plural), operations: vec![all] });
    }
    if rt.status_subresource {
        let read = op("get", "get", "read", "Status", with(&[], &scope_params, true));
        let mut replace = op("put", "put", "replace", "Status", with(&write, &scope_params, true));
        replace.body = object_body();
        let mut patch = op("patch", "patch", "patch", "Status", with(&patch_params, &scope_params, true));
        patch.body = patch_body();
        items.push(PathItem { path: format!("{item}/status"), operations: vec![read, replace, patch] });
    }
    items
}

/// The reviews are created and answered, never stored.
fn review_path(k: &ServedKind) -> PathItem {
    let gid = group_id(k.group, k.version, true);
    let plural = format!("{}s", k.kind.to_lowercase());
    PathItem {
        path: format!("{}/{plural}", base_path(k.group, k.version)),
        operations: vec![Operation {
            method: "post",
            action: "post",
            operation_id: format!("create{gid}{}", k.kind),
            description: format!("create a {}", k.kind),
            tag: gid,
            params: vec![DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, PRETTY],
            body: Some(Body { definition: k.definition.clone(), media_types: CONSUMES.to_vec() }),
            response: k.definition.clone(),
            gvk: k.gvk(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::all_types;

    fn served(plural: &str, group: &str) -> ServedKind {
        let rt = all_types().into_iter().find(|t| t.plural == plural && t.group == group).expect("known type");
        ServedKind { group: rt.group, version: rt.versions[0], kind: rt.kind, definition: "d".into(), rt: Some(rt) }
    }

    #[test]
    fn operation_ids_follow_the_apiserver() {
        assert_eq!(group_id("", "v1", true), "CoreV1");
        assert_eq!(group_id("rbac.authorization.k8s.io", "v1", true), "RbacAuthorizationV1");
        assert_eq!(group_id("snapshot.storage.k8s.io", "v1", false), "SnapshotStorageK8sIoV1");
        let paths = for_kind(&served("persistentvolumeclaims", ""));
        let ids: Vec<&str> = paths.iter().flat_map(|p| p.operations.iter().map(|o| o.operation_id.as_str())).collect();
        assert!(ids.contains(&"readCoreV1NamespacedPersistentVolumeClaim"), "{ids:?}");
        assert!(ids.contains(&"listCoreV1PersistentVolumeClaimForAllNamespaces"), "{ids:?}");
        assert!(ids.contains(&"patchCoreV1NamespacedPersistentVolumeClaimStatus"), "{ids:?}");
    }

    #[test]
    fn patch_takes_field_validation_and_strategic_merge_only_for_builtins() {
        let patch_of = |k: &ServedKind| {
            for_kind(k).into_iter().flat_map(|p| p.operations).find(|o| o.method == "patch").expect("a PATCH operation")
        };
        let pvc = patch_of(&served("persistentvolumeclaims", ""));
        assert!(pvc.params.iter().any(|p| p.name == "fieldValidation" && p.location == "query"));
        assert!(pvc.body.as_ref().is_some_and(|b| b.media_types.contains(&"application/strategic-merge-patch+json")));
        let vm = patch_of(&served("virtualmachines", "kubevirt.io"));
        assert!(vm.body.as_ref().is_some_and(|b| !b.media_types.contains(&"application/strategic-merge-patch+json")));
        assert_eq!(vm.gvk["kind"], "VirtualMachine");
    }
}
