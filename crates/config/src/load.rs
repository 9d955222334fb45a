//! Finding the config file and layering defaults, file and environment
//! into one [`Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use figment::Figment;
use serde::de::DeserializeOwned;

use crate::error::{ConfigError, Problem};
use crate::raw::{RawConfig, RawUpstream, SECTIONS};
use crate::report::Problems;
use crate::sources::{self, EnvKeys, EnvTokens, CONFIG_ENV, TOKEN_ENV};
use crate::validate::{self, Sections};
use crate::Config;

/// Read when neither `-c` nor `POSTMARK_RELAY_CONFIG` names a file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/postmark-relay/relay.toml";

/// A validated configuration and the file it came from, so the binary can
/// log it and reload the same file on SIGHUP.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// `None` when running on defaults and environment only.
    pub file: Option<PathBuf>,
}

/// Loads the configuration: built-in defaults, then the file (`path`, else
/// `$POSTMARK_RELAY_CONFIG`, else [`DEFAULT_CONFIG_PATH`] if it exists),
/// then `POSTMARK_RELAY_<SECTION>__<KEY>` variables; then validates it all.
/// A file that was named but does not exist is an error.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    let file = config_file(path)?;
    let config = load_file(file.as_deref())?;
    Ok(Loaded { config, file })
}

/// Which file to read, if any.
pub(crate) fn config_file(path: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    if let Some(path) = path {
        return require_file(path, "given with -c").map(Some);
    }
    if let Some(path) = sources::env_string(CONFIG_ENV) {
        return require_file(Path::new(&path), &format!("named by {CONFIG_ENV}")).map(Some);
    }
    let default = Path::new(DEFAULT_CONFIG_PATH);
    Ok(default.exists().then(|| default.to_path_buf()))
}

fn require_file(path: &Path, how: &str) -> Result<PathBuf, ConfigError> {
    let problem = match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => return Ok(path.to_path_buf()),
        Ok(_) => "is not a file".to_owned(),
        Err(e) => format!("cannot be read: {e}"),
    };
    Err(ConfigError::new(vec![Problem {
        key: String::new(),
        source: path.display().to_string(),
        message: format!("the config file {how} {problem}"),
    }]))
}

/// Defaults, `file`, environment → validated config.
pub(crate) fn load_file(file: Option<&Path>) -> Result<Config, ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
    if let Some(file) = file {
        figment = figment.merge(Toml::file_exact(file));
    }
    let figment = figment.merge(EnvKeys).merge(EnvTokens);

    let mut problems = Problems::new(&figment);
    // A file that does not parse as TOML poisons every lookup: report it alone.
    if let Err(e) = figment.extract::<BTreeMap<String, Value>>() {
        problems.add_figment("", e);
        return Err(ConfigError::new(problems.into_vec()));
    }
    let sections = read_sections(&figment, &mut problems);
    let env_token = sources::env_string(TOKEN_ENV);
    match validate::validate(&sections, env_token.as_deref(), &mut problems) {
        Some(config) => Ok(config),
        None => Err(ConfigError::new(problems.into_vec())),
    }
}

/// Reads each table separately, so one table's type error does not hide
/// another's problems.
fn read_sections(figment: &Figment, p: &mut Problems) -> Sections {
    if let Ok(top) = figment.extract::<BTreeMap<String, Value>>() {
        for key in top.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
            p.add(
                key.as_str(),
                format!("unknown table; expected one of: {}", SECTIONS.join(", ")),
            );
        }
    }
    Sections {
        server: section(figment, "server", p),
        // Absent from the defaults (none is the default): only read if given.
        clients: if figment.contains("clients") {
            section(figment, "clients", p).unwrap_or_default()
        } else {
            Vec::new()
        },
        queue: section(figment, "queue", p),
        postmark: section(figment, "postmark", p),
        upstreams: upstreams(figment, p),
        routing: section(figment, "routing", p),
        retry: section(figment, "retry", p),
        rewrite: section(figment, "rewrite", p),
        sendmail: section(figment, "sendmail", p),
        admin: section(figment, "admin", p),
        log: section(figment, "log", p),
    }
}

pub(crate) fn section<T: DeserializeOwned>(
    figment: &Figment,
    key: &str,
    p: &mut Problems,
) -> Option<T> {
    figment
        .extract_inner(key)
        .map_err(|e| p.add_figment(key, e))
        .ok()
}

fn upstreams(figment: &Figment, p: &mut Problems) -> BTreeMap<String, Option<RawUpstream>> {
    let Some(tables) = section::<BTreeMap<String, Value>>(figment, "upstreams", p) else {
        return BTreeMap::new();
    };
    tables
        .into_keys()
        .map(|name| {
            let raw = if valid_name(&name) {
                section(figment, &format!("upstreams.{name}"), p)
            } else {
                p.add(
                    format!("upstreams.{name}"),
                    "upstream names may contain only letters, digits, '-' and '_'",
                );
                None
            };
            (name, raw)
        })
        .collect()
}

/// Names must survive the `.`-separated key paths and env var names.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
