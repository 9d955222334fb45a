//! `[rewrite]`: the verified sender that replaces unverified ones.

use crate::raw::RawRewrite;
use crate::report::Problems;
use crate::Rewrite;

pub(super) fn rewrite(raw: &RawRewrite, p: &mut Problems) -> Option<Rewrite> {
    let mut ok = true;
    let mut verified_domains = Vec::with_capacity(raw.verified_domains.len());
    for (i, domain) in raw.verified_domains.iter().enumerate() {
        match self::domain(domain) {
            Ok(domain) => verified_domains.push(domain),
            Err(why) => {
                p.add(format!("rewrite.verified_domains[{i}]"), why);
                ok = false;
            }
        }
    }
    let sender = match raw.sender.trim() {
        "" => None,
        text => match address_domain(text) {
            Some(domain) => Some((text.to_owned(), domain)),
            None => {
                p.add(
                    "rewrite.sender",
                    format!(
                        "`{text}` is not an address (local@domain, without <>, spaces or line breaks; e.g. noreply@example.com)"
                    ),
                );
                return None;
            }
        },
    };
    if let Some((text, domain)) = &sender {
        if raw.verified_domains.is_empty() {
            p.add(
                "rewrite.verified_domains",
                "must list the domains verified on the Postmark server when rewrite.sender is set (e.g. [\"example.com\"])",
            );
            ok = false;
        } else if ok && !verified_domains.contains(domain) {
            p.add(
                "rewrite.sender",
                format!(
                    "`{text}` is not at a domain in rewrite.verified_domains ({}); Postmark would reject it too",
                    verified_domains.join(", ")
                ),
            );
            ok = false;
        }
    }
    ok.then(|| Rewrite {
        verified_domains,
        sender: sender.map(|(text, _)| text),
    })
}

/// One exact domain, lowercased.
pub(super) fn domain(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.contains('@') {
        return Err(format!(
            "`{text}` is an address; list the domain only (e.g. example.com)"
        ));
    }
    if text.starts_with('.')
        || text.contains(|c: char| {
            c == '*' || c == '<' || c == '>' || c.is_whitespace() || c.is_control()
        })
    {
        return Err(format!(
            "`{text}` is not a domain; list each exact domain (subdomains are not covered, no wildcards)"
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// The lowercased domain of `local@domain`, or `None` if `text` does not
/// look like one bare address: it goes into MAIL FROM and a header, so no
/// spaces, line breaks or angle brackets.
pub(super) fn address_domain(text: &str) -> Option<String> {
    if text.contains(|c: char| c == '<' || c == '>' || c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (local, domain) = text.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::{address_domain, domain};

    #[test]
    fn addresses() {
        assert_eq!(
            address_domain("noreply@Example.COM").as_deref(),
            Some("example.com")
        );
        for bad in [
            "noreply",
            "@example.com",
            "noreply@",
            "<noreply@example.com>",
            "no reply@example.com",
            "noreply@example.com\r\nBcc: x@y",
            "Name noreply@example.com",
        ] {
            assert_eq!(address_domain(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(domain(" Example.COM ").as_deref(), Ok("example.com"));
        for bad in [
            "",
            " ",
            "a@example.com",
            "*.example.com",
            ".example.com",
            "exa mple.com",
        ] {
            assert!(domain(bad).is_err(), "{bad:?}");
        }
    }
}
