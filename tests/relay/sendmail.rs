//! `postmark-relay sendmail` (and the binary invoked as `sendmail`): a
//! message on stdin reaches the fake upstream through the running relay,
//! with sendmail's envelope rules and exit codes.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_postmark-relay");

/// A config for the sendmail side: only the relay's address matters.
fn client_config(dir: &Path, addr: SocketAddr) -> PathBuf {
    let path = dir.join("sendmail.toml");
    let text = format!("[server]\nlisten = [\"{addr}\"]\nhostname = \"relay.test\"\n");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `program ARGS` with `stdin` as input, as user `tester`, without any
/// POSTMARK_* variables from the test's environment; killed after 30 s.
fn run(program: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env("USER", "tester")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("POSTMARK_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd.spawn().expect("sendmail runs");
    let pid = child.id().to_string();
    let mut input = child.stdin.take().unwrap();
    // The process may exit before reading everything (usage errors).
    let _ = input.write_all(stdin);
    drop(input);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("sendmail did not finish within 30 s");
        }
    }
}

fn sendmail(args: &[&str], stdin: &[u8]) -> Output {
    run(Path::new(BIN), args, stdin)
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

#[test]
fn t_i_delivers_to_to_cc_and_bcc_and_strips_bcc() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let cfg = client_config(relay.dir.path(), relay.addr);
    let message = b"From: Shop <shop@example.com>\n\
To: Ann <ann@example.net>\n\
Cc: \"Doe, Bob\" <bob@example.net>,\n carl@example.net\n\
Bcc: secret@example.org\n\
Subject: sendmail-t\n\
\n\
first\n\
.\n\
.leading dot\n\
last\n";
    let out = sendmail(
        &["-c", cfg.to_str().unwrap(), "sendmail", "-t", "-i"],
        message,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.mail_from, "shop@example.com");
    let mut rcpts = m.rcpt_to.clone();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "ann@example.net",
            "bob@example.net",
            "carl@example.net",
            "secret@example.org"
        ]
    );
    let data = text(strip_added_headers(&m.data));
    assert!(!data.to_ascii_lowercase().contains("bcc"), "{data}");
    assert!(!data.contains("secret@example.org"), "{data}");
    assert!(
        data.contains("Cc: \"Doe, Bob\" <bob@example.net>,\r\n carl@example.net\r\n"),
        "{data}"
    );
    assert!(
        data.ends_with("\r\n\r\nfirst\r\n.\r\n.leading dot\r\nlast\r\n"),
        "{data}"
    );
}

#[test]
fn explicit_recipients_and_f_set_the_envelope_and_a_lone_dot_ends_input() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let cfg = client_config(relay.dir.path(), relay.addr);
    let message = b"To: shown@example.net\nSubject: explicit\n\nbody\n.\nnot sent\n";
    let out = sendmail(
        &[
            "sendmail",
            "-f",
            "bounce@example.com",
            "-F",
            "Web Shop",
            "-oem",
            "a@example.net,b@example.net",
            "-c",
            cfg.to_str().unwrap(),
        ],
        message,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.mail_from, "bounce@example.com");
    assert_eq!(m.rcpt_to, ["a@example.net", "b@example.net"]);
    assert_eq!(
        header_values(&m.data, "From"),
        ["Web Shop <bounce@example.com>"]
    );
    let data = text(&m.data);
    assert!(data.ends_with("\r\n\r\nbody\r\n"), "{data}");
    assert!(!data.contains("not sent"), "{data}");
}

#[test]
fn invoked_through_a_sendmail_symlink_with_c() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let cfg = client_config(relay.dir.path(), relay.addr);
    let bin = tempfile::tempdir().unwrap();
    let link = bin.path().join("sendmail");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let out = run(
        &link,
        &["-c", cfg.to_str().unwrap(), "-oi", "u@example.net"],
        b"Subject: via symlink\n\nhello\n",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    // No -f and no -t: the local user at server.hostname, also in From:.
    assert_eq!(got[0].mail_from, "tester@relay.test");
    assert_eq!(got[0].rcpt_to, ["u@example.net"]);
    assert_eq!(header_values(&got[0].data, "From"), ["tester@relay.test"]);
    assert_eq!(subject(&got[0]), "via symlink");
}

#[test]
fn relay_not_running_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = client_config(dir.path(), addr);
    let out = sendmail(
        &["sendmail", "-c", cfg.to_str().unwrap(), "u@example.net"],
        b"Subject: nobody home\n\nx\n",
    );
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    // Where the address came from, so the operator knows what to fix.
    let from = format!("comes from server.listen in {}", cfg.display());
    assert!(stderr(&out).contains(&from), "{}", stderr(&out));
}

#[test]
fn too_many_recipients_is_temporary_75_and_nothing_is_sent() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "max_recipients = 1");
    let cfg = client_config(relay.dir.path(), relay.addr);
    let out = sendmail(
        &[
            "sendmail",
            "-c",
            cfg.to_str().unwrap(),
            "one@example.net",
            "two@example.net",
        ],
        b"Subject: two\n\nx\n",
    );
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(stderr(&out).contains("452 4.5.3"), "{}", stderr(&out));
    // Nothing stored, so nothing can ever go upstream.
    assert_eq!(relay.queue_list(), Vec::<serde_json::Value>::new());
    assert!(settle(&relay, &t, Duration::from_secs(20)).is_empty());
}

#[test]
fn oversize_message_is_permanent_69() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "max_message_size = 1000");
    let cfg = client_config(relay.dir.path(), relay.addr);
    let mut message = b"Subject: big\n\n".to_vec();
    for _ in 0..100 {
        message.extend_from_slice(&[b'x'; 78]);
        message.push(b'\n');
    }
    let out = sendmail(
        &["sendmail", "-c", cfg.to_str().unwrap(), "u@example.net"],
        &message,
    );
    assert_eq!(code(&out), 69, "{}", stderr(&out));
    assert!(stderr(&out).contains("552 5.3.4"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = client_config(dir.path(), "127.0.0.1:9".parse().unwrap());
    let cfg = cfg.to_str().unwrap();

    let out = sendmail(&["sendmail", "-c", cfg, "-Z", "u@example.net"], b"x\n");
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("usage:"), "{}", stderr(&out));

    let out = sendmail(&["sendmail", "-c", cfg, "-bp"], b"");
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("not supported"), "{}", stderr(&out));

    let out = sendmail(&["sendmail", "-c", cfg, "-i"], b"x\n");
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("no recipients"), "{}", stderr(&out));

    let out = sendmail(&["sendmail", "-c", cfg, "-t"], b"Subject: nobody\n\nx\n");
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(stderr(&out).contains("no recipients"), "{}", stderr(&out));
}

/// sendmail needs only the relay's address: a config whose token file it
/// may not read (or that does not exist on this host) still submits.
#[test]
fn a_token_file_sendmail_cannot_read_does_not_stop_it() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let cfg = relay.dir.path().join("app-side.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"{}\"]\nhostname = \"relay.test\"\n[postmark]\nserver_token_file = \"/nonexistent/postmark-token\"\n",
            relay.addr
        ),
    )
    .unwrap();
    let out = sendmail(
        &["sendmail", "-c", cfg.to_str().unwrap(), "u@example.net"],
        b"Subject: no secrets needed\n\nx\n",
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
}

/// A config the caller may not read (the token in a `0600` file read by
/// another user, e.g. php-fpm): sendmail says it cannot read it, with the
/// absolute path and what to do, not that it is invalid; exit 64.
#[test]
fn an_unreadable_config_is_cannot_read_with_its_absolute_path() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(&cfg, "[server]\nlisten = [\"127.0.0.1:2525\"]\n").unwrap();
    let relative = "relay.toml";
    let out = if running_as_root() {
        // root reads anything: be an ordinary user (nobody) for this run.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .args(["sendmail", "-c", relative, "u@example.net"])
            .current_dir(dir.path())
            .stdin(Stdio::null());
        cmd.output().expect("setpriv runs")
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o000)).unwrap();
        let out = Command::new(BIN)
            .args(["sendmail", "-c", relative, "u@example.net"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("sendmail runs");
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        out
    };
    let err = stderr(&out);
    assert_eq!(code(&out), 64, "{err}");
    assert!(err.contains("cannot read the config file"), "{err}");
    assert!(!err.contains("invalid"), "{err}");
    assert!(
        err.contains(&cfg.display().to_string()),
        "absolute path: {err}"
    );
    assert!(err.contains("POSTMARK_SERVER_TOKEN"), "{err}");
}

/// Cron without MAILTO mails `root`: `[sendmail] aliases` sends it to a
/// real address, `sendmail.domain` qualifies other bare names, and an
/// unmapped bare name is refused (exit 67) naming the settings, instead of
/// a `501` from the relay and the mail gone.
#[test]
fn bare_local_recipients_follow_aliases_and_the_domain() {
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let dir = relay.dir.path();
    let with_aliases = dir.join("aliases.toml");
    std::fs::write(
        &with_aliases,
        format!(
            "[server]\nlisten = [\"{}\"]\nhostname = \"relay.test\"\n[sendmail]\naliases = {{ root = \"ops@example.com, oncall@example.com\" }}\ndomain = \"example.org\"\n",
            relay.addr
        ),
    )
    .unwrap();
    let cron =
        b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> backup\n\nbackup done\n";
    let out = sendmail(
        &[
            "sendmail",
            "-c",
            with_aliases.to_str().unwrap(),
            "-i",
            "root",
            "alice",
        ],
        cron,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].rcpt_to,
        ["ops@example.com", "oncall@example.com", "alice@example.org"]
    );

    let plain = client_config(dir, relay.addr);
    let out = sendmail(&["sendmail", "-c", plain.to_str().unwrap(), "root"], cron);
    assert_eq!(code(&out), 67, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("`root` is a bare local name")
            && err.contains("[sendmail] aliases")
            && err.contains("sendmail.domain"),
        "{err}"
    );
    assert_eq!(t.messages().len(), 1, "nothing more was sent");
}

/// Reads one SMTP reply (all its lines) from a `sendmail -bs` stdout.
fn bs_reply(out: &mut impl std::io::BufRead) -> String {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "sendmail -bs closed early: {reply}"
        );
        reply.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return reply;
        }
    }
}

/// `sendmail -bs` (Symfony's `sendmail://default`, Laravel's
/// `sendmail -bs -i`): SMTP on stdin/stdout, passed to the running relay, so
/// the app sees the relay's own replies, its queue id included.
#[test]
fn bs_speaks_smtp_on_stdin_and_stdout_through_the_relay() {
    use std::io::BufReader;
    let (t, b) = (fake(), fake());
    let relay = relay_for(&t, &b, "");
    let cfg = client_config(relay.dir.path(), relay.addr);
    let mut child = Command::new(BIN)
        .args(["sendmail", "-bs", "-i", "-c", cfg.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let mut say = |line: &str, out: &mut BufReader<_>| {
        input.write_all(line.as_bytes()).unwrap();
        input.flush().unwrap();
        bs_reply(out)
    };
    assert!(
        bs_reply(&mut output).starts_with("220 relay.test"),
        "greeting"
    );
    assert!(say("EHLO symfony.app\r\n", &mut output).starts_with("250-relay.test"));
    assert!(say("MAIL FROM:<app@example.com>\r\n", &mut output).starts_with("250"));
    assert!(say("RCPT TO:<u@example.net>\r\n", &mut output).starts_with("250"));
    assert!(say("DATA\r\n", &mut output).starts_with("354"));
    let queued = say(
        "From: app@example.com\r\nTo: u@example.net\r\nSubject: via -bs\r\n\r\nhello\r\n.\r\n",
        &mut output,
    );
    assert!(
        queued.starts_with("250") && queued.contains("queued as"),
        "{queued}"
    );
    assert!(say("QUIT\r\n", &mut output).starts_with("221"));
    drop(input);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let got = settle(&relay, &t, Duration::from_secs(20));
    assert_eq!(got.len(), 1);
    assert_eq!(subject(&got[0]), "via -bs");
    assert_eq!(got[0].rcpt_to, ["u@example.net"]);
}

/// `sendmail -bs` with no relay listening: the app reads a `421` instead
/// of a greeting, and the exit code says "try again later".
#[test]
fn bs_without_a_relay_answers_421_and_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = client_config(dir.path(), addr);
    let out = sendmail(
        &["sendmail", "-bs", "-c", cfg.to_str().unwrap()],
        b"EHLO x\r\n",
    );
    assert_eq!(code(&out), 75, "{}", stderr(&out));
    assert!(
        text(&out.stdout).starts_with("421 4.3.2"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        stderr(&out).contains("comes from server.listen in"),
        "{}",
        stderr(&out)
    );
}
