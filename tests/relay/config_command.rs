//! `postmark-relay config`: prints the effective config with the token
//! redacted, and rejects a bad file with exit 64 naming the key.

use crate::harness::*;

#[test]
fn config_prints_the_token_redacted_and_never_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, "[postmark]\nserver_token = \"s3cret-token-1234\"\n").unwrap();
    let out = run_cli(&["config"], &file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains(r#"server_token = "***""#), "{stdout}");
    assert!(
        !stdout.contains("s3cret") && !stderr.contains("s3cret"),
        "token printed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn config_with_a_bad_file_exits_64_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[server]\nmax_conections = 5\n", "max_conections"),
        ("[server]\nmax_recipients = \"lots\"\n", "max_recipients"),
    ] {
        let file = dir.path().join("relay.toml");
        std::fs::write(&file, text).unwrap();
        let out = run_cli(&["config"], &file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{text}: {stderr}");
        assert!(
            stderr.contains(key),
            "{text}: error does not name {key}: {stderr}"
        );
    }
}

#[test]
fn a_bad_command_line_exits_64_and_help_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    std::fs::write(&file, "").unwrap();
    let out = run_cli(&["serve", "--no-such-flag"], &file);
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_cli(&["--help"], &file);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "serve",
        "config",
        "POSTMARK_SERVER_TOKEN",
        "POSTMARK_RELAY_<SECTION>__<KEY>",
    ] {
        assert!(
            help.contains(word),
            "--help does not mention {word}:\n{help}"
        );
    }
}
