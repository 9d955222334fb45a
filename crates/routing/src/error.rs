//! Why a [`crate::Router`] could not be built.

/// A routing configuration the router cannot run. `relay-config` already
/// rejects these, so this only fires for a hand-built `Routing`.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// A `sender`, `from` or `value` pattern is not a valid glob.
    #[error("routing rule `{rule}`: {field} `{pattern}` is not a valid glob: {source}")]
    BadGlob {
        /// The rule's name.
        rule: String,
        /// `sender`, `from` or `value`.
        field: &'static str,
        /// The pattern as configured.
        pattern: String,
        /// What globset objected to.
        #[source]
        source: globset::Error,
    },
    /// `routing.default` or a rule's `upstream` is empty, so no upstream
    /// could be named. (Whether a name exists is checked by `relay-config`,
    /// which knows the upstreams.)
    #[error("routing {place}: no upstream named")]
    UnknownUpstream {
        /// `default`, or which rule.
        place: String,
    },
}
