//! The files this configuration reads secrets from, and which of them every
//! local user can read. `serve` (at start and on reload) and `check` warn
//! about those; they still work, because who may read a file is the
//! operator's call (a Docker secret is `0444` by default).
//!
//! A key that names a new secret file is added in [`Config::secret_files`]
//! and is then covered everywhere.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::Config;

/// A file a secret is read from, and the key that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// The key as docs/REFERENCE.md spells it (`postmark.server_token_file`).
    pub key: String,
    pub path: PathBuf,
}

/// A secret file whose mode lets every local user read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposedSecret {
    pub file: SecretFile,
    /// Its permission bits as found (`0o644`).
    pub mode: u32,
}

impl Config {
    /// Every file this configuration reads a secret from, whether or not
    /// another source of the same secret wins.
    pub fn secret_files(&self) -> Vec<SecretFile> {
        let mut files = Vec::new();
        if let Some(path) = &self.postmark.server_token_file {
            files.push(SecretFile {
                key: "postmark.server_token_file".into(),
                path: path.clone(),
            });
        }
        for (name, upstream) in &self.upstreams {
            if let Some(path) = &upstream.smtp_secret_key_file {
                files.push(SecretFile {
                    key: format!("upstreams.{name}.smtp_secret_key_file"),
                    path: path.clone(),
                });
            }
        }
        if let Some(tls) = &self.server.tls {
            files.push(SecretFile {
                key: "server.tls_key_file".into(),
                path: tls.key_file.clone(),
            });
        }
        if let Some(path) = &self.queue.url_file {
            files.push(SecretFile {
                key: "queue.url_file".into(),
                path: path.clone(),
            });
        }
        files
    }
}

/// The secret files of `config` that are world-readable (`o+r`). A file
/// that cannot be examined is left out: loading already reported it.
pub fn world_readable_secrets(config: &Config) -> Vec<ExposedSecret> {
    config
        .secret_files()
        .into_iter()
        .filter_map(|file| {
            let mode = std::fs::metadata(&file.path).ok()?.permissions().mode() & 0o7777;
            (mode & 0o004 != 0).then_some(ExposedSecret { file, mode })
        })
        .collect()
}

impl ExposedSecret {
    /// The command that takes other users' access away and keeps the
    /// owner's and the group's (the relay may read it through its group).
    pub fn fix(&self) -> String {
        format!("chmod o-rwx {}", shell_quote(&self.file.path))
    }
}

impl fmt::Display for ExposedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} is readable by every local user (mode {:04o}); it still works, but to keep the secret to the relay run: {}",
            self.file.key,
            self.file.path.display(),
            self.mode,
            self.fix()
        )
    }
}

/// `path` as one shell word: as it is when it holds only safe characters,
/// else in single quotes. For the commands the relay suggests (`chmod`).
pub fn shell_quote(path: &Path) -> String {
    let text = path.display().to_string();
    let safe = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%".contains(&b));
    if safe {
        text
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
