//! The simulator's CA (generated once, kept in the state directory) and the
//! server certificate signed by it at every start for the addresses served.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: String, source: std::io::Error },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("reading PEM: {0}")]
    Pem(String),
}

pub struct ServerTls {
    pub ca_pem: String,
    pub config: Arc<rustls::ServerConfig>,
}

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";

/// Where the CA certificate (PEM) of the simulator in `dir` is kept.
pub fn ca_cert_path(dir: &Path) -> std::path::PathBuf {
    dir.join(CA_CERT)
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "harvester-sim-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TlsError {
    let path = path.display().to_string();
    move |source| TlsError::Io { op, path, source }
}

/// Loads the CA from `dir` (creating it on first start) and issues a server
/// certificate for `localhost`, loopback and `extra_ips`.
pub fn load_or_create(dir: &Path, extra_ips: &[IpAddr]) -> Result<ServerTls, TlsError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    let (ca_pem, ca_key) = if cert_path.exists() && key_path.exists() {
        let pem = std::fs::read_to_string(&cert_path).map_err(io("read", &cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io("read", &key_path))?;
        (pem, KeyPair::from_pem(&key_pem)?)
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        let pem = cert.pem();
        std::fs::write(&cert_path, &pem).map_err(io("write", &cert_path))?;
        write_private(&key_path, &key.serialize_pem())?;
        (pem, key)
    };
    let issuer = Issuer::new(ca_params()?, ca_key);

    let mut params = CertificateParams::new(vec!["localhost".to_string()])?;
    params.distinguished_name.push(DnType::CommonName, "harvester-sim");
    let mut ips: Vec<IpAddr> =
        vec!["127.0.0.1".parse().unwrap_or(IpAddr::from([127, 0, 0, 1])), IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])];
    ips.extend(extra_ips.iter().copied().filter(|ip| !ip.is_unspecified()));
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(ip));
    }
    let server_key = KeyPair::generate()?;
    let server_cert = params.signed_by(&server_key, &issuer)?;

    let cert_der = rustls::pki_types::CertificateDer::from(server_cert.der().to_vec());
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der())
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls { ca_pem, config: Arc::new(config) })
}

fn write_private(path: &Path, content: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))?;
    f.write_all(content.as_bytes()).map_err(io("write", path))
}

/// Writes a secret file readable by the owner only.
pub fn write_secret_file(path: &Path, content: &str) -> Result<(), TlsError> {
    write_private(path, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_reused_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), &[]).unwrap();
        let b = load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        let mode = std::fs::metadata(dir.path().join(CA_KEY)).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }
}
