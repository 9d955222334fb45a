//! Tests of loading as a whole: defaults, file and environment layering,
//! tokens, error reporting and redaction. Every test that reads the
//! environment runs inside `figment::Jail`, which serialises them and
//! restores the environment afterwards.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Jail;

use crate::load::load_file;
use crate::*;

const TOKEN: &str = "a1b2c3d4-secret-token";

/// A jail with an empty environment, so the ambient one cannot leak in.
#[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's type
fn jail(f: impl FnOnce(&mut Jail)) {
    Jail::expect_with(|jail| {
        jail.clear_env();
        f(jail);
        Ok(())
    });
}

/// Writes a file in the jail's directory.
fn file(jail: &Jail, name: &str, contents: &str) {
    jail.create_file(name, contents).expect("write test file");
}

fn load_ok(jail: &Jail, file: Option<&str>) -> Config {
    let path = file.map(|f| jail.directory().join(f));
    match load_file(path.as_deref()) {
        Ok(config) => config,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn load_err(jail: &Jail, file: Option<&str>) -> ConfigError {
    let path = file.map(|f| jail.directory().join(f));
    match load_file(path.as_deref()) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e,
    }
}

fn problem<'a>(err: &'a ConfigError, key: &str) -> &'a Problem {
    err.problems()
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem for {key} in:\n{err}"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn upstream(host: &str, connections: usize) -> Upstream {
    Upstream {
        host: host.into(),
        port: 587,
        tls: TlsMode::StartTls,
        ca_file: None,
        connections,
        server_token: None,
        timeout: Duration::from_secs(60),
        streams: vec![],
        smtp_token: None,
        smtp_secret_key_file: None,
    }
}

#[test]
fn defaults_equal_design() {
    jail(|jail| {
        let expected = Config {
            server: Server {
                listen: vec![addr("127.0.0.1:25"), addr("[::1]:25")],
                hostname: crate::raw::system_hostname(),
                allowed_networks: vec![
                    "127.0.0.0/8".parse().expect("net"),
                    "::1/128".parse().expect("net"),
                ],
                max_message_size: 10_000_000,
                max_recipients: 1000,
                max_connections: 1024,
                command_timeout: Duration::from_secs(300),
                accept_auth: false,
                allow_open_relay: false,
                tls: None,
                require_tls: false,
                require_auth: false,
                rate: None,
                clients: vec![],
            },
            queue: Queue {
                backend: QueueBackend::Sqlite,
                path: PathBuf::from("/var/spool/postmark-relay"),
                url: None,
                url_file: None,
                ca_file: None,
                schema: "postmark_relay".into(),
                lease: Duration::from_secs(120),
                history: Duration::from_secs(7 * 86_400),
            },
            postmark: Postmark {
                server_token: None,
                server_token_file: None,
            },
            upstreams: BTreeMap::from([
                ("transactional".into(), upstream("smtp.postmarkapp.com", 4)),
                (
                    "broadcast".into(),
                    upstream("smtp-broadcasts.postmarkapp.com", 2),
                ),
            ]),
            routing: Routing {
                default: "transactional".into(),
                broadcast_streams: vec!["broadcast".into(), "broadcasts".into()],
                stream_upstreams: BTreeMap::new(),
                clients: BTreeMap::new(),
                rules: vec![],
            },
            retry: Retry {
                initial_delay: Duration::from_secs(5),
                max_delay: Duration::from_secs(15 * 60),
                multiplier: 2.0,
                give_up_after: Duration::from_secs(72 * 3600),
            },
            admin: Admin {
                listen: Some(addr("127.0.0.1:9925")),
            },
            log: Log {
                format: LogFormat::Text,
                level: "info".into(),
            },
            rewrite: Rewrite {
                verified_domains: vec![],
                sender: None,
            },
            sendmail: Sendmail::default(),
        };
        assert_eq!(load_ok(jail, None), expected);
    });
}

#[test]
fn file_overrides_merge_per_key() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            r#"
            [server]
            listen = ["0.0.0.0:2525"]
            allowed_networks = ["10.0.0.0/8", "192.168.1.7"]
            max_message_size = 1048576
            accept_auth = true

            [upstreams.transactional]
            port = 2525

            [upstreams.local]
            host = "127.0.0.1"
            tls = "none"

            [[routing.rules]]
            sender = "*@news.example.com"
            upstream = "broadcast"
            stream = "newsletter"

            [admin]
            listen = ""

            [log]
            format = "json"
            "#,
        );
        let config = load_ok(jail, Some("relay.toml"));
        assert_eq!(config.server.listen, vec![addr("0.0.0.0:2525")]);
        assert_eq!(
            config.server.allowed_networks[1].to_string(),
            "192.168.1.7/32"
        );
        assert_eq!(config.server.max_message_size, 1_048_576);
        assert!(config.server.accept_auth);
        assert_eq!(
            config.server.hostname,
            crate::raw::system_hostname(),
            "untouched keys keep defaults"
        );
        let tx = &config.upstreams["transactional"];
        assert_eq!(
            (tx.host.as_str(), tx.port, tx.connections),
            ("smtp.postmarkapp.com", 2525, 4)
        );
        assert_eq!(
            config.upstreams["broadcast"],
            upstream("smtp-broadcasts.postmarkapp.com", 2)
        );
        let local = &config.upstreams["local"];
        assert_eq!(
            (local.port, local.tls, local.connections),
            (587, TlsMode::None, 4)
        );
        let rule = &config.routing.rules[0];
        assert_eq!(
            rule.name, "rules[0]",
            "unnamed rules get their position as name"
        );
        assert_eq!(rule.stream.as_deref(), Some("newsletter"));
        assert_eq!(config.admin.listen, None);
        assert_eq!(config.log.format, LogFormat::Json);
    });
}

#[test]
fn env_overrides_file_and_accepts_single_values_and_arrays() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            "[queue]\npath = \"/from/file\"\n[server]\nhostname = \"file.example\"\n",
        );
        jail.set_env("POSTMARK_RELAY_QUEUE__PATH", "/from/env");
        jail.set_env("POSTMARK_RELAY_SERVER__LISTEN", "127.0.0.1:2525");
        jail.set_env(
            "POSTMARK_RELAY_SERVER__ALLOWED_NETWORKS",
            r#"["10.0.0.0/8","::1"]"#,
        );
        jail.set_env("POSTMARK_RELAY_SERVER__MAX_MESSAGE_SIZE", "5MiB");
        jail.set_env("POSTMARK_RELAY_SERVER__MAX_RECIPIENTS", "50");
        jail.set_env("POSTMARK_RELAY_ROUTING__BROADCAST_STREAMS", "newsletter");
        jail.set_env("POSTMARK_RELAY_UPSTREAMS__BROADCAST__PORT", "2525");
        jail.set_env("POSTMARK_RELAY_RETRY__MULTIPLIER", "1");
        let config = load_ok(jail, Some("relay.toml"));
        assert_eq!(config.queue.path, PathBuf::from("/from/env"));
        assert_eq!(config.server.hostname, "file.example");
        assert_eq!(config.server.listen, vec![addr("127.0.0.1:2525")]);
        let nets: Vec<String> = config
            .server
            .allowed_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["10.0.0.0/8", "::1/128"]);
        assert_eq!(config.server.max_message_size, 5 * 1024 * 1024);
        assert_eq!(config.server.max_recipients, 50);
        assert_eq!(config.routing.broadcast_streams, ["newsletter"]);
        assert_eq!(config.upstreams["broadcast"].port, 2525);
        assert_eq!(
            config.upstreams["broadcast"].host,
            "smtp-broadcasts.postmarkapp.com"
        );
        assert_eq!(config.retry.multiplier, 1.0);
    });
}

#[test]
fn env_list_in_array_form_with_ipv6() {
    jail(|jail| {
        jail.set_env(
            "POSTMARK_RELAY_SERVER__LISTEN",
            r#"["127.0.0.1:2525","[::1]:2525"]"#,
        );
        let config = load_ok(jail, None);
        assert_eq!(
            config.server.listen,
            vec![addr("127.0.0.1:2525"), addr("[::1]:2525")]
        );
        jail.set_env("POSTMARK_RELAY_SERVER__LISTEN", "[::1]:2525");
        let config = load_ok(jail, None);
        assert_eq!(config.server.listen, vec![addr("[::1]:2525")]);
    });
}

#[test]
fn numeric_looking_tokens_stay_exact() {
    jail(|jail| {
        jail.set_env("POSTMARK_RELAY_POSTMARK__SERVER_TOKEN", "0123");
        jail.set_env("POSTMARK_RELAY_UPSTREAMS__BROADCAST__SERVER_TOKEN", "1e5");
        jail.set_env(
            "POSTMARK_RELAY_UPSTREAMS__TRANSACTIONAL__SERVER_TOKEN",
            "00.50",
        );
        let config = load_ok(jail, None);
        let expose = |s: Option<&Secret>| s.map(|s| s.expose().to_owned());
        assert_eq!(
            expose(config.postmark.server_token.as_ref()),
            Some("0123".into())
        );
        assert_eq!(
            expose(config.upstreams["broadcast"].server_token.as_ref()),
            Some("1e5".into())
        );
        assert_eq!(
            expose(config.upstreams["transactional"].server_token.as_ref()),
            Some("00.50".into())
        );

        jail.set_env("POSTMARK_RELAY_POSTMARK__SERVER_TOKEN", "");
        jail.set_env("POSTMARK_SERVER_TOKEN", "007");
        let config = load_ok(jail, None);
        assert_eq!(
            expose(config.postmark.server_token.as_ref()),
            Some("007".into())
        );
    });
}

#[test]
fn token_precedence_config_then_env_then_file() {
    jail(|jail| {
        file(jail, "token", "  from-file\n");
        file(
            jail,
            "relay.toml",
            "[postmark]\nserver_token_file = \"token\"\n",
        );
        let token = |config: &Config| {
            config
                .postmark
                .server_token
                .as_ref()
                .map(|s| s.expose().to_owned())
        };
        assert_eq!(
            token(&load_ok(jail, Some("relay.toml"))),
            Some("from-file".into())
        );

        jail.set_env("POSTMARK_SERVER_TOKEN", "from-env");
        assert_eq!(
            token(&load_ok(jail, Some("relay.toml"))),
            Some("from-env".into())
        );

        jail.set_env("POSTMARK_RELAY_POSTMARK__SERVER_TOKEN", "from-config");
        assert_eq!(
            token(&load_ok(jail, Some("relay.toml"))),
            Some("from-config".into())
        );
    });
}

#[test]
fn a_world_readable_token_file_is_reported_with_its_fix() {
    use std::os::unix::fs::PermissionsExt;
    jail(|jail| {
        file(jail, "token", "from-file\n");
        file(
            jail,
            "relay.toml",
            "[postmark]\nserver_token_file = \"token\"\n",
        );
        let set_mode = |mode| {
            std::fs::set_permissions(
                jail.directory().join("token"),
                std::fs::Permissions::from_mode(mode),
            )
            .expect("chmod")
        };
        set_mode(0o644);
        let config = load_ok(jail, Some("relay.toml"));
        assert_eq!(
            config.secret_files(),
            vec![SecretFile {
                key: "postmark.server_token_file".into(),
                path: PathBuf::from("token"),
            }]
        );
        let exposed = world_readable_secrets(&config);
        assert_eq!(exposed.len(), 1);
        assert_eq!(exposed[0].mode, 0o644);
        assert_eq!(exposed[0].fix(), "chmod o-rwx token");
        let text = exposed[0].to_string();
        assert!(
            text.starts_with(
                "postmark.server_token_file token is readable by every local user (mode 0644)"
            ),
            "{text}"
        );
        // Still used.
        assert!(config.postmark.server_token.is_some());

        for private in [0o600, 0o640, 0o400] {
            set_mode(private);
            assert_eq!(world_readable_secrets(&config), vec![], "{private:o}");
        }
        // No file configured: nothing to check.
        let none = load_ok(jail, None);
        assert!(none.secret_files().is_empty());
    });
}

#[test]
fn unreadable_token_file_names_key_and_source() {
    jail(|jail| {
        jail.set_env(
            "POSTMARK_RELAY_POSTMARK__SERVER_TOKEN_FILE",
            "/nonexistent/token",
        );
        let err = load_err(jail, None);
        let p = problem(&err, "postmark.server_token_file");
        assert_eq!(p.source, "POSTMARK_RELAY_POSTMARK__SERVER_TOKEN_FILE");
        assert!(p.message.contains("/nonexistent/token"), "{p}");
    });
}

#[test]
fn errors_name_key_and_source() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            "[server]\nlisten = [\"127.0.0.1:25\", \"nowhere\"]\n[retry]\nmax_delay = \"1s\"\n",
        );
        jail.set_env("POSTMARK_RELAY_UPSTREAMS__BROADCAST__TLS", "none");
        let err = load_err(jail, Some("relay.toml"));
        let listen = problem(&err, "server.listen[1]");
        assert!(listen.source.ends_with("relay.toml"), "{listen}");
        assert!(listen.message.contains("nowhere"), "{listen}");
        let tls = problem(&err, "upstreams.broadcast.tls");
        assert_eq!(tls.source, "POSTMARK_RELAY_UPSTREAMS__BROADCAST__TLS");
        assert!(tls.message.contains("loopback"), "{tls}");
        let delay = problem(&err, "retry.initial_delay");
        assert_eq!(delay.source, "default");
        assert_eq!(err.problems().len(), 3, "{err}");
    });
}

#[test]
fn every_problem_is_reported_one_per_line() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            r#"
            [server]
            listen = "localhost:25"
            allowed_networks = ["10.0.0.0/33"]
            max_message_size = "lots"
            command_timeout = "5"
            max_connections = 0

            [upstreams.transactional]
            port = 0
            tls = "ssl"
            connections = 0
            ca_file = "/nonexistent/ca.pem"

            [upstreams.custom]
            port = 25

            [routing]
            default = "nowhere"

            [[routing.rules]]
            name = "no conditions"
            upstream = "broadcast"

            [[routing.rules]]
            sender = "[unclosed"
            value = "x"
            upstream = "missing"

            [retry]
            multiplier = 0.5

            [admin]
            listen = "9925"

            [log]
            format = "xml"
            "#,
        );
        let err = load_err(jail, Some("relay.toml"));
        let keys = [
            "server.listen[0]",
            "server.allowed_networks[0]",
            "server.max_message_size",
            "server.command_timeout",
            "server.max_connections",
            "upstreams.transactional.port",
            "upstreams.transactional.tls",
            "upstreams.transactional.connections",
            "upstreams.transactional.ca_file",
            "upstreams.custom.host",
            "routing.default",
            "routing.rules[0]",
            "routing.rules[1].sender",
            "routing.rules[1].value",
            "routing.rules[1].upstream",
            "retry.multiplier",
            "admin.listen",
            "log.format",
        ];
        for key in keys {
            assert!(problem(&err, key).source.ends_with("relay.toml"), "{key}");
        }
        assert_eq!(err.problems().len(), keys.len(), "{err}");
        assert_eq!(err.to_string().lines().count(), keys.len());
    });
}

#[test]
fn unknown_keys_are_errors_from_file_and_env() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            "[server]\nlisten_on = \"x\"\n[srever]\nhostname = \"a\"\n",
        );
        jail.set_env("POSTMARK_RELAY_LOG__LEVLE", "debug");
        let err = load_err(jail, Some("relay.toml"));
        assert!(problem(&err, "server.listen_on")
            .source
            .ends_with("relay.toml"));
        assert!(problem(&err, "srever").source.ends_with("relay.toml"));
        assert_eq!(
            problem(&err, "log.levle").source,
            "POSTMARK_RELAY_LOG__LEVLE"
        );
    });
}

#[test]
fn toml_syntax_error_names_the_file() {
    jail(|jail| {
        file(jail, "broken.toml", "[server\nlisten = 1");
        let err = load_err(jail, Some("broken.toml"));
        assert_eq!(err.problems().len(), 1, "{err}");
        assert!(err.to_string().contains("broken.toml"), "{err}");
    });
}

#[test]
fn named_config_file_must_exist() {
    jail(|jail| {
        let err = load(Some(Path::new("missing.toml"))).expect_err("missing file");
        assert!(err.to_string().contains("missing.toml"), "{err}");

        jail.set_env(CONFIG_ENV, "also-missing.toml");
        let err = load(None).expect_err("missing file");
        assert!(err.to_string().contains("also-missing.toml"), "{err}");
        assert!(err.to_string().contains(CONFIG_ENV), "{err}");

        file(jail, "present.toml", "[log]\nlevel = \"debug\"\n");
        jail.set_env(CONFIG_ENV, "present.toml");
        let loaded = load(None).expect("file named by env");
        assert_eq!(loaded.file, Some(PathBuf::from("present.toml")));
        assert_eq!(loaded.config.log.level, "debug");
    });
}

#[test]
fn secrets_never_print() {
    jail(|jail| {
        jail.set_env("POSTMARK_SERVER_TOKEN", TOKEN);
        jail.set_env(
            "POSTMARK_RELAY_UPSTREAMS__BROADCAST__SERVER_TOKEN",
            "other-secret",
        );
        let config = load_ok(jail, None);
        let secret = config.postmark.server_token.clone().expect("token");
        assert_eq!(secret.expose(), TOKEN);
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        let debug = format!("{config:?} {config:#?}");
        assert!(!debug.contains(TOKEN) && !debug.contains("other-secret"));
    });
}

#[test]
fn redacted_toml_hides_tokens_and_round_trips() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            r#"
            [server]
            listen = ["127.0.0.1:2525", "[::1]:2525"]
            max_message_size = "10MiB"
            command_timeout = "90s"
            [upstreams.transactional]
            server_token = "per-upstream-secret"
            [upstreams.local]
            host = "localhost"
            port = 2525
            tls = "none"
            [[routing.rules]]
            name = "lists"
            header = "List-Unsubscribe"
            value = "*unsub*"
            upstream = "broadcast"
            stream = "newsletter"
            [retry]
            give_up_after = "1h 30m"
            [admin]
            listen = ""
            "#,
        );
        jail.set_env("POSTMARK_SERVER_TOKEN", TOKEN);
        let config = load_ok(jail, Some("relay.toml"));
        let text = to_redacted_toml(&config);
        assert!(
            !text.contains(TOKEN) && !text.contains("per-upstream-secret"),
            "{text}"
        );
        assert!(text.contains("server_token = \"***\""), "{text}");
        assert!(text.contains("max_message_size = \"10MiB\""), "{text}");
        assert!(text.contains("give_up_after = \"90m\""), "{text}");

        jail.clear_env();
        file(jail, "printed.toml", &text);
        let reloaded = load_ok(jail, Some("printed.toml"));
        let mut expected = config.clone();
        expected.postmark.server_token = Some(Secret::new("***"));
        if let Some(up) = expected.upstreams.get_mut("transactional") {
            up.server_token = Some(Secret::new("***"));
        }
        assert_eq!(reloaded, expected);
    });
}

#[test]
fn redacted_defaults_show_empty_tokens_and_round_trip() {
    jail(|jail| {
        let config = load_ok(jail, None);
        let text = to_redacted_toml(&config);
        assert!(!text.contains("***"), "{text}");
        assert!(text.contains("server_token = \"\""), "{text}");
        file(jail, "printed.toml", &text);
        assert_eq!(load_ok(jail, Some("printed.toml")), config);
    });
}

#[test]
fn rewrite_from_file_lowercases_domains_and_keeps_the_sender() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            "[rewrite]\nverified_domains = [\" Example.COM \", \"mail.example.org\"]\nsender = \"NoReply@EXAMPLE.com\"\n",
        );
        let config = load_ok(jail, Some("relay.toml"));
        assert_eq!(
            config.rewrite,
            Rewrite {
                verified_domains: vec!["example.com".into(), "mail.example.org".into()],
                sender: Some("NoReply@EXAMPLE.com".into()),
            }
        );
    });
}

#[test]
fn rewrite_from_env_accepts_a_single_domain_or_an_array() {
    jail(|jail| {
        jail.set_env("POSTMARK_RELAY_REWRITE__SENDER", "noreply@example.com");
        jail.set_env("POSTMARK_RELAY_REWRITE__VERIFIED_DOMAINS", "example.com");
        let config = load_ok(jail, None);
        assert_eq!(config.rewrite.verified_domains, ["example.com"]);
        assert_eq!(
            config.rewrite.sender.as_deref(),
            Some("noreply@example.com")
        );

        jail.set_env(
            "POSTMARK_RELAY_REWRITE__VERIFIED_DOMAINS",
            r#"["example.org","example.com"]"#,
        );
        let config = load_ok(jail, None);
        assert_eq!(
            config.rewrite.verified_domains,
            ["example.org", "example.com"]
        );
    });
}

#[test]
fn rewrite_domains_without_a_sender_are_kept_but_do_nothing() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            "[rewrite]\nverified_domains = [\"example.com\"]\n",
        );
        let config = load_ok(jail, Some("relay.toml"));
        assert_eq!(config.rewrite.sender, None);
        assert_eq!(config.rewrite.verified_domains, ["example.com"]);
    });
}

#[test]
fn rewrite_sender_needs_verified_domains_naming_key_and_source() {
    jail(|jail| {
        jail.set_env("POSTMARK_RELAY_REWRITE__SENDER", "noreply@example.com");
        let err = load_err(jail, None);
        let p = problem(&err, "rewrite.verified_domains");
        assert_eq!(p.source, "default");
        assert!(p.message.contains("rewrite.sender"), "{p}");
        assert_eq!(err.problems().len(), 1, "{err}");
    });
}

#[test]
fn rewrite_sender_must_be_at_a_verified_domain() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            "[rewrite]\nverified_domains = [\"example.com\"]\nsender = \"noreply@mail.example.com\"\n",
        );
        let err = load_err(jail, Some("relay.toml"));
        let p = problem(&err, "rewrite.sender");
        assert!(p.source.ends_with("relay.toml"), "{p}");
        assert!(p.message.contains("example.com"), "{p}");
        assert_eq!(err.problems().len(), 1, "{err}");
    });
}

#[test]
fn rewrite_bad_sender_and_domains_are_each_reported() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            "[rewrite]\nverified_domains = [\"example.com\", \"*.example.org\", \"a@example.net\"]\n",
        );
        jail.set_env("POSTMARK_RELAY_REWRITE__SENDER", "Cron <root@example.com>");
        let err = load_err(jail, Some("relay.toml"));
        let sender = problem(&err, "rewrite.sender");
        assert_eq!(sender.source, "POSTMARK_RELAY_REWRITE__SENDER");
        assert!(sender.message.contains("noreply@example.com"), "{sender}");
        let wildcard = problem(&err, "rewrite.verified_domains[1]");
        assert!(wildcard.source.ends_with("relay.toml"), "{wildcard}");
        assert!(wildcard.message.contains("subdomains"), "{wildcard}");
        problem(&err, "rewrite.verified_domains[2]");
        assert_eq!(err.problems().len(), 3, "{err}");
    });
}

#[test]
fn redacted_toml_shows_rewrite_and_round_trips() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            "[rewrite]\nverified_domains = [\"Example.com\"]\nsender = \"noreply@example.com\"\n",
        );
        let config = load_ok(jail, Some("relay.toml"));
        let text = to_redacted_toml(&config);
        assert!(text.contains("[rewrite]"), "{text}");
        assert!(text.contains("sender = \"noreply@example.com\""), "{text}");
        file(jail, "printed.toml", &text);
        assert_eq!(load_ok(jail, Some("printed.toml")), config);
    });
}

#[test]
fn an_open_relay_is_refused_unless_allowed_explicitly() {
    jail(|jail| {
        let open = "[server]\nlisten = [\"0.0.0.0:25\"]\nallowed_networks = [\"0.0.0.0/0\"]\n";
        file(jail, "open.toml", open);
        let err =
            load_file(Some(&jail.directory().join("open.toml"))).expect_err("open relay accepted");
        let text = err.to_string();
        assert!(
            text.contains("server.allowed_networks") && text.contains("open relay"),
            "{text}"
        );

        file(
            jail,
            "allowed.toml",
            &format!("{open}allow_open_relay = true\n"),
        );
        load_ok(jail, Some("allowed.toml"));

        file(
            jail,
            "loopback.toml",
            "[server]\nlisten = [\"127.0.0.1:25\"]\nallowed_networks = [\"0.0.0.0/0\"]\n",
        );
        load_ok(jail, Some("loopback.toml"));
    });
}

const DB_URL: &str = "postgres://relay:db-pa55word@db.example:5432/relay?sslmode=require";

#[test]
fn postgres_queue_from_env_url_is_a_secret() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            "[queue]\nbackend = \"postgres\"\nschema = \"relay_q\"\nlease = \"30s\"\n",
        );
        jail.set_env("POSTMARK_RELAY_QUEUE__URL", DB_URL);
        let config = load_ok(jail, Some("relay.toml"));
        assert_eq!(config.queue.backend, QueueBackend::Postgres);
        assert_eq!(config.queue.url.as_ref().map(Secret::expose), Some(DB_URL));
        assert_eq!(config.queue.schema, "relay_q");
        assert_eq!(config.queue.lease, Duration::from_secs(30));
        let debug = format!("{config:?}");
        assert!(!debug.contains("db-pa55word"), "{debug}");
        let text = to_redacted_toml(&config);
        assert!(!text.contains("db-pa55word"), "{text}");
        assert!(
            text.contains("url = \"postgres://relay:***@db.example:5432/relay?sslmode=require\""),
            "{text}"
        );
        assert!(text.contains("backend = \"postgres\""), "{text}");

        jail.clear_env();
        file(jail, "printed.toml", &text);
        let reloaded = load_ok(jail, Some("printed.toml"));
        let mut expected = config.clone();
        expected.queue.url = Some(Secret::new(
            "postgres://relay:***@db.example:5432/relay?sslmode=require",
        ));
        assert_eq!(reloaded, expected);
    });
}

#[test]
fn postgres_queue_url_from_file() {
    jail(|jail| {
        file(jail, "db-url", &format!("{DB_URL}\n"));
        file(
            jail,
            "relay.toml",
            "[queue]\nbackend = \"postgres\"\nurl_file = \"db-url\"\n",
        );
        let config = load_ok(jail, Some("relay.toml"));
        assert_eq!(config.queue.url.as_ref().map(Secret::expose), Some(DB_URL));
    });
}

#[test]
fn postgres_queue_without_url_names_backend_and_source() {
    jail(|jail| {
        file(jail, "relay.toml", "[queue]\nbackend = \"postgres\"\n");
        let err = load_err(jail, Some("relay.toml"));
        let p = problem(&err, "queue.backend");
        assert!(p.source.ends_with("relay.toml"), "{p}");
        assert!(p.message.contains("queue.url"), "{p}");
    });
}

#[test]
fn bad_queue_keys_are_each_reported_without_the_password() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            "[queue]\nbackend = \"mysql\"\nschema = \"Bad-Name\"\nlease = \"soon\"\nca_file = \"/nonexistent/ca.pem\"\n",
        );
        jail.set_env(
            "POSTMARK_RELAY_QUEUE__URL",
            "mysql://relay:db-pa55word@db/relay",
        );
        let err = load_err(jail, Some("relay.toml"));
        for key in [
            "queue.backend",
            "queue.schema",
            "queue.lease",
            "queue.ca_file",
        ] {
            assert!(problem(&err, key).source.ends_with("relay.toml"), "{key}");
        }
        let url = problem(&err, "queue.url");
        assert_eq!(url.source, "POSTMARK_RELAY_QUEUE__URL", "{url}");
        assert!(!err.to_string().contains("db-pa55word"), "{err}");
    });
}

#[test]
fn url_redaction_covers_user_part_and_parameter() {
    use crate::redact::redact_url;
    assert_eq!(
        redact_url("postgres://u:p%40ss@h:5/d?sslmode=require"),
        "postgres://u:***@h:5/d?sslmode=require"
    );
    assert_eq!(
        redact_url("postgresql://u@h/d?password=x&sslmode=disable"),
        "postgresql://u@h/d?password=***&sslmode=disable"
    );
    assert_eq!(redact_url("postgres://h"), "postgres://h");
}

/// Kubernetes gives every pod of a namespace variables named after each
/// Service there; a Service called `postmark-relay` must not stop the
/// relay's config from loading, while a misspelt key still does.
#[test]
fn kubernetes_service_links_are_ignored_but_typos_are_not() {
    jail(|jail| {
        jail.set_env("POSTMARK_RELAY_SERVICE_HOST", "10.96.0.12");
        jail.set_env("POSTMARK_RELAY_SERVICE_PORT", "25");
        jail.set_env("POSTMARK_RELAY_SERVICE_PORT_SMTP", "25");
        jail.set_env("POSTMARK_RELAY_PORT", "tcp://10.96.0.12:25");
        jail.set_env("POSTMARK_RELAY_PORT_25_TCP_ADDR", "10.96.0.12");
        jail.set_env("POSTMARK_RELAY_PORT_25_TCP_PROTO", "tcp");
        let config = load_ok(jail, None);
        assert_eq!(config.upstreams.len(), 2);
        jail.set_env("POSTMARK_RELAY_SERVR__LISTEN", "127.0.0.1:2525");
        let err = load_err(jail, None);
        assert!(problem(&err, "servr")
            .source
            .starts_with("POSTMARK_RELAY_SERVR"));
    });
}

/// The shared queue's url file holds the database password: a
/// world-readable one is reported like a token file.
#[test]
fn a_world_readable_queue_url_file_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    jail(|jail| {
        file(jail, "queue-url", "postgres://relay:secret@db/relay\n");
        file(
            jail,
            "relay.toml",
            "[queue]\nbackend = \"postgres\"\nurl_file = \"queue-url\"\n",
        );
        let chmod = |mode| {
            std::fs::set_permissions(
                jail.directory().join("queue-url"),
                std::fs::Permissions::from_mode(mode),
            )
            .expect("chmod")
        };
        chmod(0o644);
        let config = load_ok(jail, Some("relay.toml"));
        let exposed = world_readable_secrets(&config);
        assert_eq!(exposed.len(), 1);
        assert_eq!(exposed[0].file.key, "queue.url_file");
        assert_eq!(exposed[0].fix(), "chmod o-rwx queue-url");
        chmod(0o640);
        assert_eq!(world_readable_secrets(&config), vec![]);
    });
}

/// `server.hostname` defaults to this machine's name (relay-added
/// Message-IDs then name it, not `localhost`).
#[test]
fn hostname_defaults_to_the_machines_host_name() {
    jail(|jail| {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(load_ok(jail, None).server.hostname, kernel.trim());
    });
}

/// `[sendmail]`: aliases for bare local names (several addresses allowed)
/// and the domain for the others; bad entries name their key.
#[test]
fn sendmail_aliases_and_domain() {
    jail(|jail| {
        file(
            jail,
            "relay.toml",
            "[sendmail]\naliases = { Root = \"ops@example.com, oncall@example.com\", www-data = \"web@example.com\" }\ndomain = \"Example.com\"\n",
        );
        let config = load_ok(jail, Some("relay.toml"));
        let s = &config.sendmail;
        assert_eq!(
            s.qualify("root").unwrap(),
            ["ops@example.com", "oncall@example.com"]
        );
        assert_eq!(s.qualify("alice").unwrap(), ["alice@example.com"]);
        assert_eq!(s.qualify("bob@x.net").unwrap(), ["bob@x.net"]);
        assert_eq!(
            Sendmail::default().qualify("root"),
            Err(Unqualified("root".into()))
        );
        file(
            jail,
            "bad.toml",
            "[sendmail]\naliases = { root = \"ops\" }\ndomain = \"@x\"\n",
        );
        let err = load_err(jail, Some("bad.toml"));
        assert!(problem(&err, "sendmail.aliases.root")
            .message
            .contains("full addresses"));
        problem(&err, "sendmail.domain");
    });
}

/// An SMTP Token: both keys (the Secret Key also from a file) replace the
/// Server API Token for that upstream; one without the other, or a stream
/// on two upstreams, is an error naming the keys; secrets are redacted.
#[test]
fn smtp_tokens_and_per_stream_upstreams() {
    jail(|jail| {
        file(jail, "secret", "s3cr3t-key\n");
        file(
            jail,
            "relay.toml",
            "[postmark]\nserver_token = \"srv\"\n[upstreams.receipts]\nhost = \"smtp.postmarkapp.com\"\nstreams = [\"Receipts\", \"invoices\"]\nsmtp_access_key = \"acc355\"\nsmtp_secret_key_file = \"secret\"\n",
        );
        let config = load_ok(jail, Some("relay.toml"));
        let receipts = &config.upstreams["receipts"];
        assert_eq!(receipts.streams, ["receipts", "invoices"]);
        assert_eq!(
            receipts
                .login(&config.postmark)
                .unwrap()
                .username_password(),
            ("acc355", "s3cr3t-key")
        );
        assert_eq!(
            config.upstreams["transactional"]
                .login(&config.postmark)
                .unwrap()
                .username_password(),
            ("srv", "srv")
        );
        assert_eq!(config.routing.stream_upstreams["invoices"], "receipts");
        let shown = crate::to_redacted_toml(&config);
        assert!(
            !shown.contains("acc355") && !shown.contains("s3cr3t-key"),
            "{shown}"
        );

        jail.set_env(
            "POSTMARK_RELAY_UPSTREAMS__RECEIPTS__SMTP_SECRET_KEY",
            "0123",
        );
        assert_eq!(
            load_ok(jail, Some("relay.toml")).upstreams["receipts"]
                .smtp_token
                .as_ref()
                .unwrap()
                .secret_key
                .expose(),
            "0123",
            "a numeric-looking secret from the environment stays text"
        );

        file(
            jail,
            "half.toml",
            "[upstreams.receipts]\nhost = \"smtp.postmarkapp.com\"\nsmtp_access_key = \"acc355\"\n",
        );
        jail.set_env("POSTMARK_RELAY_UPSTREAMS__RECEIPTS__SMTP_SECRET_KEY", "");
        let err = load_err(jail, Some("half.toml"));
        assert!(problem(&err, "upstreams.receipts.smtp_secret_key")
            .message
            .contains("Access Key and a Secret Key together"));
        file(
            jail,
            "twice.toml",
            "[upstreams.other]\nhost = \"smtp.postmarkapp.com\"\nstreams = [\"receipts\"]\n[upstreams.third]\nhost = \"smtp.postmarkapp.com\"\nstreams = [\"Receipts\"]\n",
        );
        jail.clear_env();
        let err = load_err(jail, Some("twice.toml"));
        assert!(problem(&err, "upstreams.third.streams")
            .message
            .contains("upstreams.other.streams"));
    });
}

#[cfg(test)]
mod auth;
