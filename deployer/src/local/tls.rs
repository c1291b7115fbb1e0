//! TLS for the local environment: the certificate the emulator serves (generated once per
//! environment, kept under `target/local/<port>/tls/`), and clients that trust exactly that
//! certificate on top of the usual roots. Verification is never switched off: with the
//! endpoint on TLS, S3 sees `aws:SecureTransport = true` as it does on AWS, and the bucket
//! policy that denies plain HTTP stays as strict locally as it is there.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use thiserror::Error;

/// The names the certificate is valid for: clients reach the emulator as 127.0.0.1.
const NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot generate the local TLS certificate: {0}")]
    Generate(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the local TLS certificate {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NotPem { path: PathBuf },
    #[error("cannot set up a TLS client trusting {path}: {reason}")]
    Client { path: PathBuf, reason: String },
}

/// The certificate and key files of one local environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    /// Creates a self-signed certificate for 127.0.0.1 unless one is already there. It is an
    /// end-entity certificate (not a CA), which rustls/webpki requires of a served leaf.
    pub fn ensure(&self) -> Result<(), TlsError> {
        if self.cert.is_file() && self.key.is_file() {
            return Ok(());
        }
        let names: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        if let Some(dir) = self.cert.parent() {
            fs::create_dir_all(dir).map_err(|source| TlsError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        // The key first: a certificate without its key would be taken as complete.
        write_private(&self.key, generated.signing_key.serialize_pem().as_bytes())?;
        fs::write(&self.cert, generated.cert.pem()).map_err(|source| TlsError::Write {
            path: self.cert.clone(),
            source,
        })
    }

    /// The certificate, PEM-encoded, for clients to trust.
    pub fn cert_pem(&self) -> Result<Vec<u8>, TlsError> {
        fs::read(&self.cert).map_err(|source| TlsError::Read {
            path: self.cert.clone(),
            source,
        })
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let wrap = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(wrap)?;
    f.write_all(bytes).map_err(wrap)
}

/// A `GET path` over TLS to 127.0.0.1:`port`, trusting only `cert`; the status code and body.
/// Short timeouts, so a status check never hangs.
pub fn get(port: u16, path: &str, cert: &Path) -> Result<(u16, String), TlsError> {
    let client_err = |reason: String| TlsError::Client {
        path: cert.to_path_buf(),
        reason,
    };
    let pem = fs::read(cert).map_err(|source| TlsError::Read {
        path: cert.to_path_buf(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    let mut any = false;
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.map_err(|e| client_err(e.to_string()))?;
        roots.add(der).map_err(|e| client_err(e.to_string()))?;
        any = true;
    }
    if !any {
        return Err(TlsError::NotPem {
            path: cert.to_path_buf(),
        });
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| client_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| client_err(e.to_string()))?;
    let mut stream =
        rustls::StreamOwned::new(conn, connect(port).map_err(|e| client_err(e.to_string()))?);
    exchange(&mut stream, port, path).map_err(|e| client_err(e.to_string()))
}

/// A plain-HTTP `GET path` to 127.0.0.1:`port` (the local label service), with the same
/// short timeouts; the status code and body.
pub fn get_plain(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    exchange(&mut connect(port)?, port, path)
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_millis(300))?;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(tcp)
}

/// One HTTP/1.1 request with `Connection: close`, read to the end.
fn exchange<S: Read + Write>(
    stream: &mut S,
    port: u16,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    // A server may close without close_notify; what arrived before that still counts.
    if let Err(e) = stream.read_to_end(&mut response)
        && response.is_empty()
    {
        return Err(e);
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP response: {}", clip(head)),
            )
        })?;
    Ok((status, body.to_string()))
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_certificate_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("local-tls-{}", std::process::id()));
        let files = TlsFiles::in_dir(&dir);
        files.ensure().unwrap();
        let first = files.cert_pem().unwrap();
        assert!(first.starts_with(b"-----BEGIN CERTIFICATE-----"));
        files.ensure().unwrap();
        assert_eq!(
            files.cert_pem().unwrap(),
            first,
            "an existing certificate is reused"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        let _ = fs::remove_dir_all(dir);
    }
}
