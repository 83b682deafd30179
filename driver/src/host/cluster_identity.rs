//! Which Harvester cluster this is, as a value that never changes with the
//! address used to reach it. It becomes the `topology.harvesterhci.io/host-cluster`
//! segment, which every PV carries forever in its node affinity and which the
//! kubelet refuses to see change on a node ("topology value collision"): a VIP
//! change, an IP-to-DNS switch or two nodes with differently written
//! cloud-configs must all give the same answer.
//!
//! The answer is the UID of the Harvester setting `server-version`: every
//! Harvester cluster has it from installation on, upgrades keep it, and every
//! authenticated identity may read it. Only where it truly cannot be read
//! (not found, or denied by a non-Harvester host) does a fallback apply: the
//! fingerprint of the cluster CA the cloud-config trusts, and without one the
//! API address (the one value that does change with the address, reported as
//! such).

use kube::api::Api;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{setting_resource, Host};
use crate::error::Result;

/// The setting whose UID names the cluster.
pub const IDENTITY_SETTING: &str = "server-version";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentitySource {
    /// `metadata.uid` of the Harvester setting `server-version`.
    SettingUid,
    /// SHA-256 of the CA certificate in the cloud-config.
    CaFingerprint,
    /// The API server's host and port: changes with the address.
    Address,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterIdentity {
    /// A label value (at most 63 characters, alphanumeric ends).
    pub value: String,
    pub source: IdentitySource,
}

/// Label-safe `ca-<first 32 hex digits of the SHA-256 of the DER certificate>`.
pub fn ca_fingerprint(ca_der: &[u8]) -> String {
    let digest = Sha256::digest(ca_der);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("ca-{hex}")
}

/// The fallback when neither the setting nor a CA is there.
pub fn address_identity(cluster_url: &str) -> String {
    let host = cluster_url.split("://").nth(1).unwrap_or(cluster_url).split('/').next().unwrap_or("");
    crate::names::label_value(host)
}

/// The identity from what could be learned, in order of preference.
pub fn choose(setting_uid: Option<&str>, ca_der: Option<&[u8]>, cluster_url: &str) -> ClusterIdentity {
    if let Some(uid) = setting_uid.filter(|u| !u.is_empty()) {
        return ClusterIdentity { value: crate::names::label_value(uid), source: IdentitySource::SettingUid };
    }
    if let Some(ca) = ca_der.filter(|c| !c.is_empty()) {
        return ClusterIdentity { value: ca_fingerprint(ca), source: IdentitySource::CaFingerprint };
    }
    ClusterIdentity { value: address_identity(cluster_url), source: IdentitySource::Address }
}

impl Host {
    /// The host cluster's identity. A transient failure is an error (the caller
    /// retries): answering with a fallback would register a value that changes on
    /// the next start, which is the very thing this identity exists to prevent.
    pub async fn cluster_identity(&self, ca_der: Option<&[u8]>, cluster_url: &str) -> Result<ClusterIdentity> {
        let api: Api<kube::api::DynamicObject> = self.dynamic(&setting_resource(), None);
        let uid = match self.call_opt("get setting", api.get(IDENTITY_SETTING)).await {
            Ok(found) => found.and_then(|o| o.metadata.uid),
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the Harvester setting {IDENTITY_SETTING}; identifying the host cluster by its CA");
                None
            }
        };
        let identity = choose(uid.as_deref(), ca_der, cluster_url);
        if identity.source == IdentitySource::Address {
            tracing::warn!(value = %identity.value, "the host cluster is identified by its address: its topology segment will change if the address does");
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_uid_wins_whatever_the_address() {
        let uid = "0f3c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b";
        let a = choose(Some(uid), Some(b"ca"), "https://10.0.0.5:6443");
        let b = choose(Some(uid), None, "https://harvester.example.com");
        assert_eq!(a, b);
        assert_eq!(a, ClusterIdentity { value: uid.into(), source: IdentitySource::SettingUid });
    }

    #[test]
    fn without_the_setting_the_ca_decides_and_the_address_does_not() {
        let a = choose(None, Some(b"the host CA"), "https://10.0.0.5:6443");
        let b = choose(Some(""), Some(b"the host CA"), "https://vip.example.com:443");
        assert_eq!(a, b);
        assert_eq!(a.source, IdentitySource::CaFingerprint);
        assert!(a.value.starts_with("ca-") && a.value.len() == 35, "{}", a.value);
        assert_ne!(choose(None, Some(b"another CA"), "").value, a.value);
    }

    #[test]
    fn the_address_is_the_last_resort_and_label_safe() {
        let id = choose(None, None, "https://10.0.0.5:6443/k8s/clusters/c-1");
        assert_eq!(id.source, IdentitySource::Address);
        assert!(id.value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)), "{}", id.value);
        assert!(id.value.contains("10.0.0.5"), "{}", id.value);
    }
}
