//! The patch flavours a Kubernetes API server accepts on PATCH:
//! JSON merge patch (RFC 7386), JSON patch (RFC 6902), and strategic merge
//! patch, the Kubernetes-specific one that `kubectl apply`/`kubectl patch`
//! send for built-in kinds. The fourth flavour, server-side apply, is not
//! handled here.
//!
//! Every function works on a copy and only writes `target` on success, so a
//! rejected patch never leaves a half-applied object in the store.

use serde_json::{Map, Number, Value};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatchError {
    /// Patch could not be applied (failed `test`, path missing for
    /// remove/replace, bad pointer…). The API server answers 422 Invalid with
    /// a GENERIC message, so keep the detail only for logs.
    #[error("the server rejected our request due to an error in our request")]
    Invalid { detail: String },
    /// More than 10_000 JSON-patch operations → 413.
    #[error("The allowed maximum operations in a JSON patch is 10000, got {0}")]
    TooManyOperations(usize),
    /// Body is not a valid patch document at all (e.g. JSON patch that is not
    /// an array, op without `path`) → 400.
    #[error("{0}")]
    Malformed(String),
}

pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// `copy` is the one operation that lets a patch grow a document faster than
/// the patch itself (copying a subtree into itself doubles it each time), so
/// the API server caps the bytes it may add; this is its default
/// `JSONPatchMaxCopyBytes`.
const MAX_ACCUMULATED_COPY_BYTES: u64 = 3 * 1024 * 1024;

fn invalid(detail: impl Into<String>) -> PatchError {
    PatchError::Invalid { detail: detail.into() }
}

fn malformed(message: impl Into<String>) -> PatchError {
    PatchError::Malformed(message.into())
}

/// RFC 6902 §4.6 and strategic list merging compare JSON values "by value":
/// `1` and `1.0` are the same number, whereas `serde_json`'s `==` tells
/// integers and floats apart.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn number_eq(x: &Number, y: &Number) -> bool {
    // Integers are compared exactly: going through f64 would make distinct
    // values above 2^53 look equal.
    if x.is_f64() || y.is_f64() {
        x.as_f64() == y.as_f64()
    } else {
        x == y
    }
}

// ---------------------------------------------------------------------------
// JSON merge patch (RFC 7386)
// ---------------------------------------------------------------------------

/// RFC 7386: `null` deletes, objects merge recursively, everything else
/// (arrays included) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else {
        return;
    };
    for (key, value) in patch_map {
        if value.is_null() {
            target_map.remove(key);
        } else {
            merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

// ---------------------------------------------------------------------------
// JSON patch (RFC 6902)
// ---------------------------------------------------------------------------

enum Operation<'a> {
    Add { path: &'a str, value: &'a Value },
    Remove { path: &'a str },
    Replace { path: &'a str, value: &'a Value },
    Move { from: &'a str, path: &'a str },
    Copy { from: &'a str, path: &'a str },
    Test { path: &'a str, value: &'a Value },
}

/// RFC 6902 JSON patch. All operations are checked for shape before any is
/// applied, and they are applied to a copy, so `target` is either fully
/// patched or untouched.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Array(raw_ops) = patch else {
        // Same wording as the Go decoder behind the real API server.
        return Err(malformed(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
            json_type_name(patch)
        )));
    };
    if raw_ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations(raw_ops.len()));
    }
    let ops = raw_ops.iter().enumerate().map(|(i, op)| decode_operation(i, op)).collect::<Result<Vec<_>, _>>()?;
    let mut doc = target.clone();
    let mut copied_bytes = 0;
    for (i, op) in ops.iter().enumerate() {
        apply_operation(&mut doc, op, &mut copied_bytes).map_err(|e| invalid(format!("operation {i}: {e}")))?;
    }
    *target = doc;
    Ok(())
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn decode_operation(index: usize, raw: &Value) -> Result<Operation<'_>, PatchError> {
    let Value::Object(fields) = raw else {
        return Err(malformed(format!("json patch operation {index} is not an object")));
    };
    let string_field = |name: &str| {
        fields
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(format!("json patch operation {index} missing {name} field")))
    };
    // `"value": null` is a legitimate value, so only absence is an error.
    let value_field =
        || fields.get("value").ok_or_else(|| malformed(format!("json patch operation {index} missing value field")));
    let op = string_field("op")?;
    let path = string_field("path")?;
    Ok(match op {
        "add" => Operation::Add { path, value: value_field()? },
        "remove" => Operation::Remove { path },
        "replace" => Operation::Replace { path, value: value_field()? },
        "move" => Operation::Move { from: string_field("from")?, path },
        "copy" => Operation::Copy { from: string_field("from")?, path },
        "test" => Operation::Test { path, value: value_field()? },
        other => return Err(malformed(format!("json patch operation {index} has unsupported op {other:?}"))),
    })
}

fn apply_operation(doc: &mut Value, op: &Operation<'_>, copied_bytes: &mut u64) -> Result<(), String> {
    match *op {
        Operation::Add { path, value } => add_at(doc, &parse_pointer(path)?, value.clone(), path),
        Operation::Remove { path } => remove_at(doc, &parse_pointer(path)?, path).map(drop),
        Operation::Replace { path, value } => {
            let slot = resolve_mut(doc, &parse_pointer(path)?)
                .ok_or_else(|| format!("replace: path {path:?} does not exist"))?;
            *slot = value.clone();
            Ok(())
        }
        Operation::Move { from, path } => {
            let from_tokens = parse_pointer(from)?;
            let path_tokens = parse_pointer(path)?;
            if path_tokens.len() > from_tokens.len() && path_tokens.starts_with(&from_tokens) {
                return Err(format!("move: cannot move {from:?} into its own child {path:?}"));
            }
            let value = remove_at(doc, &from_tokens, from)?;
            add_at(doc, &path_tokens, value, path)
        }
        Operation::Copy { from, path } => {
            let source =
                resolve(doc, &parse_pointer(from)?).ok_or_else(|| format!("copy: from {from:?} does not exist"))?;
            // Measured before cloning so an oversized copy costs nothing.
            *copied_bytes = copied_bytes.saturating_add(serialized_len(source));
            if *copied_bytes > MAX_ACCUMULATED_COPY_BYTES {
                return Err(format!(
                    "Unable to complete the copy, the accumulated size increase of copy is {copied_bytes}, \
                     exceeding the limit {MAX_ACCUMULATED_COPY_BYTES}"
                ));
            }
            let value = source.clone();
            add_at(doc, &parse_pointer(path)?, value, path)
        }
        Operation::Test { path, value } => {
            let actual =
                resolve(doc, &parse_pointer(path)?).ok_or_else(|| format!("test: path {path:?} does not exist"))?;
            if json_eq(actual, value) {
                Ok(())
            } else {
                Err(format!("test: value at {path:?} differs"))
            }
        }
    }
}

fn serialized_len(value: &Value) -> u64 {
    struct ByteCounter(u64);
    impl std::io::Write for ByteCounter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len() as u64);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = ByteCounter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        // Cannot happen for a `Value`; counting it as too big fails safe.
        Err(_) => u64::MAX,
    }
}

/// RFC 6901 pointer to reference tokens; `""` is the whole document.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!("invalid JSON pointer {pointer:?}: must be empty or start with '/'"));
    };
    rest.split('/')
        .map(|token| {
            unescape_pointer_token(token).ok_or_else(|| format!("invalid JSON pointer {pointer:?}: bad '~' escape"))
        })
        .collect()
}

fn unescape_pointer_token(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next()? {
                '0' => out.push('~'),
                '1' => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// RFC 6901 array index: decimal digits without leading zeros.
fn parse_index(token: &str) -> Option<usize> {
    let well_formed =
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) && (token == "0" || !token.starts_with('0'));
    if well_formed {
        token.parse().ok()
    } else {
        None
    }
}

fn resolve<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(doc, |current, token| match current {
        Value::Object(map) => map.get(token),
        Value::Array(items) => items.get(parse_index(token)?),
        _ => None,
    })
}

fn resolve_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    let mut current = doc;
    for token in tokens {
        current = match current {
            Value::Object(map) => map.get_mut(token)?,
            Value::Array(items) => items.get_mut(parse_index(token)?)?,
            _ => return None,
        };
    }
    Some(current)
}

fn add_at(doc: &mut Value, tokens: &[String], value: Value, pointer: &str) -> Result<(), String> {
    let Some((last, parent_tokens)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match resolve_mut(doc, parent_tokens) {
        Some(Value::Object(map)) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            if last == "-" {
                items.push(value);
                return Ok(());
            }
            // Inserting at len is allowed (it appends), beyond is not.
            match parse_index(last) {
                Some(i) if i <= items.len() => {
                    items.insert(i, value);
                    Ok(())
                }
                _ => Err(format!("add: index out of range in {pointer:?}")),
            }
        }
        Some(_) => Err(format!("add: parent of {pointer:?} is not a container")),
        None => Err(format!("add: parent of {pointer:?} does not exist")),
    }
}

fn remove_at(doc: &mut Value, tokens: &[String], pointer: &str) -> Result<Value, String> {
    let Some((last, parent_tokens)) = tokens.split_last() else {
        return Err("remove: cannot remove the whole document".to_owned());
    };
    let missing = || format!("remove: path {pointer:?} does not exist");
    match resolve_mut(doc, parent_tokens) {
        Some(Value::Object(map)) => map.remove(last).ok_or_else(missing),
        Some(Value::Array(items)) => match parse_index(last) {
            Some(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

// ---------------------------------------------------------------------------
// Strategic merge patch
// ---------------------------------------------------------------------------

const PATCH_DIRECTIVE: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder/";

/// How a list field is merged, i.e. its `patchStrategy`/`patchMergeKey`
/// tags in the Kubernetes Go types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// No strategy: the patch list replaces the stored one, as in merge patch.
    Replace,
    /// `patchStrategy:"merge"` with a merge key: elements are maps matched
    /// by that key.
    MergeByKey(&'static str),
    /// `patchStrategy:"merge"` on a list of scalars: set union.
    Set,
}

/// Kinds whose `status.conditions` carry `patchMergeKey:"type"`.
const CONDITION_KINDS: &[&str] = &[
    "Pod",
    "Node",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "Namespace",
    "Service",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "ReplicationController",
];

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// `path` runs from the object root, with `[]` standing for "an element of
/// the list above".
fn list_strategy(kind: &str, path: &[&str]) -> ListStrategy {
    match path {
        ["metadata", "finalizers"] => return ListStrategy::Set,
        ["metadata", "ownerReferences"] => return ListStrategy::MergeByKey("uid"),
        ["status", "conditions"] if CONDITION_KINDS.contains(&kind) => return ListStrategy::MergeByKey("type"),
        _ => {}
    }
    if let Some(rest) = pod_spec_relative_path(kind, path) {
        return pod_spec_list_strategy(rest);
    }
    match (kind, path) {
        ("Pod", ["status", "podIPs"]) => ListStrategy::MergeByKey("ip"),
        ("Node", ["spec", "taints"]) => ListStrategy::MergeByKey("key"),
        ("Node", ["spec", "podCIDRs"]) => ListStrategy::Set,
        ("Node", ["status", "addresses"]) => ListStrategy::MergeByKey("type"),
        ("Service", ["spec", "ports"]) => ListStrategy::MergeByKey("port"),
        _ => ListStrategy::Replace,
    }
}

/// Workload kinds embed a PodSpec; `kubectl apply` on a Deployment relies
/// on its containers merging by name just like on a bare Pod.
fn pod_spec_relative_path<'a, 'b>(kind: &str, path: &'a [&'b str]) -> Option<&'a [&'b str]> {
    let prefix: &[&str] = match kind {
        "Pod" => &["spec"],
        "PodTemplate" => &["template", "spec"],
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicationController" => {
            &["spec", "template", "spec"]
        }
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return None,
    };
    path.strip_prefix(prefix)
}

fn pod_spec_list_strategy(path: &[&str]) -> ListStrategy {
    match path {
        [list] if CONTAINER_LISTS.contains(list) => ListStrategy::MergeByKey("name"),
        [list, "[]", field] if CONTAINER_LISTS.contains(list) => match *field {
            "env" => ListStrategy::MergeByKey("name"),
            "ports" => ListStrategy::MergeByKey("containerPort"),
            "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
            "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
            _ => ListStrategy::Replace,
        },
        ["volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates"] => ListStrategy::MergeByKey("name"),
        ["hostAliases"] => ListStrategy::MergeByKey("ip"),
        ["topologySpreadConstraints"] => ListStrategy::MergeByKey("topologyKey"),
        _ => ListStrategy::Replace,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Keep,
    /// The map carried `$patch: delete`; its parent must drop it.
    Delete,
}

/// Strategic merge patch for a built-in `kind`. Kinds without a table entry
/// merge like RFC 7386, but directives are still honoured and stripped.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value, kind: &str) -> Result<(), PatchError> {
    let Value::Object(patch_map) = patch else {
        return Err(malformed(format!("strategic merge patch must be a JSON object, got {}", json_type_name(patch))));
    };
    let mut merged = match target {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let merger = StrategicMerger { kind };
    match merger.merge_map(&mut merged, patch_map, &mut Vec::new())? {
        Outcome::Keep => {
            *target = Value::Object(merged);
            Ok(())
        }
        Outcome::Delete => Err(invalid("$patch: delete cannot remove the whole object")),
    }
}

struct StrategicMerger<'k> {
    kind: &'k str,
}

impl StrategicMerger<'_> {
    fn merge_map<'p>(
        &self,
        original: &mut Map<String, Value>,
        patch: &'p Map<String, Value>,
        path: &mut Vec<&'p str>,
    ) -> Result<Outcome, PatchError> {
        // Checked first so that a typo such as `$retainkeys` is reported
        // instead of being stored as a field.
        for key in patch.keys().filter(|k| k.starts_with('$')) {
            let known = key == PATCH_DIRECTIVE
                || key == RETAIN_KEYS_DIRECTIVE
                || key
                    .strip_prefix(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
                    .or_else(|| key.strip_prefix(SET_ELEMENT_ORDER_PREFIX))
                    .is_some_and(|field| !field.is_empty());
            if !known {
                return Err(malformed(format!("unknown strategic merge patch directive {key:?}")));
            }
        }

        match patch.get(PATCH_DIRECTIVE) {
            None => {}
            Some(Value::String(s)) if s == "merge" => {}
            Some(Value::String(s)) if s == "delete" => return Ok(Outcome::Delete),
            // Replacing is merging the rest of the patch into nothing, which
            // also strips any directives nested in it.
            Some(Value::String(s)) if s == "replace" => original.clear(),
            Some(other) => return Err(malformed(format!("unknown patch type: {other} in map"))),
        }

        if let Some(retain) = patch.get(RETAIN_KEYS_DIRECTIVE) {
            self.apply_retain_keys(original, patch, retain)?;
        }

        // Deletions run before the regular merge so that a patch may remove
        // some entries of a set and add others in the same request.
        for (key, value) in patch {
            let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST_PREFIX) else {
                continue;
            };
            let Value::Array(to_delete) = value else {
                return Err(malformed(format!("{key} must be a list")));
            };
            if let Some(Value::Array(items)) = original.get_mut(field) {
                items.retain(|item| !to_delete.iter().any(|d| json_eq(d, item)));
            }
        }

        for (key, value) in patch.iter().filter(|(k, _)| !k.starts_with('$')) {
            self.merge_field(original, key, value, path)?;
        }

        // Ordering applies to the merged result, so it runs last.
        for (key, value) in patch {
            let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER_PREFIX) else {
                continue;
            };
            let Value::Array(order) = value else {
                return Err(malformed(format!("{key} must be a list")));
            };
            path.push(field);
            let strategy = list_strategy(self.kind, path);
            path.pop();
            if let Some(Value::Array(items)) = original.get_mut(field) {
                apply_element_order(items, order, strategy);
            }
        }

        Ok(Outcome::Keep)
    }

    fn apply_retain_keys(
        &self,
        original: &mut Map<String, Value>,
        patch: &Map<String, Value>,
        retain: &Value,
    ) -> Result<(), PatchError> {
        let bad_format = || malformed("invalid patch: $retainKeys must be a list of strings");
        let Value::Array(items) = retain else {
            return Err(bad_format());
        };
        let keep = items.iter().map(|v| v.as_str().ok_or_else(bad_format)).collect::<Result<Vec<&str>, _>>()?;
        // Kubernetes answers 422 when the patch sets a field that its own
        // retain list would drop.
        let contradicting =
            patch.iter().find(|(k, v)| !k.starts_with('$') && !v.is_null() && !keep.contains(&k.as_str()));
        if let Some((key, _)) = contradicting {
            return Err(invalid(format!("patch content doesn't match retainKeys list: {key:?} is not retained")));
        }
        original.retain(|k, _| keep.contains(&k.as_str()));
        Ok(())
    }

    fn merge_field<'p>(
        &self,
        original: &mut Map<String, Value>,
        key: &'p str,
        patch_value: &'p Value,
        path: &mut Vec<&'p str>,
    ) -> Result<(), PatchError> {
        match patch_value {
            Value::Null => {
                original.remove(key);
            }
            Value::Object(patch_map) => {
                let slot = original.entry(key.to_owned()).or_insert_with(|| Value::Object(Map::new()));
                // A type change (e.g. scalar to map) is a plain replacement.
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                path.push(key);
                let outcome = match slot {
                    Value::Object(map) => self.merge_map(map, patch_map, path),
                    _ => Ok(Outcome::Keep),
                };
                path.pop();
                if outcome? == Outcome::Delete {
                    original.remove(key);
                }
            }
            Value::Array(patch_items) => {
                path.push(key);
                let strategy = list_strategy(self.kind, path);
                let slot = original.entry(key.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                let result = match slot {
                    Value::Array(items) => self.merge_list(items, patch_items, strategy, path),
                    _ => Ok(()),
                };
                path.pop();
                result?;
            }
            scalar => {
                original.insert(key.to_owned(), scalar.clone());
            }
        }
        Ok(())
    }

    /// `path` points at the list itself.
    fn merge_list<'p>(
        &self,
        original: &mut Vec<Value>,
        patch: &'p [Value],
        strategy: ListStrategy,
        path: &mut Vec<&'p str>,
    ) -> Result<(), PatchError> {
        let mut replace_all = strategy == ListStrategy::Replace;
        for item in patch {
            if list_directive(item)? == Some("replace") {
                replace_all = true;
            }
        }
        if replace_all {
            original.clear();
        }

        path.push("[]");
        let result = patch.iter().try_for_each(|item| self.merge_list_item(original, item, strategy, path));
        path.pop();
        result
    }

    fn merge_list_item<'p>(
        &self,
        original: &mut Vec<Value>,
        item: &'p Value,
        strategy: ListStrategy,
        path: &mut Vec<&'p str>,
    ) -> Result<(), PatchError> {
        match list_directive(item)? {
            None => {}
            Some("replace") => return Ok(()),
            Some("merge") => return Err(malformed("merging lists cannot yet be specified in the patch")),
            Some("delete") => {
                let ListStrategy::MergeByKey(key) = strategy else {
                    return Err(malformed(format!(
                        "$patch: delete needs a list with a merge key, found it in {}",
                        path.join(".")
                    )));
                };
                let wanted = item.get(key).ok_or_else(|| missing_merge_key(item, key))?;
                original.retain(|existing| !has_key_value(existing, key, wanted));
                return Ok(());
            }
            Some(other) => return Err(malformed(format!("unknown patch type: {other} in list element {item}"))),
        }

        match strategy {
            ListStrategy::Replace => {
                if let Some(value) = self.strip_directives(item, path)? {
                    original.push(value);
                }
            }
            ListStrategy::Set => {
                if let Some(value) = self.strip_directives(item, path)? {
                    if !original.iter().any(|existing| json_eq(existing, &value)) {
                        original.push(value);
                    }
                }
            }
            ListStrategy::MergeByKey(key) => {
                let Value::Object(patch_map) = item else {
                    // A scalar in a keyed list cannot be matched by key;
                    // Kubernetes falls back to merging scalars as a set.
                    if !original.iter().any(|existing| json_eq(existing, item)) {
                        original.push(item.clone());
                    }
                    return Ok(());
                };
                let wanted = patch_map.get(key).ok_or_else(|| missing_merge_key(item, key))?;
                match original.iter().position(|existing| has_key_value(existing, key, wanted)) {
                    Some(index) => {
                        let outcome = match original.get_mut(index) {
                            Some(Value::Object(existing)) => self.merge_map(existing, patch_map, path)?,
                            _ => Outcome::Keep,
                        };
                        if outcome == Outcome::Delete {
                            original.remove(index);
                        }
                    }
                    None => {
                        let mut fresh = Map::new();
                        if self.merge_map(&mut fresh, patch_map, path)? == Outcome::Keep {
                            original.push(Value::Object(fresh));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A value taken from the patch as-is still has to lose its directives
    /// (and, like any new map in a merge patch, its null fields); `None`
    /// means the value asked to be deleted.
    fn strip_directives<'p>(&self, value: &'p Value, path: &mut Vec<&'p str>) -> Result<Option<Value>, PatchError> {
        match value {
            Value::Object(patch_map) => {
                let mut fresh = Map::new();
                Ok(match self.merge_map(&mut fresh, patch_map, path)? {
                    Outcome::Keep => Some(Value::Object(fresh)),
                    Outcome::Delete => None,
                })
            }
            Value::Array(items) => {
                path.push("[]");
                let cleaned = items.iter().map(|item| self.strip_directives(item, path)).collect::<Result<Vec<_>, _>>();
                path.pop();
                Ok(Some(Value::Array(cleaned?.into_iter().flatten().collect())))
            }
            scalar => Ok(Some(scalar.clone())),
        }
    }
}

/// The `$patch` value of a list element, if it is a map carrying one.
fn list_directive(item: &Value) -> Result<Option<&str>, PatchError> {
    match item.get(PATCH_DIRECTIVE) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(malformed(format!("unknown patch type: {other} in list element"))),
    }
}

fn missing_merge_key(item: &Value, key: &str) -> PatchError {
    malformed(format!("map: {item} does not contain declared merge key: {key}"))
}

fn has_key_value(item: &Value, key: &str, wanted: &Value) -> bool {
    item.get(key).is_some_and(|v| json_eq(v, wanted))
}

/// Elements named in `order` come first, in that order; the rest keep their
/// relative order after them.
fn apply_element_order(items: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let rank = |item: &Value| -> Option<usize> {
        match strategy {
            ListStrategy::Set => order.iter().position(|o| json_eq(o, item)),
            ListStrategy::MergeByKey(key) => {
                let value = item.get(key)?;
                order.iter().position(|o| has_key_value(o, key, value))
            }
            // Without a way to identify elements there is nothing to order.
            ListStrategy::Replace => None,
        }
    };
    if strategy == ListStrategy::Replace {
        return;
    }
    let mut ranked: Vec<(Option<usize>, Value)> = items.drain(..).map(|item| (rank(&item), item)).collect();
    // Stable sort: unranked elements stay in their current relative order.
    ranked.sort_by_key(|(r, _)| match r {
        Some(position) => (false, *position),
        None => (true, 0),
    });
    items.extend(ranked.into_iter().map(|(_, item)| item));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    // ---- merge patch ------------------------------------------------------

    #[rstest]
    #[case::null_deletes(json!({"a": 1, "b": 2}), json!({"a": null}), json!({"b": 2}))]
    #[case::nested_null_deletes(
        json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
        json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        json!({"metadata": {"labels": {"b": "2", "c": "3"}}})
    )]
    #[case::delete_missing_is_noop(json!({"a": 1}), json!({"z": null}), json!({"a": 1}))]
    #[case::arrays_replace(json!({"l": [1, 2, 3]}), json!({"l": [4]}), json!({"l": [4]}))]
    #[case::scalar_replaces_object(json!({"a": {"b": 1}}), json!({"a": 5}), json!({"a": 5}))]
    #[case::object_replaces_scalar(json!({"a": 5}), json!({"a": {"b": 1}}), json!({"a": {"b": 1}}))]
    #[case::new_object_drops_nulls(json!({}), json!({"a": {"b": null, "c": 1}}), json!({"a": {"c": 1}}))]
    #[case::non_object_patch_replaces(json!({"a": 1}), json!([1]), json!([1]))]
    #[case::object_patch_on_scalar_target(json!("x"), json!({"a": 1}), json!({"a": 1}))]
    fn merge_patch_cases(#[case] mut target: Value, #[case] patch: Value, #[case] expected: Value) {
        merge_patch(&mut target, &patch);
        assert_eq!(target, expected);
    }

    // ---- JSON patch -------------------------------------------------------

    fn doc() -> Value {
        json!({
            "metadata": {"name": "p", "labels": {"a/b": "1", "m~n": "2"}},
            "spec": {"items": [1, 2, 3], "n": 1.0},
        })
    }

    #[rstest]
    #[case::add_member(
        json!([{"op": "add", "path": "/spec/x", "value": true}]),
        json!({"metadata": {"name": "p", "labels": {"a/b": "1", "m~n": "2"}}, "spec": {"items": [1, 2, 3], "n": 1.0, "x": true}})
    )]
    #[case::append_with_dash(
        json!([{"op": "add", "path": "/spec/items/-", "value": 4}]),
        json!({"metadata": {"name": "p", "labels": {"a/b": "1", "m~n": "2"}}, "spec": {"items": [1, 2, 3, 4], "n": 1.0}})
    )]
    #[case::insert_at_index(
        json!([{"op": "add", "path": "/spec/items/0", "value": 0}]),
        json!({"metadata": {"name": "p", "labels": {"a/b": "1", "m~n": "2"}}, "spec": {"items": [0, 1, 2, 3], "n": 1.0}})
    )]
    #[case::insert_at_len(
        json!([{"op": "add", "path": "/spec/items/3", "value": 4}]),
        json!({"metadata": {"name": "p", "labels": {"a/b": "1", "m~n": "2"}}, "spec": {"items": [1, 2, 3, 4], "n": 1.0}})
    )]
    #[case::pointer_escapes(
        json!([
            {"op": "replace", "path": "/metadata/labels/a~1b", "value": "x"},
            {"op": "remove", "path": "/metadata/labels/m~0n"},
        ]),
        json!({"metadata": {"name": "p", "labels": {"a/b": "x"}}, "spec": {"items": [1, 2, 3], "n": 1.0}})
    )]
    #[case::remove_array_element(
        json!([{"op": "remove", "path": "/spec/items/1"}]),
        json!({"metadata": {"name": "p", "labels": {"a/b": "1", "m~n": "2"}}, "spec": {"items": [1, 3], "n": 1.0}})
    )]
    #[case::move_and_copy(
        json!([
            {"op": "move", "from": "/metadata/name", "path": "/spec/name"},
            {"op": "copy", "from": "/spec/items/0", "path": "/spec/first"},
        ]),
        json!({"metadata": {"labels": {"a/b": "1", "m~n": "2"}}, "spec": {"items": [1, 2, 3], "n": 1.0, "name": "p", "first": 1}})
    )]
    #[case::move_to_same_place(
        json!([{"op": "move", "from": "/spec/n", "path": "/spec/n"}]),
        doc()
    )]
    #[case::test_then_replace(
        json!([
            {"op": "test", "path": "/metadata/name", "value": "p"},
            {"op": "test", "path": "/spec/n", "value": 1},
            {"op": "test", "path": "/spec/items", "value": [1, 2, 3]},
            {"op": "replace", "path": "/metadata/name", "value": "q"},
        ]),
        json!({"metadata": {"name": "q", "labels": {"a/b": "1", "m~n": "2"}}, "spec": {"items": [1, 2, 3], "n": 1.0}})
    )]
    #[case::replace_root(json!([{"op": "replace", "path": "", "value": {"x": 1}}]), json!({"x": 1}))]
    #[case::add_null_value(
        json!([{"op": "add", "path": "/spec/z", "value": null}]),
        json!({"metadata": {"name": "p", "labels": {"a/b": "1", "m~n": "2"}}, "spec": {"items": [1, 2, 3], "n": 1.0, "z": null}})
    )]
    #[case::empty_patch(json!([]), doc())]
    fn json_patch_applies(#[case] patch: Value, #[case] expected: Value) {
        let mut target = doc();
        json_patch(&mut target, &patch).unwrap();
        assert_eq!(target, expected);
    }

    #[rstest]
    #[case::failed_test(json!([
        {"op": "replace", "path": "/metadata/name", "value": "changed"},
        {"op": "test", "path": "/metadata/name", "value": "p"},
    ]))]
    #[case::test_missing_path(json!([{"op": "test", "path": "/nope", "value": null}]))]
    #[case::remove_missing_path(json!([
        {"op": "add", "path": "/spec/x", "value": 1},
        {"op": "remove", "path": "/spec/missing"},
    ]))]
    #[case::remove_out_of_range(json!([{"op": "remove", "path": "/spec/items/3"}]))]
    #[case::remove_dash(json!([{"op": "remove", "path": "/spec/items/-"}]))]
    #[case::remove_root(json!([{"op": "remove", "path": ""}]))]
    #[case::replace_missing_path(json!([{"op": "replace", "path": "/spec/missing", "value": 1}]))]
    #[case::add_missing_parent(json!([{"op": "add", "path": "/nope/x", "value": 1}]))]
    #[case::add_index_past_end(json!([{"op": "add", "path": "/spec/items/5", "value": 1}]))]
    #[case::add_leading_zero_index(json!([{"op": "add", "path": "/spec/items/01", "value": 1}]))]
    #[case::add_into_scalar(json!([{"op": "add", "path": "/metadata/name/x", "value": 1}]))]
    #[case::pointer_without_slash(json!([{"op": "add", "path": "spec", "value": 1}]))]
    #[case::bad_tilde_escape(json!([{"op": "add", "path": "/spec/a~2", "value": 1}]))]
    #[case::move_into_own_child(json!([{"op": "move", "from": "/spec", "path": "/spec/inner"}]))]
    #[case::move_missing_from(json!([{"op": "move", "from": "/nope", "path": "/x"}]))]
    #[case::copy_missing_from(json!([{"op": "copy", "from": "/nope", "path": "/x"}]))]
    fn json_patch_failure_is_invalid_and_atomic(#[case] patch: Value) {
        let mut target = doc();
        let err = json_patch(&mut target, &patch).unwrap_err();
        assert!(matches!(err, PatchError::Invalid { .. }), "{err:?}");
        assert_eq!(err.to_string(), "the server rejected our request due to an error in our request");
        assert_eq!(target, doc(), "target must be unchanged after a failed patch");
    }

    #[rstest]
    #[case::object_body(json!({"op": "add"}), "json: cannot unmarshal object into Go value of type jsonpatch.Patch")]
    #[case::null_body(json!(null), "json: cannot unmarshal null into Go value of type jsonpatch.Patch")]
    #[case::op_not_object(json!([1]), "json patch operation 0 is not an object")]
    #[case::missing_path(json!([{"op": "remove"}]), "json patch operation 0 missing path field")]
    #[case::missing_op(json!([{"path": "/a"}]), "json patch operation 0 missing op field")]
    #[case::missing_value(json!([{"op": "add", "path": "/a"}]), "json patch operation 0 missing value field")]
    #[case::missing_from(json!([{"op": "move", "path": "/a"}]), "json patch operation 0 missing from field")]
    #[case::first_bad_op_reported(json!([{"op": "test"}, {"op": "frobnicate", "path": "/a"}]), "json patch operation 0 missing path field")]
    #[case::unknown_op_only(json!([{"op": "frobnicate", "path": "/a"}]), "json patch operation 0 has unsupported op \"frobnicate\"")]
    fn json_patch_malformed(#[case] patch: Value, #[case] message: &str) {
        let mut target = doc();
        assert_eq!(json_patch(&mut target, &patch), Err(PatchError::Malformed(message.to_owned())));
        assert_eq!(target, doc());
    }

    #[test]
    fn json_patch_copy_amplification_is_capped() {
        let mut target = json!({"a": {"payload": "x".repeat(1000)}});
        let original = target.clone();
        // Each op copies /a into itself, doubling it: 2^30 KB if unchecked.
        let ops: Vec<Value> =
            (0..30).map(|i| json!({"op": "copy", "from": "/a", "path": format!("/a/c{i}")})).collect();
        let err = json_patch(&mut target, &Value::Array(ops)).unwrap_err();
        let PatchError::Invalid { detail } = err else {
            panic!("expected Invalid, got {err:?}");
        };
        assert!(detail.contains("accumulated size increase of copy"), "{detail}");
        assert_eq!(target, original);
    }

    #[test]
    fn json_patch_operation_limit() {
        let op = json!({"op": "test", "path": "/metadata/name", "value": "p"});
        let at_limit = Value::Array(vec![op.clone(); MAX_JSON_PATCH_OPERATIONS]);
        let mut target = doc();
        assert_eq!(json_patch(&mut target, &at_limit), Ok(()));

        let over = Value::Array(vec![op; MAX_JSON_PATCH_OPERATIONS + 1]);
        let err = json_patch(&mut target, &over).unwrap_err();
        assert_eq!(err, PatchError::TooManyOperations(10_001));
        assert_eq!(err.to_string(), "The allowed maximum operations in a JSON patch is 10000, got 10001");
    }

    // ---- strategic merge patch -------------------------------------------

    fn smp(mut target: Value, patch: Value, kind: &str) -> Value {
        strategic_merge_patch(&mut target, &patch, kind).unwrap();
        target
    }

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web",
                "finalizers": ["a", "b"],
                "labels": {"app": "web"},
            },
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "app:1",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    },
                    {"name": "sidecar", "image": "proxy:1"},
                ],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "x"}, {"key": "y"}],
            },
        })
    }

    #[test]
    fn smp_merges_containers_by_name() {
        let out = smp(pod(), json!({"spec": {"containers": [{"name": "app", "image": "app:2"}]}}), "Pod");
        let containers = &out["spec"]["containers"];
        assert_eq!(containers.as_array().map(Vec::len), Some(2));
        assert_eq!(containers[0]["image"], "app:2");
        // Fields the patch did not mention survive inside the merged element.
        assert_eq!(containers[0]["env"][1]["value"], "2");
        assert_eq!(containers[1], json!({"name": "sidecar", "image": "proxy:1"}));
    }

    #[test]
    fn smp_appends_new_container() {
        let out = smp(pod(), json!({"spec": {"containers": [{"name": "new", "image": "n:1", "env": null}]}}), "Pod");
        let names: Vec<&str> =
            out["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["app", "sidecar", "new"]);
        assert_eq!(out["spec"]["containers"][2], json!({"name": "new", "image": "n:1"}));
    }

    #[test]
    fn smp_merges_env_and_ports_inside_container() {
        let out = smp(
            pod(),
            json!({"spec": {"containers": [{
                "name": "app",
                "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                "ports": [{"containerPort": 443}],
            }]}}),
            "Pod",
        );
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([
                {"name": "A", "value": "1"},
                {"name": "B", "value": "20"},
                {"name": "C", "value": "3"},
            ])
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}])
        );
    }

    #[test]
    fn smp_merges_pod_template_containers_of_deployment() {
        let deployment = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"},
        ]}}}});
        let out = smp(
            deployment,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}}),
            "Deployment",
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}])
        );
    }

    #[rstest]
    #[case::delete_container(
        json!({"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}),
        json!(["app"])
    )]
    #[case::delete_unknown_container_is_noop(
        json!({"spec": {"containers": [{"name": "ghost", "$patch": "delete"}]}}),
        json!(["app", "sidecar"])
    )]
    #[case::replace_list(
        json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o:1"}]}}),
        json!(["only"])
    )]
    fn smp_list_directives(#[case] patch: Value, #[case] names: Value) {
        let out = smp(pod(), patch, "Pod");
        let actual: Vec<Value> =
            out["spec"]["containers"].as_array().unwrap().iter().map(|c| c["name"].clone()).collect();
        assert_eq!(Value::Array(actual), names);
        assert!(!out.to_string().contains('$'), "directive leaked: {out}");
    }

    #[test]
    fn smp_map_directives() {
        let out = smp(pod(), json!({"metadata": {"labels": {"$patch": "replace", "tier": "x"}}}), "Pod");
        assert_eq!(out["metadata"]["labels"], json!({"tier": "x"}));

        let out = smp(pod(), json!({"metadata": {"labels": {"$patch": "delete"}}}), "Pod");
        assert_eq!(out["metadata"].get("labels"), None);

        // `$patch: merge` is the default and only needs stripping.
        let out = smp(pod(), json!({"metadata": {"labels": {"$patch": "merge", "tier": "x"}}}), "Pod");
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "tier": "x"}));
    }

    #[rstest]
    #[case::set_union(json!({"metadata": {"finalizers": ["b", "c"]}}), json!(["a", "b", "c"]))]
    #[case::delete_from_primitive_list(
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        json!(["b"])
    )]
    #[case::delete_and_add(
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zz"], "finalizers": ["c"]}}),
        json!(["b", "c"])
    )]
    #[case::null_removes_list(json!({"metadata": {"finalizers": null}}), Value::Null)]
    #[case::set_element_order(
        json!({"metadata": {"$setElementOrder/finalizers": ["c", "b"], "finalizers": ["c"]}}),
        json!(["c", "b", "a"])
    )]
    fn smp_finalizers(#[case] patch: Value, #[case] expected: Value) {
        let out = smp(pod(), patch, "ConfigMap");
        assert_eq!(out["metadata"]["finalizers"], expected);
        assert!(!out.to_string().contains('$'), "directive leaked: {out}");
    }

    #[test]
    fn smp_set_element_order_on_keyed_list() {
        let out = smp(
            pod(),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                "containers": [{"name": "sidecar", "image": "proxy:2"}],
            }}),
            "Pod",
        );
        assert_eq!(out["spec"]["containers"][0]["name"], "sidecar");
        assert_eq!(out["spec"]["containers"][0]["image"], "proxy:2");
        assert_eq!(out["spec"]["containers"][1]["name"], "app");
        assert!(out["spec"].get("$setElementOrder/containers").is_none());
    }

    #[test]
    fn smp_set_element_order_keeps_unlisted_elements_after() {
        let node = json!({"status": {"addresses": [
            {"type": "Hostname", "address": "n1"},
            {"type": "InternalIP", "address": "10.0.0.1"},
            {"type": "ExternalIP", "address": "1.2.3.4"},
        ]}});
        let out = smp(node, json!({"status": {"$setElementOrder/addresses": [{"type": "ExternalIP"}]}}), "Node");
        let types: Vec<&str> =
            out["status"]["addresses"].as_array().unwrap().iter().map(|a| a["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["ExternalIP", "Hostname", "InternalIP"]);
    }

    #[test]
    fn smp_node_taints_by_key() {
        let node = json!({"spec": {"taints": [
            {"key": "a", "effect": "NoSchedule"},
            {"key": "b", "effect": "NoSchedule"},
        ]}});
        let out = smp(
            node,
            json!({"spec": {"taints": [
                {"key": "b", "effect": "NoExecute"},
                {"key": "c", "effect": "NoSchedule"},
                {"key": "a", "$patch": "delete"},
            ]}}),
            "Node",
        );
        assert_eq!(
            out["spec"]["taints"],
            json!([{"key": "b", "effect": "NoExecute"}, {"key": "c", "effect": "NoSchedule"}])
        );
    }

    #[test]
    fn smp_status_conditions_by_type() {
        let pvc = json!({"status": {"conditions": [
            {"type": "Resizing", "status": "True"},
            {"type": "FileSystemResizePending", "status": "False"},
        ]}});
        let out = smp(
            pvc,
            json!({"status": {"conditions": [{"type": "Resizing", "status": "False"}]}}),
            "PersistentVolumeClaim",
        );
        assert_eq!(out["status"]["conditions"][0]["status"], "False");
        assert_eq!(out["status"]["conditions"][1]["type"], "FileSystemResizePending");
    }

    #[test]
    fn smp_owner_references_by_uid_on_any_kind() {
        let obj = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}});
        let out = smp(obj, json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}}), "Widget");
        assert_eq!(out["metadata"]["ownerReferences"], json!([{"uid": "1", "name": "a"}, {"uid": "2", "name": "b"}]));
    }

    #[test]
    fn smp_retain_keys() {
        let deployment = json!({"spec": {"strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1},
        }}});
        let out =
            smp(deployment, json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}), "Deployment");
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn smp_retain_keys_contradicting_patch_is_invalid() {
        let mut target = pod();
        let err =
            strategic_merge_patch(&mut target, &json!({"spec": {"$retainKeys": ["volumes"], "hostname": "h"}}), "Pod")
                .unwrap_err();
        assert!(matches!(err, PatchError::Invalid { .. }), "{err:?}");
        assert_eq!(target, pod());
    }

    #[test]
    fn smp_unknown_kind_replaces_lists() {
        let obj = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}});
        let out = smp(obj, json!({"spec": {"containers": [{"name": "a", "image": "2"}]}}), "Widget");
        assert_eq!(out["spec"]["containers"], json!([{"name": "a", "image": "2"}]));
    }

    #[test]
    fn smp_lists_without_strategy_replace_on_known_kinds() {
        let out = smp(pod(), json!({"spec": {"tolerations": [{"key": "z"}]}}), "Pod");
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "z"}]));
    }

    #[test]
    fn smp_behaves_like_merge_patch_for_maps_and_scalars() {
        let out = smp(pod(), json!({"metadata": {"labels": {"app": null, "new": "1"}, "name": "web2"}}), "Pod");
        assert_eq!(out["metadata"]["labels"], json!({"new": "1"}));
        assert_eq!(out["metadata"]["name"], "web2");
        assert_eq!(out["kind"], "Pod");
    }

    #[test]
    fn smp_strips_directives_from_new_subtrees() {
        let out = smp(
            json!({}),
            json!({"spec": {
                "containers": [{"name": "a", "env": [{"name": "X", "valueFrom": {"$patch": "merge"}}]}],
                "volumes": [{"$patch": "replace"}, {"name": "v"}],
                "affinity": {"$patch": "replace", "nodeAffinity": {"$retainKeys": []}},
            }}),
            "Pod",
        );
        assert_eq!(
            out,
            json!({"spec": {
                "containers": [{"name": "a", "env": [{"name": "X", "valueFrom": {}}]}],
                "volumes": [{"name": "v"}],
                "affinity": {"nodeAffinity": {}},
            }})
        );
    }

    #[rstest]
    #[case::not_an_object(json!([1]))]
    #[case::unknown_directive(json!({"spec": {"$frobnicate": 1}}))]
    #[case::bad_patch_type(json!({"spec": {"$patch": "explode"}}))]
    #[case::non_string_patch_type(json!({"spec": {"$patch": 1}}))]
    #[case::element_without_merge_key(json!({"spec": {"containers": [{"image": "x"}]}}))]
    #[case::delete_without_merge_key(json!({"spec": {"containers": [{"$patch": "delete"}]}}))]
    #[case::delete_in_list_without_key(json!({"spec": {"tolerations": [{"$patch": "delete", "key": "x"}]}}))]
    #[case::merge_directive_in_list(json!({"spec": {"volumes": [{"$patch": "merge", "name": "data"}]}}))]
    #[case::bad_retain_keys(json!({"spec": {"$retainKeys": "volumes"}}))]
    #[case::bad_retain_keys_item(json!({"spec": {"$retainKeys": [1]}}))]
    #[case::bad_delete_from_primitive_list(json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}))]
    #[case::bad_set_element_order(json!({"metadata": {"$setElementOrder/finalizers": {}}}))]
    #[case::directive_without_field(json!({"metadata": {"$setElementOrder/": []}}))]
    fn smp_malformed_patches(#[case] patch: Value) {
        let mut target = pod();
        let err = strategic_merge_patch(&mut target, &patch, "Pod").unwrap_err();
        assert!(matches!(err, PatchError::Malformed(_)), "{err:?}");
        assert_eq!(target, pod(), "target must be unchanged after a failed patch");
    }

    #[test]
    fn smp_delete_of_root_is_rejected() {
        let mut target = pod();
        let err = strategic_merge_patch(&mut target, &json!({"$patch": "delete"}), "Pod");
        assert!(matches!(err, Err(PatchError::Invalid { .. })));
        assert_eq!(target, pod());
    }

    #[test]
    fn smp_merge_key_matches_numbers_by_value() {
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}]}});
        let out = smp(svc, json!({"spec": {"ports": [{"port": 80.0, "targetPort": 8080}]}}), "Service");
        // The element was matched (not appended); the patch's spelling of
        // the key wins, as any patched field does.
        assert_eq!(out["spec"]["ports"], json!([{"port": 80.0, "name": "http", "targetPort": 8080}]));
    }

    #[test]
    fn smp_type_mismatch_replaces() {
        let out = smp(
            json!({"spec": {"containers": "oops", "x": [1]}}),
            json!({"spec": {"containers": [{"name": "a"}], "x": {"y": 1}}}),
            "Pod",
        );
        assert_eq!(out, json!({"spec": {"containers": [{"name": "a"}], "x": {"y": 1}}}));
    }
}
