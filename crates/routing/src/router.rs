//! The compiled routing table and the decision for one message.

use std::cell::OnceCell;

use relay_config::{Routing, Rule};
use relay_message::{find, first_address};

use crate::Route;

/// The header Postmark reads to pick a message stream.
const STREAM_HEADER: &str = "X-PM-Message-Stream";
/// Where `broadcast_streams` values go; every other stream value goes to
/// [`TRANSACTIONAL`]. Both always exist (see `relay_config::Config`).
const BROADCAST: &str = "broadcast";
const TRANSACTIONAL: &str = "transactional";

/// `[routing]`, ready to route: its globs were compiled when the config
/// was validated, so routing cannot fail.
#[derive(Debug, Clone)]
pub struct Router {
    routing: Routing,
}

impl Router {
    /// The router for a validated `[routing]`.
    pub fn new(routing: &Routing) -> Router {
        Router {
            routing: routing.clone(),
        }
    }

    /// sender: envelope MAIL FROM address without <> ("" for the null
    /// sender); message: full RFC 5322 bytes (CRLF), headers first.
    ///
    /// An `X-PM-Message-Stream` header decides first (an empty one is
    /// ignored): the upstream that lists the stream in its `streams`, else
    /// `broadcast` for `broadcast_streams`, else `transactional`. Then the
    /// first rule whose conditions all hold, then `routing.default`.
    pub fn route(&self, sender: &str, message: &[u8]) -> Route {
        self.route_client(None, sender, message)
    }

    /// [`Router::route`] for a message from the `[[clients]]` entry named
    /// `client` (`None`: a session without AUTH). A client that sets
    /// `upstream` or `stream` decides instead of the rules: its `upstream`
    /// always, its `stream` unless the message carries its own
    /// `X-PM-Message-Stream`; without `upstream`, the stream picks the
    /// upstream as the header would.
    pub fn route_client(&self, client: Option<&str>, sender: &str, message: &[u8]) -> Route {
        let own = client.and_then(|name| self.routing.clients.get(name));
        let header = find(message, STREAM_HEADER).filter(|s| !s.is_empty());
        let added = header.is_none();
        if let Some(stream) = header.or_else(|| own.and_then(|c| c.stream.clone())) {
            let upstream = own
                .and_then(|c| c.upstream.clone())
                .unwrap_or_else(|| self.stream_upstream(&stream));
            return Route {
                upstream,
                stream: Some(stream),
                rule: added.then(|| format!("clients.{}", client.unwrap_or_default())),
            };
        }
        if let Some(upstream) = own.and_then(|c| c.upstream.clone()) {
            return Route {
                upstream,
                stream: None,
                rule: Some(format!("clients.{}", client.unwrap_or_default())),
            };
        }
        let from = OnceCell::new();
        let from = || {
            from.get_or_init(|| find(message, "From").and_then(|v| first_address(&v)))
                .as_deref()
        };
        match self
            .routing
            .rules
            .iter()
            .find(|rule| matches(rule, sender, message, from))
        {
            Some(rule) => Route {
                upstream: rule.upstream.clone(),
                stream: rule.stream.clone(),
                rule: Some(rule.name.clone()),
            },
            None => Route {
                upstream: self.routing.default.clone(),
                stream: None,
                rule: None,
            },
        }
    }

    /// The upstream for a stream: the one that lists it in its `streams`,
    /// else `broadcast` for `broadcast_streams`, else `transactional`.
    fn stream_upstream(&self, stream: &str) -> String {
        match self
            .routing
            .stream_upstreams
            .get(&stream.to_ascii_lowercase())
        {
            Some(upstream) => upstream.clone(),
            None if self
                .routing
                .broadcast_streams
                .iter()
                .any(|b| b.eq_ignore_ascii_case(stream)) =>
            {
                BROADCAST.to_owned()
            }
            None => TRANSACTIONAL.to_owned(),
        }
    }
}

/// Every condition `rule` gives holds; one on a missing header does not.
fn matches<'a>(
    rule: &Rule,
    sender: &str,
    message: &[u8],
    from: impl Fn() -> Option<&'a str>,
) -> bool {
    if let Some(glob) = &rule.sender {
        if !glob.is_match(sender) {
            return false;
        }
    }
    if let Some(glob) = &rule.from {
        if !from().is_some_and(|addr| glob.is_match(addr)) {
            return false;
        }
    }
    if let Some(name) = &rule.header {
        let Some(value) = find(message, name) else {
            return false;
        };
        if let Some(glob) = &rule.value {
            return glob.is_match(value.as_str());
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(pattern: &str) -> relay_config::Glob {
        relay_config::Glob::new(pattern).expect("valid glob")
    }

    fn rule(name: &str, upstream: &str) -> Rule {
        Rule {
            name: name.into(),
            sender: None,
            from: None,
            header: None,
            value: None,
            upstream: upstream.into(),
            stream: None,
        }
    }

    fn router(rules: Vec<Rule>) -> Router {
        let cfg = Routing {
            default: "transactional".into(),
            broadcast_streams: vec!["broadcast".into(), "broadcasts".into()],
            stream_upstreams: [("receipts".to_string(), "receipts".to_string())].into(),
            rules,
            clients: [
                (
                    "news".to_string(),
                    relay_config::ClientRoute {
                        upstream: None,
                        stream: Some("broadcasts".into()),
                    },
                ),
                (
                    "pinned".to_string(),
                    relay_config::ClientRoute {
                        upstream: Some("bounce".into()),
                        stream: None,
                    },
                ),
                (
                    "both".to_string(),
                    relay_config::ClientRoute {
                        upstream: Some("receipts".into()),
                        stream: Some("invoices".into()),
                    },
                ),
            ]
            .into(),
        };
        Router::new(&cfg)
    }

    fn route(upstream: &str, stream: Option<&str>, rule: Option<&str>) -> Route {
        Route {
            upstream: upstream.into(),
            stream: stream.map(Into::into),
            rule: rule.map(Into::into),
        }
    }

    const PLAIN: &[u8] = b"From: App <app@example.com>\r\nSubject: hi\r\n\r\nbody\r\n";

    #[test]
    fn default_when_nothing_matches() {
        let r = router(vec![Rule {
            sender: Some(glob("*@news.example.com")),
            ..rule("news", "broadcast")
        }]);
        assert_eq!(
            r.route("app@example.com", PLAIN),
            route("transactional", None, None)
        );
    }

    #[test]
    fn stream_header_keeps_its_stream() {
        let r = router(vec![]);
        let msg = b"X-PM-Message-Stream: Broadcasts\r\n\r\n";
        assert_eq!(
            r.route("a@b", msg),
            route("broadcast", Some("Broadcasts"), None)
        );
        let msg = b"x-pm-message-stream: outbound\r\n\r\n";
        assert_eq!(
            r.route("a@b", msg),
            route("transactional", Some("outbound"), None)
        );
        let msg = b"X-PM-Message-Stream: my-newsletter\r\n\r\n";
        assert_eq!(
            r.route("a@b", msg),
            route("transactional", Some("my-newsletter"), None)
        );
        // An upstream that lists the stream (`upstreams.<name>.streams`).
        let msg = b"X-PM-Message-Stream: Receipts\r\n\r\n";
        assert_eq!(
            r.route("a@b", msg),
            route("receipts", Some("Receipts"), None)
        );
    }

    /// A client's `stream` stands in for a missing header (and picks the
    /// upstream as the header would); its `upstream` beats every rule and
    /// header; a message's own header keeps its stream.
    #[test]
    fn client_routes_decide_before_rules() {
        let r = router(vec![Rule {
            sender: Some(glob("*")),
            ..rule("catch-all", "transactional")
        }]);
        let client = |name| Some(name);
        assert_eq!(
            r.route_client(client("news"), "a@b", PLAIN),
            route("broadcast", Some("broadcasts"), Some("clients.news"))
        );
        let own = b"X-PM-Message-Stream: outbound\r\n\r\n";
        assert_eq!(
            r.route_client(client("news"), "a@b", own),
            route("transactional", Some("outbound"), None)
        );
        assert_eq!(
            r.route_client(client("pinned"), "a@b", PLAIN),
            route("bounce", None, Some("clients.pinned"))
        );
        assert_eq!(
            r.route_client(client("pinned"), "a@b", own),
            route("bounce", Some("outbound"), None)
        );
        assert_eq!(
            r.route_client(client("both"), "a@b", PLAIN),
            route("receipts", Some("invoices"), Some("clients.both"))
        );
        // A client without its own routing, and no client, follow the rules.
        for name in [Some("other"), None] {
            assert_eq!(
                r.route_client(name, "a@b", PLAIN),
                route("transactional", None, Some("catch-all"))
            );
        }
    }

    #[test]
    fn empty_stream_header_is_ignored() {
        let r = router(vec![]);
        assert_eq!(
            r.route("a@b", b"X-PM-Message-Stream:\r\n\r\n"),
            route("transactional", None, None)
        );
    }

    #[test]
    fn stream_header_beats_rules() {
        let r = router(vec![Rule {
            sender: Some(glob("*")),
            stream: Some("newsletter".into()),
            ..rule("all", "broadcast")
        }]);
        let msg = b"X-PM-Message-Stream: outbound\r\n\r\n";
        assert_eq!(
            r.route("a@b", msg),
            route("transactional", Some("outbound"), None)
        );
    }

    #[test]
    fn sender_glob_is_case_insensitive_whole_string() {
        let r = router(vec![Rule {
            sender: Some(glob("*@news.example.com")),
            stream: Some("newsletter".into()),
            ..rule("news", "broadcast")
        }]);
        let hit = route("broadcast", Some("newsletter"), Some("news"));
        assert_eq!(r.route("Bulk@NEWS.Example.COM", PLAIN), hit);
        assert_eq!(
            r.route("a@news.example.com.evil", PLAIN).rule,
            None,
            "whole-string match"
        );
        assert_eq!(r.route("a@example.com", PLAIN).rule, None);
    }

    #[test]
    fn null_sender_matches_only_globs_that_accept_empty() {
        let r = router(vec![
            Rule {
                sender: Some(glob("?*")),
                ..rule("someone", "broadcast")
            },
            Rule {
                sender: Some(glob("")),
                ..rule("bounces", "bounce")
            },
        ]);
        assert_eq!(r.route("", PLAIN), route("bounce", None, Some("bounces")));
        assert_eq!(r.route("a@b", PLAIN).rule.as_deref(), Some("someone"));
    }

    #[test]
    fn from_glob_uses_the_header_address() {
        let r = router(vec![Rule {
            from: Some(glob("*@example.com")),
            ..rule("from-example", "broadcast")
        }]);
        assert_eq!(
            r.route("bounce@elsewhere", PLAIN).rule.as_deref(),
            Some("from-example")
        );
        let other = b"From: \"x@example.com\" <x@other.org>\r\n\r\n";
        assert_eq!(
            r.route("x@example.com", other).rule,
            None,
            "display name is not the address"
        );
        assert_eq!(
            r.route("x@example.com", b"Subject: no from\r\n\r\n").rule,
            None
        );
    }

    #[test]
    fn header_presence_and_value() {
        let r = router(vec![
            Rule {
                header: Some("list-unsubscribe".into()),
                value: Some(glob("*mailto:*")),
                ..rule("list-mailto", "broadcast")
            },
            Rule {
                header: Some("Precedence".into()),
                ..rule("precedence", "broadcast")
            },
        ]);
        let list = b"List-Unsubscribe: <MAILTO:u@x>,\r\n <https://x/u>\r\n\r\n";
        assert_eq!(r.route("a@b", list).rule.as_deref(), Some("list-mailto"));
        let list_https = b"List-Unsubscribe: <https://x/u>\r\n\r\n";
        assert_eq!(r.route("a@b", list_https).rule, None, "value must match");
        let precedence = b"PRECEDENCE: bulk\r\n\r\n";
        assert_eq!(
            r.route("a@b", precedence).rule.as_deref(),
            Some("precedence")
        );
        let in_body = b"Subject: x\r\n\r\nPrecedence: bulk\r\n";
        assert_eq!(
            r.route("a@b", in_body).rule,
            None,
            "body lines are not headers"
        );
    }

    #[test]
    fn all_conditions_must_hold_and_first_rule_wins() {
        let r = router(vec![
            Rule {
                sender: Some(glob("*@example.com")),
                header: Some("X-Campaign".into()),
                stream: Some("campaigns".into()),
                ..rule("campaign", "broadcast")
            },
            Rule {
                sender: Some(glob("*@example.com")),
                ..rule("example", "custom")
            },
            Rule {
                sender: Some(glob("*")),
                ..rule("catch-all", "broadcast")
            },
        ]);
        let campaign = b"X-Campaign: spring\r\n\r\n";
        assert_eq!(
            r.route("a@example.com", campaign),
            route("broadcast", Some("campaigns"), Some("campaign"))
        );
        assert_eq!(
            r.route("a@example.com", PLAIN),
            route("custom", None, Some("example"))
        );
        assert_eq!(
            r.route("a@other.org", campaign),
            route("broadcast", None, Some("catch-all"))
        );
    }

    #[test]
    fn non_utf8_and_folded_headers_route() {
        let r = router(vec![Rule {
            header: Some("X-Tag".into()),
            value: Some(glob("bulk mail*")),
            ..rule("tag", "broadcast")
        }]);
        let msg = b"Subject: \xff\xfe\r\nX-Tag: bulk\r\n mail \xc3\r\n\r\n";
        assert_eq!(r.route("a@b", msg).rule.as_deref(), Some("tag"));
        assert_eq!(r.route("a@b", b"\xff\xff\xff").rule, None);
    }
}
