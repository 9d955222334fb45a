//! Collects problems while validating, attributing each key to its source.

use figment::error::Kind;
use figment::Figment;

use crate::error::Problem;
use crate::sources;

/// Problems found so far; validation keeps going after each one so the
/// user sees all of them at once.
pub(crate) struct Problems<'a> {
    figment: &'a Figment,
    list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub(crate) fn new(figment: &'a Figment) -> Self {
        Problems {
            figment,
            list: Vec::new(),
        }
    }

    /// Records that `key` is wrong, naming where its value came from.
    pub(crate) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let source = sources::describe(self.figment, &key);
        self.list.push(Problem {
            key,
            source,
            message: message.into(),
        });
    }

    /// Records every error in a figment error chain (serde type errors,
    /// unknown keys, unreadable files) raised while reading the table at
    /// `table` (`""` for the whole configuration).
    pub(crate) fn add_figment(&mut self, table: &str, error: figment::Error) {
        let table: Vec<String> = table
            .split('.')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        for error in error {
            let key = error_key(&table, &error);
            let source = if key.is_empty() {
                error
                    .metadata
                    .as_ref()
                    .and_then(|m| m.source.as_ref())
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "default".into())
            } else {
                sources::describe(self.figment, &key)
            };
            self.list.push(Problem {
                key,
                source,
                message: error.kind.to_string(),
            });
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn into_vec(self) -> Vec<Problem> {
        self.list
    }
}

/// The full key of a figment error. `extract_inner` appends the table's
/// path after the path inside it (`listen_on.server`), so put it first; and
/// name the field itself for unknown or missing fields.
fn error_key(table: &[String], error: &figment::Error) -> String {
    let mut inner = error.path.clone();
    if inner.ends_with(table) {
        inner.truncate(inner.len() - table.len());
    }
    let mut path = table.to_vec();
    path.extend(inner);
    let field = match &error.kind {
        Kind::UnknownField(field, _) => Some(field.clone()),
        Kind::MissingField(field) => Some(field.to_string()),
        _ => None,
    };
    if let Some(field) = field {
        if path.last() != Some(&field) {
            path.push(field);
        }
    }
    join_key(&path)
}

/// `["routing", "rules", "0", "sendr"]` → `routing.rules[0].sendr`.
fn join_key(path: &[String]) -> String {
    let mut key = String::new();
    for segment in path {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            key.push_str(&format!("[{segment}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(segment);
        }
    }
    key
}
