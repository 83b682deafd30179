//! Garbage collection: dependents (by ownerReferences uid) go when their owner
//! goes, and a deleted namespace takes its objects with it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::api::meta;
use crate::api::resources::ResourceKey;
use crate::api::store::EventType;

type Dependent = (ResourceKey, String, String);

fn owners(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).map(String::from).collect())
        .unwrap_or_default()
}

fn rebuild(ctx: &Ctx) -> HashMap<String, HashSet<Dependent>> {
    let mut index: HashMap<String, HashSet<Dependent>> = HashMap::new();
    let (_, all) = ctx.api.store.snapshot();
    for (key, items) in all {
        for obj in items {
            for uid in owners(&obj) {
                index.entry(uid).or_default().insert((
                    key.clone(),
                    meta::namespace(&obj).into(),
                    meta::name(&obj).into(),
                ));
            }
        }
    }
    index
}

fn delete(ctx: &Ctx, dep: &Dependent) {
    let Some(rt) = ctx.api.registry.by_key(&dep.0).cloned() else { return };
    if let Err(e) = ctx.api.delete_if_exists(&rt, &dep.1, &dep.2) {
        tracing::debug!(error = %e, "garbage collecting {}/{}", dep.1, dep.2);
    }
}

pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut events = ctx.api.store.subscribe();
    let mut index = rebuild(&ctx);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => match e {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(_)) => { index = rebuild(&ctx); continue; }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let me: Dependent = (event.key.clone(), event.namespace.clone(), event.name.clone());
        if let Some(prev) = &event.previous {
            for uid in owners(prev) {
                if let Some(set) = index.get_mut(&uid) {
                    set.remove(&me);
                }
            }
        }
        match event.kind {
            EventType::Added | EventType::Modified => {
                for uid in owners(&event.object) {
                    index.entry(uid).or_default().insert(me.clone());
                }
            }
            EventType::Deleted => {
                let uid = meta::uid(&event.object).to_string();
                if let Some(deps) = index.remove(&uid) {
                    for dep in deps {
                        delete(&ctx, &dep);
                    }
                }
                if event.key.group.is_empty() && event.key.plural == "namespaces" {
                    let (_, all) = ctx.api.store.snapshot();
                    for (key, items) in all {
                        for obj in items.iter().filter(|o| meta::namespace(o) == event.name) {
                            delete(&ctx, &(key.clone(), event.name.clone(), meta::name(obj).into()));
                        }
                    }
                }
            }
        }
    }
}
