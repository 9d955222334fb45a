//! What `sendmail` needs from the configuration, and nothing more: the
//! relay's address (`server.listen`) and host name (`server.hostname`).
//!
//! Applications call sendmail as whatever user they run as (php-fpm, other
//! users' cron jobs), while the config may be readable by the relay's user
//! only when it holds the token. So this reads the `[server]` table alone,
//! never a secret file, and when the file cannot be read it says so — with
//! its absolute path and what to do — instead of calling it invalid.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use figment::Figment;

use crate::error::{ConfigError, Problem};
use crate::load::{config_file, section};
use crate::raw::{RawConfig, RawSendmail, RawServer};
use crate::report::Problems;
use crate::sources::{self, EnvKeys};
use crate::Sendmail;

/// Where a sendmail submission goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    /// The relay's first `server.listen` address.
    pub listen: SocketAddr,
    /// `server.hostname`: the domain of a default sender.
    pub hostname: String,
    /// Where `listen` came from (`server.listen in /etc/…/relay.toml`, the
    /// environment variable, or the default), for the message when the
    /// relay cannot be reached.
    pub listen_from: String,
    /// What to do with bare local recipients.
    pub sendmail: Sendmail,
    /// Where `[sendmail]` came from, for the message about a bare name.
    pub sendmail_from: String,
}

/// Reads the relay's address the way `load` finds the config file (`-c`,
/// `POSTMARK_RELAY_CONFIG`, `/etc/postmark-relay/relay.toml`), plus the
/// environment's `POSTMARK_RELAY_SERVER__…` overrides.
pub fn load_submission(path: Option<&Path>) -> Result<Submission, ConfigError> {
    let file = config_file(path)?.map(|f| std::path::absolute(&f).unwrap_or(f));
    let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
    if let Some(file) = &file {
        if let Err(e) = std::fs::read(file) {
            return Err(cannot_read(file, &e));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    let figment = figment.merge(EnvKeys);
    let mut problems = Problems::new(&figment);
    if let Err(e) = figment.extract::<BTreeMap<String, Value>>() {
        problems.add_figment("", e);
        return Err(ConfigError::new(problems.into_vec()));
    }
    let checked = section::<RawServer>(&figment, "server", &mut problems)
        .and_then(|raw| crate::validate::server_address(&raw, &mut problems));
    let sendmail = section::<RawSendmail>(&figment, "sendmail", &mut problems)
        .and_then(|raw| crate::validate::sendmail_section(&raw, &mut problems));
    match (checked, sendmail) {
        (Some((listen, hostname)), Some(sendmail)) => Ok(Submission {
            // `server.listen` has at least one entry once validated.
            listen: listen[0],
            hostname,
            listen_from: describe_listen(&figment),
            sendmail,
            sendmail_from: match sources::describe(&figment, "sendmail").as_str() {
                "default" => file.map_or_else(
                    || "the config (none was found)".to_string(),
                    |f| f.display().to_string(),
                ),
                source => source.to_string(),
            },
        }),
        _ => Err(ConfigError::new(problems.into_vec())),
    }
}

/// `server.listen in FILE`, the variable that set it, or the default.
fn describe_listen(figment: &Figment) -> String {
    match sources::describe(figment, "server.listen").as_str() {
        "default" => "the default server.listen".into(),
        source if source.starts_with(crate::ENV_PREFIX) => source.to_string(),
        file => format!("server.listen in {file}"),
    }
}

/// The config file exists but this user may not read it.
fn cannot_read(file: &Path, e: &std::io::Error) -> ConfigError {
    ConfigError::new(vec![Problem {
        key: String::new(),
        source: file.display().to_string(),
        message: format!(
            "cannot read the config file: {e}. sendmail needs only server.listen and server.hostname from it: \
             make it readable by this user, keeping the token out of it (POSTMARK_SERVER_TOKEN or \
             postmark.server_token_file), or set POSTMARK_RELAY_SERVER__LISTEN"
        ),
    }])
}
