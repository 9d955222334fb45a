//! Configuration for postmark-relay: the TOML schema, its defaults, the
//! `POSTMARK_RELAY_<SECTION>__<KEY>` environment overrides, validation into
//! plain typed values, and redaction of secrets.
//!
//! Owns: reading files and environment variables. Must not know: SMTP,
//! the queue, or anything that happens after the config is loaded.
#![forbid(unsafe_code)]

mod error;
mod glob;
mod lenient;
mod load;
mod raw;
mod redact;
mod report;
mod secrets;
mod server_tls;
mod sources;
mod submission;
mod trust;
mod types;
mod units;
mod validate;

#[cfg(test)]
mod tests;

pub use error::{ConfigError, Problem};
pub use glob::Glob;
pub use load::{load, Loaded, DEFAULT_CONFIG_PATH};
pub use redact::to_redacted_toml;
pub use secrets::{shell_quote, world_readable_secrets, ExposedSecret, SecretFile};
pub use server_tls::{tls_server_config, ServerTlsError};
pub use sources::{CONFIG_ENV, ENV_PREFIX, TOKEN_ENV};
pub use submission::{load_submission, Submission};
pub use trust::{tls_client_config, TlsSetupError};
pub use types::*;
