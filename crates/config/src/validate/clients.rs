//! `[[clients]]`: the apps that authenticate, each with its own name and
//! argon2id password hash; and how they fit the `[server]` AUTH keys.

use std::collections::{BTreeMap, BTreeSet};

use crate::raw::{RawClient, RawServer, RawUpstream};
use crate::report::Problems;
use crate::units;
use figment::value::Value;

use crate::{Client, ClientRoute, Glob, Rate, Secret};

use crate::ANONYMOUS_CLIENT as ANONYMOUS;

pub(super) fn clients(raw: &[RawClient], p: &mut Problems) -> Option<Vec<Client>> {
    let mut names = BTreeSet::new();
    let mut ok = true;
    let mut clients = Vec::with_capacity(raw.len());
    for (i, c) in raw.iter().enumerate() {
        let key = format!("clients[{i}]");
        let rate = rate(&c.rate, &format!("{key}.rate"), p);
        ok &= rate.is_some();
        let name = c.name.trim();
        if name == ANONYMOUS {
            p.add(
                format!("{key}.name"),
                format!("`{ANONYMOUS}` is the metrics label of sessions without AUTH; choose another name"),
            );
            ok = false;
        } else if name.is_empty() || name.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            p.add(
                format!("{key}.name"),
                format!("`{}` is not a client name (one word, e.g. \"billing\"): it is the AUTH username", c.name),
            );
            ok = false;
        } else if !names.insert(name.to_owned()) {
            p.add(
                format!("{key}.name"),
                format!("`{name}` is given to two clients; each needs its own name"),
            );
            ok = false;
        }
        if let Err(why) = check_hash(c.password_hash.trim()) {
            p.add(format!("{key}.password_hash"), why);
            ok = false;
        }
        let senders = senders(c.senders.as_ref(), &format!("{key}.senders"), p);
        ok &= senders.is_some();
        clients.push(Client {
            name: name.to_owned(),
            password_hash: Secret::new(c.password_hash.trim()),
            senders: senders.unwrap_or_default(),
            rate: rate.flatten(),
        });
    }
    ok.then_some(clients)
}

/// A rate key (`server.rate`, `clients[i].rate`): `Some(None)` when empty
/// (unlimited), `None` after adding a problem.
pub(super) fn rate(text: &str, key: &str, p: &mut Problems) -> Option<Option<Rate>> {
    if text.trim().is_empty() {
        return Some(None);
    }
    match units::parse_rate(text) {
        Ok(rate) => Some(Some(rate)),
        Err(why) => {
            p.add(key, why);
            None
        }
    }
}

/// Each client's `upstream` and `stream`, for the router: only clients
/// that set one. An `upstream` must name an `[upstreams.<name>]`.
pub(super) fn routes(
    raw: &[RawClient],
    upstreams: &BTreeMap<String, Option<RawUpstream>>,
    p: &mut Problems,
) -> Option<BTreeMap<String, ClientRoute>> {
    let mut ok = true;
    let mut routes = BTreeMap::new();
    for (i, c) in raw.iter().enumerate() {
        let upstream = c.upstream.trim();
        let stream = c.stream.trim();
        if !upstream.is_empty() && !upstreams.contains_key(upstream) {
            let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
            p.add(
                format!("clients[{i}].upstream"),
                format!(
                    "`{upstream}` is not an upstream; known: {} (or add [upstreams.{upstream}])",
                    known.join(", ")
                ),
            );
            ok = false;
        }
        if stream
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
        {
            p.add(
                format!("clients[{i}].stream"),
                format!("`{stream}` is not a message stream id (one word, e.g. \"broadcasts\")"),
            );
            ok = false;
        }
        if upstream.is_empty() && stream.is_empty() {
            continue;
        }
        let set = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        routes.insert(
            c.name.trim().to_owned(),
            ClientRoute {
                upstream: set(upstream),
                stream: set(stream),
            },
        );
    }
    ok.then_some(routes)
}

/// `senders`: a list of globs (or one), each compiled; none means any
/// sender.
fn senders(value: Option<&Value>, key: &str, p: &mut Problems) -> Option<Vec<Glob>> {
    let items: Vec<&Value> = match value {
        None => return Some(Vec::new()),
        Some(Value::Array(_, items)) => items.iter().collect(),
        Some(one) => vec![one],
    };
    let mut globs = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let pattern = item.as_str().map(str::trim).unwrap_or_default();
        match Glob::new(pattern) {
            Ok(glob) if !pattern.is_empty() => globs.push(glob),
            _ => {
                p.add(
                    format!("{key}[{i}]"),
                    "must be an address glob, e.g. \"*@billing.example.com\" or \"noreply@example.com\"",
                );
                ok = false;
            }
        }
    }
    ok.then_some(globs)
}

/// A PHC string argon2 can verify against: argon2id, with salt, hash and
/// valid parameters. The message never repeats the value.
fn check_hash(text: &str) -> Result<(), String> {
    const HOW: &str = "make one with `postmark-relay hash-password`";
    if text.is_empty() {
        return Err(format!("is empty; {HOW}"));
    }
    let hash = argon2::PasswordHash::new(text)
        .map_err(|e| format!("is not a PHC password hash ({e}); {HOW}"))?;
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return Err(format!(
            "uses `{}`, not argon2id; {HOW}",
            hash.algorithm.as_str()
        ));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(format!("has no salt or no hash part; {HOW}"));
    }
    argon2::Params::try_from(&hash)
        .map_err(|e| format!("has argon2 parameters that cannot be used ({e}); {HOW}"))?;
    Ok(())
}

/// The `[server]` AUTH keys against the client list.
pub(super) fn auth_keys(server: &RawServer, clients: &[RawClient], p: &mut Problems) -> bool {
    let mut ok = true;
    if server.accept_auth && !clients.is_empty() {
        p.add(
            "server.accept_auth",
            "is true while [[clients]] are given: server.accept_auth accepts any credentials, \
             [[clients]] checks them; remove server.accept_auth (or the [[clients]])",
        );
        ok = false;
    }
    if server.require_auth && clients.is_empty() {
        p.add(
            "server.require_auth",
            "is true but no [[clients]] are given, so no client could ever authenticate; \
             add a [[clients]] entry (name and password_hash from `postmark-relay hash-password`)",
        );
        ok = false;
    }
    ok
}
