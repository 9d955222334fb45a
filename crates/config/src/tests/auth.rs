//! Inbound TLS and `[[clients]]`: the keys, how they fit together, and that
//! a password hash never prints.

use argon2::PasswordHasher;
use relay_testkit::ServerCert;

use super::*;

fn hash(password: &str) -> String {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .expect("hash")
        .to_string()
}

/// Writes a fresh certificate and key as `cert.pem` and `key.pem`.
fn pem_files(jail: &Jail) -> ServerCert {
    let cert = ServerCert::generate("relay-config test CA");
    file(jail, "cert.pem", &cert.cert_pem);
    file(jail, "key.pem", &cert.key_pem);
    cert
}

#[test]
fn tls_and_clients_load_into_typed_values() {
    jail(|jail| {
        pem_files(jail);
        let h = hash("s3cret");
        file(
            jail,
            "relay.toml",
            &format!(
                "[server]\ntls_cert_file = \"cert.pem\"\ntls_key_file = \"key.pem\"\nrequire_tls = true\nrequire_auth = true\n\n\
                 [[clients]]\nname = \"billing\"\npassword_hash = \"{h}\"\n\n[[clients]]\nname = \"crm\"\npassword_hash = \"{h}\"\n"
            ),
        );
        let config = load_ok(jail, Some("relay.toml"));
        let s = &config.server;
        let tls = s.tls.as_ref().expect("tls set");
        assert_eq!(tls.cert_file, PathBuf::from("cert.pem"));
        assert_eq!(tls.key_file, PathBuf::from("key.pem"));
        assert!(s.require_tls && s.require_auth);
        let names: Vec<&str> = s.clients.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["billing", "crm"]);
        assert_eq!(s.clients[0].password_hash.expose(), h);

        // Never printed: not in Debug, not in `config` output.
        let debug = format!("{config:?}");
        assert!(!debug.contains(&h), "{debug}");
        let text = to_redacted_toml(&config);
        assert!(!text.contains(&h), "{text}");
        assert!(
            text.contains("[[clients]]") && text.contains("name = \"billing\""),
            "{text}"
        );
        assert!(text.contains("password_hash = \"***\""), "{text}");
        assert!(text.contains("tls_cert_file = \"cert.pem\""), "{text}");
        assert!(text.contains("require_auth = true"), "{text}");
    });
}

#[test]
fn defaults_offer_no_tls_and_no_clients_and_print_none() {
    jail(|jail| {
        let config = load_ok(jail, None);
        assert_eq!(config.server.tls, None);
        assert!(!config.server.require_tls && !config.server.require_auth);
        assert!(config.server.clients.is_empty());
        let text = to_redacted_toml(&config);
        assert!(!text.contains("clients"), "{text}");
        file(jail, "printed.toml", &text);
        assert_eq!(load_ok(jail, Some("printed.toml")), config);
    });
}

#[test]
fn cert_without_key_names_both_keys() {
    jail(|jail| {
        pem_files(jail);
        file(jail, "a.toml", "[server]\ntls_cert_file = \"cert.pem\"\n");
        let err = load_err(jail, Some("a.toml"));
        let p = problem(&err, "server.tls_cert_file");
        assert!(p.message.contains("server.tls_key_file"), "{err}");
        assert!(p.source.ends_with("a.toml"), "{err}");

        file(jail, "b.toml", "[server]\ntls_key_file = \"key.pem\"\n");
        let err = load_err(jail, Some("b.toml"));
        assert!(problem(&err, "server.tls_key_file")
            .message
            .contains("server.tls_cert_file"));
    });
}

#[test]
fn unreadable_or_bad_pem_names_the_key_and_the_file() {
    jail(|jail| {
        let cert = pem_files(jail);
        file(jail, "garbage.pem", "not a certificate\n");
        file(
            jail,
            "missing.toml",
            "[server]\ntls_cert_file = \"nope.pem\"\ntls_key_file = \"key.pem\"\n",
        );
        let err = load_err(jail, Some("missing.toml"));
        let p = problem(&err, "server.tls_cert_file");
        assert!(p.message.contains("nope.pem"), "{err}");

        file(
            jail,
            "garbage.toml",
            "[server]\ntls_cert_file = \"cert.pem\"\ntls_key_file = \"garbage.pem\"\n",
        );
        let err = load_err(jail, Some("garbage.toml"));
        assert!(
            problem(&err, "server.tls_key_file")
                .message
                .contains("garbage.pem"),
            "{err}"
        );

        // A key from another certificate.
        let other = ServerCert::generate("another CA");
        file(jail, "other-key.pem", &other.key_pem);
        file(
            jail,
            "mismatch.toml",
            "[server]\ntls_cert_file = \"cert.pem\"\ntls_key_file = \"other-key.pem\"\n",
        );
        let err = load_err(jail, Some("mismatch.toml"));
        assert!(
            problem(&err, "server.tls_key_file")
                .message
                .contains("other-key.pem"),
            "{err}"
        );
        // The key material itself never appears in an error.
        let body = cert.key_pem.lines().nth(1).expect("pem body");
        assert!(!err.to_string().contains(body));
    });
}

#[test]
fn require_tls_needs_a_certificate_and_require_auth_needs_clients() {
    jail(|jail| {
        file(jail, "tls.toml", "[server]\nrequire_tls = true\n");
        let err = load_err(jail, Some("tls.toml"));
        assert!(problem(&err, "server.require_tls")
            .message
            .contains("tls_cert_file"));

        file(jail, "auth.toml", "[server]\nrequire_auth = true\n");
        let err = load_err(jail, Some("auth.toml"));
        assert!(problem(&err, "server.require_auth")
            .message
            .contains("[[clients]]"));
    });
}

#[test]
fn accept_auth_with_clients_names_both() {
    jail(|jail| {
        let h = hash("pw");
        file(
            jail,
            "relay.toml",
            &format!("[server]\naccept_auth = true\n\n[[clients]]\nname = \"app\"\npassword_hash = \"{h}\"\n"),
        );
        let err = load_err(jail, Some("relay.toml"));
        let p = problem(&err, "server.accept_auth");
        assert!(p.message.contains("[[clients]]"), "{err}");
    });
}

#[test]
fn bad_client_entries_are_each_reported_without_the_hash() {
    jail(|jail| {
        let h = hash("pw");
        let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        file(
            jail,
            "relay.toml",
            &format!(
                "[[clients]]\nname = \"app\"\npassword_hash = \"not-a-hash\"\n\n\
                 [[clients]]\nname = \"app\"\npassword_hash = \"{h}\"\n\n\
                 [[clients]]\nname = \"\"\npassword_hash = \"{bcrypt}\"\n\n\
                 [[clients]]\nname = \"other\"\npassword_hash = \"{argon2i}\"\n"
            ),
        );
        let err = load_err(jail, Some("relay.toml"));
        let text = err.to_string();
        assert!(problem(&err, "clients[0].password_hash")
            .message
            .contains("hash-password"));
        assert!(problem(&err, "clients[1].name")
            .message
            .contains("two clients"));
        problem(&err, "clients[2].name");
        problem(&err, "clients[2].password_hash");
        assert!(problem(&err, "clients[3].password_hash")
            .message
            .contains("argon2id"));
        assert!(problem(&err, "clients[0].password_hash")
            .source
            .ends_with("relay.toml"));
        for secret in ["not-a-hash", bcrypt, argon2i, h.as_str()] {
            assert!(!text.contains(secret), "{text}");
        }
    });
}

/// Rates, and a client's own upstream and stream, load into typed values
/// (the router gets the routes), and print back as written.
#[test]
fn client_routes_and_rates_load() {
    jail(|jail| {
        let h = hash("pw");
        file(
            jail,
            "relay.toml",
            &format!(
                "[server]\nrate = \"600/m\"\n\n[[clients]]\nname = \"news\"\npassword_hash = \"{h}\"\n\
                 upstream = \"broadcast\"\nstream = \"newsletters\"\nrate = \"3/h\"\n\n\
                 [[clients]]\nname = \"billing\"\npassword_hash = \"{h}\"\n"
            ),
        );
        let config = load_ok(jail, Some("relay.toml"));
        assert_eq!(
            config.server.rate,
            Some(Rate {
                count: 600,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(
            config.server.clients[0]
                .rate
                .map(|r| r.to_string())
                .as_deref(),
            Some("3/h")
        );
        assert_eq!(config.server.clients[1].rate, None);
        assert_eq!(
            config.routing.clients["news"],
            ClientRoute {
                upstream: Some("broadcast".into()),
                stream: Some("newsletters".into()),
            }
        );
        assert!(!config.routing.clients.contains_key("billing"));
        let printed = to_redacted_toml(&config);
        for line in [
            "rate = \"600/m\"",
            "rate = \"3/h\"",
            "upstream = \"broadcast\"",
            "stream = \"newsletters\"",
        ] {
            assert!(printed.contains(line), "{line} missing from:\n{printed}");
        }
    });
}

/// A bad rate, an unknown upstream, a stream that is not one word and the
/// reserved name each name their key.
#[test]
fn bad_client_routes_and_rates_name_their_key() {
    jail(|jail| {
        let h = hash("pw");
        file(
            jail,
            "relay.toml",
            &format!(
                "[server]\nrate = \"fast\"\n\n[[clients]]\nname = \"app\"\npassword_hash = \"{h}\"\n\
                 upstream = \"nowhere\"\nstream = \"two words\"\nrate = \"0/m\"\n\n\
                 [[clients]]\nname = \"anonymous\"\npassword_hash = \"{h}\"\nrate = \"5/week\"\n"
            ),
        );
        let err = load_err(jail, Some("relay.toml"));
        assert!(
            problem(&err, "server.rate").message.contains("\"600/m\""),
            "{err}"
        );
        assert!(
            problem(&err, "clients[0].upstream")
                .message
                .contains("transactional"),
            "{err}"
        );
        problem(&err, "clients[0].stream");
        assert!(
            problem(&err, "clients[0].rate")
                .message
                .contains("at least 1"),
            "{err}"
        );
        assert!(
            problem(&err, "clients[1].name")
                .message
                .contains("anonymous"),
            "{err}"
        );
        problem(&err, "clients[1].rate");
    });
}

/// `senders`: a list of globs (or one), matched case-insensitively
/// against the whole address; an empty pattern names its key.
#[test]
fn client_senders_are_globs() {
    jail(|jail| {
        let h = hash("pw");
        file(
            jail,
            "relay.toml",
            &format!("[[clients]]\nname = \"app\"\npassword_hash = \"{h}\"\nsenders = [\"*@Example.com\", \"ops@other.test\"]\n"),
        );
        let config = load_ok(jail, Some("relay.toml"));
        let app = &config.server.clients[0];
        assert!(app.may_send_as("billing@example.com"));
        assert!(app.may_send_as("OPS@other.test"));
        assert!(!app.may_send_as("billing@example.com.evil.test"));
        assert!(!app.may_send_as("ceo@other.test"));
        file(
            jail,
            "bad.toml",
            &format!("[[clients]]\nname = \"app\"\npassword_hash = \"{h}\"\nsenders = \"\"\n"),
        );
        let err = load_err(jail, Some("bad.toml"));
        problem(&err, "clients[0].senders[0]");
    });
}

#[test]
fn require_auth_lets_a_public_listener_allow_everyone() {
    jail(|jail| {
        let h = hash("pw");
        file(
            jail,
            "relay.toml",
            &format!(
                "[server]\nlisten = [\"0.0.0.0:25\"]\nallowed_networks = [\"0.0.0.0/0\"]\nrequire_auth = true\n\n\
                 [[clients]]\nname = \"app\"\npassword_hash = \"{h}\"\n"
            ),
        );
        load_ok(jail, Some("relay.toml"));
    });
}

#[test]
fn tls_keys_from_the_environment() {
    jail(|jail| {
        pem_files(jail);
        jail.set_env("POSTMARK_RELAY_SERVER__TLS_CERT_FILE", "cert.pem");
        jail.set_env("POSTMARK_RELAY_SERVER__TLS_KEY_FILE", "key.pem");
        jail.set_env("POSTMARK_RELAY_SERVER__REQUIRE_TLS", "true");
        let config = load_ok(jail, None);
        assert!(config.server.tls.is_some() && config.server.require_tls);
    });
}
