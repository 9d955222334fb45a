//! The inbound certificate is re-read when its files change, not only on
//! SIGHUP: cert-manager (or certbot) renews it in place, and in Kubernetes
//! nobody sends the relay a signal. A renewal is seen within
//! [`EVERY`]; a bad new file keeps the running certificate, as on SIGHUP.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use relay_config::TlsFiles;
use relay_inbound::InboundTls;
use tokio_util::sync::CancellationToken;

/// How often the files' modification times are compared.
pub const EVERY: Duration = Duration::from_secs(10);

/// Re-reads the certificate and key; logs the outcome with `why`.
pub fn reread(tls: &InboundTls, why: &str) {
    let files = tls.files();
    match tls.reload() {
        Ok(()) => tracing::info!(
            cert_file = %files.cert_file.display(),
            why,
            "Inbound TLS certificate re-read; new STARTTLS sessions present it."
        ),
        Err(e) => tracing::error!(
            error = %e,
            why,
            "Could not re-read server.tls_cert_file / server.tls_key_file; the running certificate stays in force."
        ),
    }
}

/// Watches the files until `shutdown`, re-reading them when either one's
/// modification time changes (a Kubernetes Secret volume swaps both at
/// once).
pub async fn run(tls: Arc<InboundTls>, shutdown: CancellationToken) {
    let mut seen = stamps(tls.files());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
        let now = stamps(tls.files());
        if now != seen {
            seen = now;
            reread(&tls, "the certificate or key file changed");
        }
    }
}

/// Modification times of the certificate and key (`None` while missing).
fn stamps(files: &TlsFiles) -> [Option<SystemTime>; 2] {
    [&files.cert_file, &files.key_file]
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
}
