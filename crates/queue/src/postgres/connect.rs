//! Reaching the database: the URL parsed into tokio-postgres settings, TLS
//! when the URL says `sslmode=require` (the server's certificate verified
//! against the webpki roots plus `ca_file`), the connection pool, and
//! single connections for `LISTEN`.

use std::path::Path;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::ClientConfig;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PgSettings;
use crate::QueueError;

/// Connecting (TCP, TLS, login) must finish within this, so a database
/// that is down turns into `452` quickly instead of a hung session.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// Pooled connections: sessions' chunks, claims, finishes, the writer.
const POOL_SIZE: usize = 16;

/// The parsed URL and how to secure it.
#[derive(Clone)]
pub(crate) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: Tls,
}

/// Plain TCP, or TLS with verified certificates.
#[derive(Clone)]
pub(crate) enum Tls {
    Plain,
    Rustls(MakeRustlsConnect),
}

impl Target {
    /// Parses `settings.url` and prepares TLS. Every session gets
    /// `synchronous_commit = on` (a commit is on disk when it returns,
    /// whatever the server's default) and the relay's schema as its
    /// search path.
    pub fn new(settings: &PgSettings) -> Result<Target, QueueError> {
        let mut config: tokio_postgres::Config = settings.url.parse().map_err(|e| {
            QueueError::Settings(format!("queue.url is not a usable PostgreSQL URL: {e}"))
        })?;
        let options = format!(
            "{} -c synchronous_commit=on -c search_path={}",
            config.get_options().unwrap_or_default(),
            settings.schema
        );
        config.options(options.trim());
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("postmark-relay");
        }
        // A connection whose peer vanished (no RST) is noticed in seconds.
        config.keepalives_idle(Duration::from_secs(10));
        config.tcp_user_timeout(Duration::from_secs(15));
        let tls = if matches!(config.get_ssl_mode(), SslMode::Require) {
            Tls::Rustls(MakeRustlsConnect::new(client_config(
                settings.ca_file.as_deref(),
            )?))
        } else {
            // `prefer` would try TLS without verifying it; be explicit.
            config.ssl_mode(SslMode::Disable);
            Tls::Plain
        };
        Ok(Target { config, tls })
    }

    /// A pool of connections, opened lazily (so a relay starts even while
    /// connections fail, and each use reports the failure).
    pub fn pool(&self) -> Result<Pool, QueueError> {
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &self.tls {
            Tls::Plain => {
                Manager::from_config(self.config.clone(), tokio_postgres::NoTls, manager_config)
            }
            Tls::Rustls(tls) => {
                Manager::from_config(self.config.clone(), tls.clone(), manager_config)
            }
        };
        Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT * 2))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| QueueError::Settings(format!("connection pool: {e}")))
    }
}

/// Trusts the webpki roots and the certificates in `ca_file`, as every TLS
/// client of the relay does.
fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, QueueError> {
    relay_config::tls_client_config(ca_file).map_err(|e| QueueError::Settings(format!("queue.{e}")))
}
