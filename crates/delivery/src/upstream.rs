//! One upstream's runtime settings, built from the config in one place
//! ([`upstreams`]) for delivery, `check` and `send-test` alike.

use std::sync::Arc;
use std::time::Duration;

use relay_config::{Config, Login, TlsMode};
use tokio_rustls::TlsConnector;

use relay_config::{tls_client_config, TlsSetupError};

/// Everything a worker needs to reach one Postmark endpoint.
#[derive(Clone)]
pub struct Upstream {
    /// Config name (`transactional`, `broadcast`, ...), also the queue's
    /// routing key.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub connector: TlsConnector,
    /// The Server API Token (as both username and password) or the
    /// stream's SMTP Token.
    pub login: Login,
    /// Our name in EHLO.
    pub helo: String,
    /// Connect and per-command timeout (mail-send's default is an hour).
    pub timeout: Duration,
    /// Parallel pooled connections.
    pub connections: usize,
}

/// Why an upstream of the config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Neither the upstream nor `[postmark]` has a Server API Token (and
    /// the upstream has no SMTP Token): its mail waits in the queue until
    /// one is configured.
    #[error("upstreams.{name}: no Server API Token configured")]
    NoToken { name: String },
    /// The TLS trust store cannot be built (an unreadable `ca_file`).
    #[error("upstreams.{name}: {source}")]
    Tls { name: String, source: TlsSetupError },
}

/// Every upstream of `config`, in config order, ready to dial or with the
/// reason it cannot be. Loads each `ca_file` once.
pub fn upstreams(config: &Config) -> Vec<(String, Result<Upstream, UpstreamError>)> {
    config
        .upstreams
        .iter()
        .map(|(name, upstream)| {
            let built = match upstream.login(&config.postmark) {
                None => Err(UpstreamError::NoToken { name: name.clone() }),
                Some(login) => tls_client_config(upstream.ca_file.as_deref())
                    .map(|config| TlsConnector::from(Arc::new(config)))
                    .map(|connector| Upstream {
                        name: name.clone(),
                        host: upstream.host.clone(),
                        port: upstream.port,
                        tls: upstream.tls,
                        connector,
                        login,
                        helo: config.server.hostname.clone(),
                        timeout: upstream.timeout,
                        connections: upstream.connections.max(1),
                    })
                    .map_err(|source| UpstreamError::Tls {
                        name: name.clone(),
                        source,
                    }),
            };
            (name.clone(), built)
        })
        .collect()
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}
