//! The relay's own certificate for inbound STARTTLS: reading the PEM files
//! of `server.tls_cert_file` and `server.tls_key_file` into a rustls server
//! configuration. One function, used when the configuration is validated
//! (so a bad file stops the start with exit 64) and on every reload.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key could not be used; says which file.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    /// The certificate file: unreadable, not PEM, or no certificate in it.
    #[error("{path}: {reason}")]
    Cert { path: String, reason: String },
    /// The key file: unreadable, not PEM, or no private key in it.
    #[error("{path}: {reason}")]
    Key { path: String, reason: String },
    /// Both read, but rustls refused them together (the key does not
    /// belong to the certificate, an unsupported key type).
    #[error("{cert} with {key}: {reason}")]
    Pair {
        cert: String,
        key: String,
        reason: String,
    },
}

/// A TLS server configuration presenting the chain in `cert_file` with the
/// key in `key_file`.
pub fn tls_server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<ServerConfig, ServerTlsError> {
    let cert_err = |reason: String| ServerTlsError::Cert {
        path: cert_file.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no PEM certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| ServerTlsError::Key {
        path: key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    // The provider is named explicitly: never depend on a process default.
    ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ServerTlsError::Pair {
            cert: cert_file.display().to_string(),
            key: key_file.display().to_string(),
            reason: e.to_string(),
        })
}
