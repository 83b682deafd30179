//! The cluster's certificates and kubeconfigs, made with rcgen at `up`: one CA,
//! the API server's serving certificate, the service-account key pair, and a
//! client certificate (with its kubeconfig) per component and per node.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

use super::{write_file, ClusterError, Result, API_ADDRESS, API_PORT};

pub struct Pki {
    pub dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn rc(e: rcgen::Error) -> ClusterError {
    ClusterError::Pki(e.to_string())
}

fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    p.distinguished_name.push(DnType::CommonName, "hcsi-cluster-ca");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

impl Pki {
    /// A fresh CA and the service-account key pair in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| ClusterError::io("creating", dir, e))?;
        let key = KeyPair::generate().map_err(rc)?;
        let cert = ca_params()?.self_signed(&key).map_err(rc)?;
        let ca_pem = cert.pem();
        write_file(&dir.join("ca.crt"), &ca_pem, 0o644)?;
        write_file(&dir.join("ca.key"), &key.serialize_pem(), 0o600)?;
        let sa = KeyPair::generate().map_err(rc)?;
        write_file(&dir.join("sa.key"), &sa.serialize_pem(), 0o600)?;
        write_file(&dir.join("sa.pub"), &sa.public_key_pem(), 0o644)?;
        let issuer = Issuer::new(ca_params()?, key);
        Ok(Self { dir: dir.to_path_buf(), ca_pem, issuer })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `<name>.crt` and `<name>.key`, signed by the CA.
    fn issue(&self, name: &str, cn: &str, org: Option<&str>, server_sans: &[SanType]) -> Result<(String, String)> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        if let Some(o) = org {
            p.distinguished_name.push(DnType::OrganizationName, o);
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        if server_sans.is_empty() {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        } else {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            p.subject_alt_names = server_sans.to_vec();
        }
        let key = KeyPair::generate().map_err(rc)?;
        let cert = p.signed_by(&key, &self.issuer).map_err(rc)?;
        let (crt, k) = (cert.pem(), key.serialize_pem());
        write_file(&self.dir.join(format!("{name}.crt")), &crt, 0o644)?;
        write_file(&self.dir.join(format!("{name}.key")), &k, 0o600)?;
        Ok((crt, k))
    }

    /// The API server's serving certificate: its address (which is also the
    /// `kubernetes` Service's ClusterIP), loopback and the in-cluster names.
    pub fn apiserver(&self) -> Result<()> {
        let mut sans: Vec<SanType> = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
        ]
        .iter()
        .filter_map(|n| (*n).try_into().ok().map(SanType::DnsName))
        .collect();
        sans.push(SanType::IpAddress(IpAddr::V4(API_ADDRESS)));
        sans.push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
        self.issue("apiserver", "kube-apiserver", None, &sans)?;
        // What the API server presents to kubelets (exec, logs): full rights.
        self.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", Some("system:masters"), &[])?;
        Ok(())
    }

    /// A client certificate and a kubeconfig `<name>.kubeconfig` using it.
    pub fn kubeconfig(&self, name: &str, cn: &str, org: Option<&str>) -> Result<PathBuf> {
        let (crt, key) = self.issue(name, cn, org, &[])?;
        let path = self.dir.join(format!("{name}.kubeconfig"));
        write_file(&path, &kubeconfig_yaml(&self.ca_pem, &crt, &key, name), 0o600)?;
        Ok(path)
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn kubeconfig_yaml(ca: &str, crt: &str, key: &str, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: hcsi
  cluster:
    server: https://{API_ADDRESS}:{API_PORT}
    certificate-authority-data: {}
users:
- name: {user}
  user:
    client-certificate-data: {}
    client-key-data: {}
contexts:
- name: hcsi
  context: {{cluster: hcsi, user: {user}, namespace: default}}
current-context: hcsi
",
        b64(ca),
        b64(crt),
        b64(key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfigs_embed_a_client_certificate_signed_by_the_ca() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki::create(dir.path()).expect("pki");
        pki.apiserver().expect("apiserver cert");
        let path = pki.kubeconfig("node-guest-1", "system:node:guest-1", Some("system:nodes")).expect("kubeconfig");
        let kc = kube::config::Kubeconfig::read_from(&path).expect("a kubeconfig kube-rs reads");
        assert_eq!(
            kc.clusters[0].cluster.as_ref().and_then(|c| c.server.clone()).as_deref(),
            Some("https://198.18.0.1:443")
        );
        let user = kc.auth_infos[0].auth_info.as_ref().expect("user");
        assert!(user.client_certificate_data.is_some() && user.client_key_data.is_some());
        for f in ["ca.crt", "ca.key", "sa.key", "sa.pub", "apiserver.crt", "apiserver-kubelet-client.key"] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca.key")).expect("ca.key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
