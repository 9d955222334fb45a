//! `[postmark]`: where the Server API Token comes from.

use std::path::{Path, PathBuf};

use crate::raw::RawPostmark;
use crate::report::Problems;
use crate::{Postmark, Secret};

/// `server_token`, else `POSTMARK_SERVER_TOKEN`, else the contents of
/// `server_token_file`; each trimmed, and empty counts as not set.
pub(super) fn postmark(
    raw: &RawPostmark,
    env_token: Option<&str>,
    p: &mut Problems,
) -> Option<Postmark> {
    let server_token_file = match raw.server_token_file.trim() {
        "" => None,
        path => Some(PathBuf::from(path)),
    };
    let from_file = match &server_token_file {
        None => None,
        Some(path) => Some(read_secret_file(path, "postmark.server_token_file", p)?),
    };
    let server_token = secret(&raw.server_token)
        .or_else(|| env_token.and_then(secret))
        .or(from_file.flatten());
    Some(Postmark {
        server_token,
        server_token_file,
    })
}

/// A token as configured; blank means none.
pub(super) fn secret(text: &str) -> Option<Secret> {
    let text = text.trim();
    (!text.is_empty()).then(|| Secret::new(text))
}

/// The secret in the file named by `key`, trimmed: `Some(None)` for an
/// empty file, `None` (with a problem naming `key`) if unreadable.
pub(super) fn read_secret_file(path: &Path, key: &str, p: &mut Problems) -> Option<Option<Secret>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(secret(&text)),
        Err(e) => {
            p.add(key, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}
