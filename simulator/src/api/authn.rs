//! Bearer-token authentication: the admin token and ServiceAccount tokens
//! (Secrets of type `kubernetes.io/service-account-token`).

use std::collections::HashMap;
use std::sync::RwLock;

use base64::Engine;
use serde_json::Value;

use super::meta;
use super::rbac::UserInfo;

pub const SA_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

#[derive(Debug, Default)]
pub struct Authenticator {
    tokens: RwLock<HashMap<String, UserInfo>>,
}

impl Authenticator {
    pub fn new(admin_token: &str) -> Self {
        let a = Self::default();
        a.insert(
            admin_token,
            UserInfo { username: "admin".into(), groups: vec!["system:masters".into(), "system:authenticated".into()] },
        );
        a
    }

    pub fn insert(&self, token: &str, user: UserInfo) {
        self.tokens.write().unwrap_or_else(|p| p.into_inner()).insert(token.to_string(), user);
    }

    pub fn authenticate(&self, authorization: Option<&str>) -> Option<UserInfo> {
        let token = authorization?.strip_prefix("Bearer ")?.trim();
        self.tokens.read().unwrap_or_else(|p| p.into_inner()).get(token).cloned()
    }

    /// Re-reads ServiceAccount token secrets (after a change to any secret).
    pub fn sync_service_account_tokens(&self, admin_token: &str, secrets: &[std::sync::Arc<Value>]) {
        let mut map = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        map.retain(|t, _| t == admin_token);
        for s in secrets {
            if meta::str_at(s, "/type") != SA_TOKEN_TYPE {
                continue;
            }
            let Some(sa) = meta::annotation(s, "kubernetes.io/service-account.name") else { continue };
            let encoded = meta::str_at(s, "/data/token");
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(encoded) else { continue };
            let Ok(token) = String::from_utf8(raw) else { continue };
            if token.is_empty() {
                continue;
            }
            map.insert(token, UserInfo::service_account(meta::namespace(s), sa));
        }
    }
}

/// A fresh random token (hex, 64 chars).
pub fn new_token() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
