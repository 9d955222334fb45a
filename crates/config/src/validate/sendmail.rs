//! `[sendmail]`: aliases and the domain for bare local recipients.

use std::collections::BTreeMap;

use super::rewrite::{address_domain, domain};
use crate::raw::RawSendmail;
use crate::report::Problems;
use crate::Sendmail;

pub(super) fn sendmail(raw: &RawSendmail, p: &mut Problems) -> Option<Sendmail> {
    let mut ok = true;
    let mut aliases = BTreeMap::new();
    for (name, targets) in &raw.aliases {
        let key = format!("sendmail.aliases.{name}");
        if name.is_empty()
            || name.contains(|c: char| c == '@' || c.is_whitespace() || c.is_control())
        {
            p.add(
                key,
                "an alias is a bare local name (e.g. root), without @ or spaces",
            );
            ok = false;
            continue;
        }
        let addresses: Vec<String> = targets
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if addresses.is_empty() || addresses.iter().any(|a| address_domain(a).is_none()) {
            p.add(
                key,
                format!("`{targets}` must be one or more full addresses, separated by commas (e.g. \"ops@example.com\")"),
            );
            ok = false;
            continue;
        }
        aliases.insert(name.to_ascii_lowercase(), addresses);
    }
    let domain = match raw.domain.trim() {
        "" => None,
        text => match domain(text) {
            Ok(domain) => Some(domain),
            Err(why) => {
                p.add("sendmail.domain", why);
                ok = false;
                None
            }
        },
    };
    ok.then_some(Sendmail { aliases, domain })
}
