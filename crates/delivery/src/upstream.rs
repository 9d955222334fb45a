//! One upstream's runtime settings, built once from the config.

use std::time::Duration;

use relay_config::{Secret, TlsMode};
use tokio_rustls::TlsConnector;

use crate::tls::{connector, TlsSetupError};

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
    /// The Server API Token, sent as both username and password.
    pub token: Secret,
    /// Our name in EHLO.
    pub helo: String,
    /// Connect and per-command timeout (mail-send's default is an hour).
    pub timeout: Duration,
    /// Parallel pooled connections.
    pub connections: usize,
}

impl Upstream {
    /// Builds the runtime settings, loading `ca_file` once.
    pub fn new(
        name: &str,
        config: &relay_config::Upstream,
        token: Secret,
        helo: &str,
        timeout: Duration,
    ) -> Result<Upstream, TlsSetupError> {
        Ok(Upstream {
            name: name.to_string(),
            host: config.host.clone(),
            port: config.port,
            tls: config.tls,
            connector: connector(config.ca_file.as_deref())?,
            token,
            helo: helo.to_string(),
            timeout,
            connections: config.connections.max(1),
        })
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}
