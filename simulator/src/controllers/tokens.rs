//! Kubernetes' ServiceAccount token controller, and the token authenticator kept
//! in step with it. Like kube-controller-manager's `tokens_controller.go`: a
//! Secret of type `kubernetes.io/service-account-token` naming a ServiceAccount
//! gets `data.token`, `data["ca.crt"]`, `data.namespace` and the
//! `kubernetes.io/service-account.uid` annotation; a token Secret whose account
//! is gone (or is another account of that name) is deleted, also when the account
//! is deleted later. The token then authenticates as that ServiceAccount.

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::api::meta;
use crate::auth::SA_TOKEN_TYPE;

pub const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
pub const SA_UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut events = ctx.api.store.subscribe();
    // Secrets restored or seeded before this controller ran are handled too.
    reconcile(&ctx);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => match e {
                Ok(e) if e.key.group.is_empty() && matches!(e.key.plural.as_str(), "secrets" | "serviceaccounts") => {}
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
        reconcile(&ctx);
    }
}

/// What the token controller does with one token Secret.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Nothing,
    /// Its account is gone or is another one of that name.
    Delete,
    /// The fields to add (`data.*` base64-encoded, and the uid annotation).
    Fill(Value),
}

/// Decides for one Secret, given its ServiceAccount (if it exists) and the CA PEM.
pub fn decide(secret: &Value, account: Option<&Value>, ca_pem: &str, new_token: impl FnOnce() -> String) -> Action {
    if meta::str_at(secret, "/type") != SA_TOKEN_TYPE || meta::is_deleting(secret) {
        return Action::Nothing;
    }
    let Some(account) = account.filter(|a| !meta::is_deleting(a)) else { return Action::Delete };
    let uid = meta::uid(account);
    match meta::annotation(secret, SA_UID_ANNOTATION) {
        Some(want) if !want.is_empty() && want != uid => return Action::Delete,
        _ => {}
    }
    let b64 = |s: &str| json!(base64::engine::general_purpose::STANDARD.encode(s));
    let has =
        |key: &str| secret.pointer(&format!("/data/{key}")).and_then(Value::as_str).is_some_and(|v| !v.is_empty());
    let mut data = serde_json::Map::new();
    if !has("token") {
        data.insert("token".into(), b64(&new_token()));
    }
    if !ca_pem.is_empty() && secret.pointer("/data/ca.crt") != Some(&b64(ca_pem)) {
        data.insert("ca.crt".into(), b64(ca_pem));
    }
    if !has("namespace") {
        data.insert("namespace".into(), b64(meta::namespace(secret)));
    }
    let uid_missing = meta::annotation(secret, SA_UID_ANNOTATION).is_none_or(str::is_empty);
    if data.is_empty() && !uid_missing {
        return Action::Nothing;
    }
    Action::Fill(json!({"data": data, "uid": uid}))
}

fn reconcile(ctx: &Ctx) {
    let ca_pem = std::fs::read_to_string(crate::tls::ca_cert_path(&ctx.state_dir)).unwrap_or_default();
    let Ok(rt) = ctx.rt("", "secrets") else { return };
    for secret in ctx.api.list("", "secrets", None) {
        if meta::str_at(&secret, "/type") != SA_TOKEN_TYPE {
            continue;
        }
        let (ns, name) = (meta::namespace(&secret).to_string(), meta::name(&secret).to_string());
        let account = meta::annotation(&secret, SA_NAME_ANNOTATION)
            .and_then(|sa| ctx.api.get_opt("", "serviceaccounts", &ns, sa));
        let result = match decide(&secret, account.as_deref(), &ca_pem, crate::auth::new_token) {
            Action::Nothing => continue,
            Action::Delete => {
                tracing::info!(namespace = %ns, secret = %name, "deleting the token Secret of a missing ServiceAccount");
                ctx.api.delete_if_exists(&rt, &ns, &name)
            }
            Action::Fill(fill) => ctx
                .api
                .modify(&rt, &ns, &name, "", |obj| {
                    let data = obj.as_object_mut().map(|o| o.entry("data").or_insert_with(|| json!({})));
                    if let (Some(Value::Object(data)), Some(add)) = (data, fill["data"].as_object()) {
                        for (k, v) in add {
                            data.insert(k.clone(), v.clone());
                        }
                    }
                    meta::set_annotation(obj, SA_UID_ANNOTATION, fill["uid"].as_str().unwrap_or(""));
                    true
                })
                .map(|_| ()),
        };
        if let Err(e) = result {
            tracing::debug!(namespace = %ns, secret = %name, error = %e, "token controller");
        }
    }
    ctx.server.authn.sync_service_account_tokens(&ctx.admin_token, &ctx.api.list("", "secrets", None));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn account(uid: &str) -> Value {
        json!({"metadata": {"name": "sa", "namespace": "ns", "uid": uid}})
    }

    fn secret(ty: &str, data: Value, uid: Option<&str>) -> Value {
        let mut annotations = json!({SA_NAME_ANNOTATION: "sa"});
        if let Some(u) = uid {
            annotations[SA_UID_ANNOTATION] = json!(u);
        }
        json!({"type": ty, "metadata": {"name": "sa-token", "namespace": "ns", "annotations": annotations}, "data": data})
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn a_new_token_secret_is_filled() {
        let s = secret(SA_TOKEN_TYPE, json!({}), None);
        let Action::Fill(fill) = decide(&s, Some(&account("u1")), "PEM", || "tok".into()) else {
            panic!("expected a fill")
        };
        assert_eq!(fill["data"], json!({"token": b64("tok"), "ca.crt": b64("PEM"), "namespace": b64("ns")}));
        assert_eq!(fill["uid"], "u1");
    }

    #[test]
    fn a_filled_secret_keeps_its_token() {
        let data = json!({"token": b64("old"), "ca.crt": b64("PEM"), "namespace": b64("ns")});
        assert_eq!(
            decide(&secret(SA_TOKEN_TYPE, data.clone(), Some("u1")), Some(&account("u1")), "PEM", || unreachable!()),
            Action::Nothing
        );
        // A seeded Secret with only a token gets the rest, not a new token.
        let Action::Fill(fill) =
            decide(&secret(SA_TOKEN_TYPE, json!({"token": b64("old")}), None), Some(&account("u1")), "PEM", || {
                unreachable!("the token is kept")
            })
        else {
            panic!("expected a fill")
        };
        assert!(fill["data"].get("token").is_none());
    }

    #[rstest]
    #[case::account_missing(None, None, Action::Delete)]
    #[case::other_account_of_that_name(Some("u2"), Some("u1"), Action::Delete)]
    fn token_secrets_without_their_account_are_deleted(
        #[case] account_uid: Option<&str>,
        #[case] secret_uid: Option<&str>,
        #[case] want: Action,
    ) {
        let acc = account_uid.map(account);
        let s = secret(SA_TOKEN_TYPE, json!({}), secret_uid);
        assert_eq!(decide(&s, acc.as_ref(), "PEM", || "t".into()), want);
    }

    #[test]
    fn other_secrets_are_not_touched() {
        assert_eq!(decide(&secret("Opaque", json!({}), None), None, "PEM", || "t".into()), Action::Nothing);
    }
}
