//! `[routing]`: the default upstream, broadcast streams and rules.

use std::collections::BTreeMap;

use super::upstream_names;
use crate::raw::{RawRouting, RawRule, RawUpstream};
use crate::report::Problems;
use crate::{Glob, Routing, Rule};

type Upstreams = BTreeMap<String, Option<RawUpstream>>;

pub(super) fn routing(
    raw: &RawRouting,
    upstreams: &Upstreams,
    p: &mut Problems,
) -> Option<Routing> {
    let default = raw.default.trim();
    let mut ok = known_upstream(default, "routing.default", upstreams, p);
    for (i, stream) in raw.broadcast_streams.iter().enumerate() {
        if stream.trim().is_empty() {
            p.add(
                format!("routing.broadcast_streams[{i}]"),
                "must not be empty",
            );
            ok = false;
        }
    }
    let rules: Vec<Option<Rule>> = raw
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| self::rule(i, rule, upstreams, p))
        .collect();
    let rules: Option<Vec<Rule>> = rules.into_iter().collect();
    if !ok {
        return None;
    }
    Some(Routing {
        default: default.to_owned(),
        broadcast_streams: raw
            .broadcast_streams
            .iter()
            .map(|s| s.trim().to_owned())
            .collect(),
        // Filled from the upstreams once they are checked (see `validate`).
        stream_upstreams: BTreeMap::new(),
        clients: BTreeMap::new(),
        rules: rules?,
    })
}

fn rule(i: usize, raw: &RawRule, upstreams: &Upstreams, p: &mut Problems) -> Option<Rule> {
    let key = |field: &str| format!("routing.rules[{i}].{field}");
    let sender = given(&raw.sender);
    let from = given(&raw.from);
    let header = given(&raw.header);
    let value = given(&raw.value);
    let mut ok = known_upstream(raw.upstream.trim(), &key("upstream"), upstreams, p);
    if sender.is_none() && from.is_none() && header.is_none() {
        p.add(
            format!("routing.rules[{i}]"),
            "needs at least one condition: sender, from or header",
        );
        ok = false;
    }
    if value.is_some() && header.is_none() {
        p.add(
            key("value"),
            "needs `header`: it is matched against that header's value",
        );
        ok = false;
    }
    if let Some(name) = &header {
        if name.contains(|c: char| c == ':' || c.is_whitespace() || c.is_control()) {
            p.add(
                key("header"),
                format!("`{name}` is not a header name (no colon or spaces)"),
            );
            ok = false;
        }
    }
    let mut glob = |field: &str, pattern: Option<String>| {
        let pattern = pattern?;
        match Glob::new(&pattern) {
            Ok(glob) => Some(glob),
            Err(e) => {
                p.add(
                    key(field),
                    format!("`{pattern}` is not a valid glob: {}", e.kind()),
                );
                ok = false;
                None
            }
        }
    };
    let (sender, from, value) = (
        glob("sender", sender),
        glob("from", from),
        glob("value", value),
    );
    if !ok {
        return None;
    }
    Some(Rule {
        name: given(&raw.name).unwrap_or_else(|| format!("rules[{i}]")),
        sender,
        from,
        header,
        value,
        upstream: raw.upstream.trim().to_owned(),
        stream: given(&raw.stream),
    })
}

fn known_upstream(name: &str, key: &str, upstreams: &Upstreams, p: &mut Problems) -> bool {
    if upstreams.contains_key(name) {
        return true;
    }
    p.add(
        key,
        format!(
            "no upstream named `{name}`; defined: {} (add an [upstreams.{name}] table or use one of these)",
            upstream_names(upstreams)
        ),
    );
    false
}

/// An optional key, where blank counts as not given.
fn given(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}
