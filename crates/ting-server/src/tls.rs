//! HTTPS and WSS without a proxy: rustls over the same accept loop as plain HTTP.
//!
//! The certificate comes from PEM files (`http.tls.cert_file`, `http.tls.key_file`) and is
//! read again on SIGHUP: connections made after the reload get the new certificate, those
//! open (and every meeting) carry on. A reload that fails keeps the certificate in use and
//! says why in the log. For trying ting on a network without a certificate,
//! `http.tls.self_signed` makes one at start; browsers warn about it, and ting says so in
//! its log and on its page.

use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

use crate::config::TlsConfig;

/// Why TLS could not be set up or reloaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("http.tls.cert_file {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("http.tls.key_file {path}: {reason}")]
    Key { path: String, reason: String },
    #[error(
        "the certificate and key do not go together, or the key is of a kind rustls cannot use: {0}"
    )]
    Pair(String),
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(String),
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
enum Source {
    Files { cert: String, key: String },
    SelfSigned,
}

/// The server's TLS: what accepts connections, and the certificate it presents.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    current: Arc<Current>,
    source: Source,
    /// SHA-256 of the certificate's public key (base64), for Chromium's
    /// `--ignore-certificate-errors-spki-list` and for people comparing fingerprints.
    spki_sha256: String,
    /// SHA-256 of the certificate (hex with colons, as browsers show it).
    cert_sha256: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("source", &self.source)
            .field("spki_sha256", &self.spki_sha256)
            .finish_non_exhaustive()
    }
}

/// The certificate presented now; swapped on reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl Tls {
    /// TLS as configured, or `None` for plain HTTP.
    pub fn from_config(
        config: &TlsConfig,
        listen_ip: std::net::IpAddr,
    ) -> Result<Option<Tls>, TlsError> {
        let source = if !config.cert_file.is_empty() {
            Source::Files {
                cert: config.cert_file.clone(),
                key: config.key_file.clone(),
            }
        } else if config.self_signed {
            Source::SelfSigned
        } else {
            return Ok(None);
        };
        let (key, spki) = match &source {
            Source::Files { cert, key } => load(cert, key)?,
            Source::SelfSigned => self_signed(&config.self_signed_names, listen_ip)?,
        };
        let cert_sha256 = fingerprint(&key.cert[0]);
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let mut server = ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            current,
            source,
            spki_sha256: spki,
            cert_sha256,
        };
        match &tls.source {
            Source::SelfSigned => warn!(
                spki_sha256 = %tls.spki_sha256,
                cert_sha256 = %tls.cert_sha256,
                "serving HTTPS with a SELF-SIGNED DEVELOPMENT CERTIFICATE: browsers will warn, \
                 and nobody can tell this server from an impostor; set http.tls.cert_file and \
                 http.tls.key_file for real use"
            ),
            Source::Files { cert, .. } => info!(
                cert = %cert,
                spki_sha256 = %tls.spki_sha256,
                cert_sha256 = %tls.cert_sha256,
                "serving HTTPS"
            ),
        }
        Ok(Some(tls))
    }

    /// Reads the certificate files again (SIGHUP). On failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Source::Files { cert, key } = &self.source else {
            info!("the self-signed development certificate is not reloaded");
            return Ok(());
        };
        let (new, spki) = load(cert, key)?;
        let sha = fingerprint(&new.cert[0]);
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
        info!(cert = %cert, spki_sha256 = %spki, cert_sha256 = %sha, "certificate reloaded");
        Ok(())
    }

    /// Whether the certificate is the self-signed development one.
    pub fn is_self_signed(&self) -> bool {
        matches!(self.source, Source::SelfSigned)
    }

    pub fn spki_sha256(&self) -> &str {
        &self.spki_sha256
    }
}

/// Loads a certificate chain and its private key from PEM files.
fn load(cert_path: &str, key_path: &str) -> Result<(CertifiedKey, String), TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert_path.to_owned(),
        reason,
    };
    let key_err = |reason: String| TlsError::Key {
        path: key_path.to_owned(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| cert_err(format!("cannot be read: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(cert_err("holds no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| key_err(format!("holds no private key ting can read: {e}")))?;
    certified(certs, key)
}

fn certified(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<(CertifiedKey, String), TlsError> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let ck =
        CertifiedKey::from_der(certs, key, &provider).map_err(|e| TlsError::Pair(e.to_string()))?;
    let spki = spki_sha256(&ck.cert[0]).map_err(TlsError::Pair)?;
    Ok((ck, spki))
}

/// A self-signed certificate for `names` (DNS names or IP addresses) and the address ting
/// listens on.
fn self_signed(
    names: &[String],
    listen_ip: std::net::IpAddr,
) -> Result<(CertifiedKey, String), TlsError> {
    let mut sans: Vec<String> = names.to_vec();
    if !listen_ip.is_unspecified() {
        sans.push(listen_ip.to_string());
    }
    sans.sort();
    sans.dedup();
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(sans).map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ting development certificate");
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    certified(vec![cert.der().clone()], der)
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo, base64 (what Chromium's
/// `--ignore-certificate-errors-spki-list` takes).
fn spki_sha256(cert: &CertificateDer<'_>) -> Result<String, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let spki = parsed.tbs_certificate.subject_pki.raw;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki);
    Ok(base64(digest.as_ref()))
}

/// SHA-256 of a certificate, `AB:CD:…`.
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn base64(bytes: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn a_self_signed_certificate_is_made_and_named() {
        let (ck, spki) = self_signed(&["localhost".into()], "127.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(ck.cert.len(), 1);
        assert_eq!(spki.len(), 44, "base64 of 32 bytes: {spki}");
    }

    #[test]
    fn missing_or_mismatched_files_are_clear_errors() {
        let e = load("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
        assert!(e.to_string().contains("http.tls.cert_file"), "{e}");
        let dir = std::env::temp_dir().join(format!("ting-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.example".into()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, b.signing_key.serialize_pem()).unwrap();
        let e = load(cert.to_str().unwrap(), key.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, TlsError::Pair(_)), "{e}");
        std::fs::write(&key, a.signing_key.serialize_pem()).unwrap();
        assert!(load(cert.to_str().unwrap(), key.to_str().unwrap()).is_ok());
        std::fs::write(&key, "not a key").unwrap();
        let e = load(cert.to_str().unwrap(), key.to_str().unwrap()).unwrap_err();
        assert!(e.to_string().contains("http.tls.key_file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
