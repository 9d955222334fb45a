//! Where values come from: the environment providers, and naming the source
//! of any key (file path, environment variable, or `default`) for errors.

use std::ffi::OsString;

use figment::value::{Dict, Map, Value};
use figment::{Error, Figment, Metadata, Profile, Provider};

/// Prefix of every per-key environment override.
pub const ENV_PREFIX: &str = "POSTMARK_RELAY_";
/// Names the config file when `-c` is not given.
pub const CONFIG_ENV: &str = "POSTMARK_RELAY_CONFIG";
/// The conventional token variable (Docker/Kubernetes secrets).
pub const TOKEN_ENV: &str = "POSTMARK_SERVER_TOKEN";

/// Separates nesting levels in variable names: `SERVER__LISTEN`.
const SPLIT: &str = "__";
/// Metadata name shared by both environment providers.
const ENV_SOURCE: &str = "environment variable";

/// Every `POSTMARK_RELAY_<SECTION>__<KEY>` variable except tokens (read as
/// exact strings by [`EnvTokens`]), `POSTMARK_RELAY_CONFIG` (not a key)
/// and Kubernetes' service links (see [`is_service_link`]).
pub(crate) struct EnvKeys;

impl Provider for EnvKeys {
    fn metadata(&self) -> Metadata {
        env_metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        figment::providers::Env::prefixed(ENV_PREFIX)
            .filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                key != "config" && !is_token_key(&key) && !is_service_link(&key)
            })
            .split(SPLIT)
            .data()
    }
}

/// Secret variables (`POSTMARK_RELAY_POSTMARK__SERVER_TOKEN`,
/// `POSTMARK_RELAY_UPSTREAMS__<NAME>__SERVER_TOKEN`,
/// `POSTMARK_RELAY_QUEUE__URL`) as plain strings: figment's `Env` would
/// turn `0123` into the number 123, and might read a URL as something else.
pub(crate) struct EnvTokens;

impl Provider for EnvTokens {
    fn metadata(&self) -> Metadata {
        env_metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let mut dict = Dict::new();
        for (name, value) in std::env::vars_os().filter_map(utf8) {
            let Some(rest) = strip_prefix_ignore_case(&name, ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase();
            if is_token_key(&key) {
                let path: Vec<&str> = key.split(SPLIT).collect();
                insert(&mut dict, &path, Value::from(value));
            }
        }
        Ok(Map::from([(Profile::Default, dict)]))
    }
}

/// Reads one variable as a string; unset, empty or non-UTF-8 is `None`.
pub(crate) fn env_string(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Names where `key` (`server.listen[1]`, `upstreams.x.host`) got its value:
/// the file path, the environment variable, or `default`. A key with no
/// value of its own is attributed to the nearest table that has one.
pub(crate) fn describe(figment: &Figment, key: &str) -> String {
    let plain = key.split('[').next().unwrap_or(key);
    let mut path: Vec<&str> = plain.split('.').filter(|s| !s.is_empty()).collect();
    while !path.is_empty() {
        if let Some(metadata) = figment.find_metadata(&path.join(".")) {
            return name(metadata, &path);
        }
        path.pop();
    }
    "default".into()
}

fn name(metadata: &Metadata, path: &[&str]) -> String {
    if let Some(file) = metadata.source.as_ref().and_then(|s| s.file_path()) {
        return file.display().to_string();
    }
    if metadata.name == ENV_SOURCE {
        return metadata.interpolate(&Profile::Default, path);
    }
    "default".into()
}

fn env_metadata() -> Metadata {
    Metadata::named(ENV_SOURCE).interpolater(|_: &Profile, keys: &[&str]| {
        let upper: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
        format!("{ENV_PREFIX}{}", upper.join(SPLIT))
    })
}

/// Whether a variable (prefix removed, lowercase) is one Kubernetes puts
/// into every pod of a namespace holding a Service named `postmark-relay`
/// or `postmark-relay-…` (`POSTMARK_RELAY_SERVICE_HOST`,
/// `POSTMARK_RELAY_PORT_25_TCP`, ...): not ours, and no key looks like
/// them, so they are ignored instead of failing the config as unknown.
fn is_service_link(lowercase_key: &str) -> bool {
    lowercase_key == "port"
        || lowercase_key.starts_with("port_")
        || lowercase_key.starts_with("service_")
}

fn is_token_key(lowercase_key: &str) -> bool {
    lowercase_key == "postmark__server_token"
        || lowercase_key == "queue__url"
        || (lowercase_key.starts_with("upstreams__")
            && ["__server_token", "__smtp_access_key", "__smtp_secret_key"]
                .iter()
                .any(|secret| lowercase_key.ends_with(secret)))
}

fn utf8((name, value): (OsString, OsString)) -> Option<(String, String)> {
    Some((name.into_string().ok()?, value.into_string().ok()?))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Puts `value` at `path` inside `dict`, creating tables on the way.
fn insert(dict: &mut Dict, path: &[&str], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        dict.insert((*first).to_owned(), value);
        return;
    }
    let entry = dict
        .entry((*first).to_owned())
        .or_insert_with(|| Value::from(Dict::new()));
    if !matches!(entry, Value::Dict(..)) {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert(inner, rest, value);
    }
}
