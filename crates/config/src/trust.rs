//! The TLS trust a `ca_file` key describes, for every client the relay
//! opens (Postmark upstreams, the shared queue's database): the built-in
//! webpki roots (so a distroless image needs no OS certificates) plus any
//! PEM roots from the file. One place, so both verify alike.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Building the TLS client configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A TLS client configuration trusting webpki roots and the certificates
/// in `ca_file`.
pub fn tls_client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsSetupError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let bad = |reason: String| TlsSetupError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificates in the file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    // The provider is named explicitly: never depend on a process default.
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(config)
}
