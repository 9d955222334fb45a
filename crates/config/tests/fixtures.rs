//! Every example configuration in the repository is parsed: `config/relay.toml`
//! and `tests/fixtures/valid/*.toml` must load, and each
//! `tests/fixtures/invalid/*.toml` must fail naming the key given in its
//! first line (`# expect: <key>`).
//!
//! These tests read no environment variables of their own; they assume none
//! of `POSTMARK_RELAY_*` is set in the environment that runs them.

use std::fs;
use std::path::{Path, PathBuf};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/relay.toml");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn toml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(Path::new(FIXTURES).join(dir))
        .expect("fixture folder")
        .map(|entry| entry.expect("fixture entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "too few fixtures in {dir}: {files:?}");
    files
}

#[test]
fn example_config_loads_with_design_defaults() {
    let loaded = match relay_config::load(Some(Path::new(EXAMPLE))) {
        Ok(loaded) => loaded,
        Err(e) => panic!("config/relay.toml:\n{e}"),
    };
    let config = loaded.config;
    assert_eq!(config.upstreams.len(), 2);
    assert!(
        config.routing.rules.is_empty(),
        "the example must not route by surprise"
    );
    assert_eq!(config.routing.default, "transactional");
    assert_eq!(config.server.max_message_size, 10_000_000);
    assert_eq!(config.postmark.server_token, None);
}

/// Dotted paths of every key in a TOML document.
fn keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = format!("{prefix}{key}");
        match value {
            toml::Value::Table(inner) => keys(inner, &format!("{path}."), out),
            _ => out.push(path),
        }
    }
}

#[test]
fn example_config_sets_every_key() {
    let example = fs::read_to_string(EXAMPLE).expect("config/relay.toml");
    let config = relay_config::load(Some(Path::new(EXAMPLE)))
        .expect("example loads")
        .config;
    let printed = relay_config::to_redacted_toml(&config);
    let (mut written, mut all) = (Vec::new(), Vec::new());
    keys(&example.parse().expect("example is TOML"), "", &mut written);
    keys(&printed.parse().expect("printed is TOML"), "", &mut all);
    // The example's rules are commented out (none by default), so there is
    // no `routing.rules` key to compare; its keys are checked below.
    all.retain(|key| key != "routing.rules");
    written.sort();
    all.sort();
    assert_eq!(written, all, "config/relay.toml must set every key");
    // Rules are commented out; their keys must still be documented.
    for key in [
        "name", "sender", "from", "header", "value", "upstream", "stream",
    ] {
        assert!(
            example.contains(&format!("# {key} = ")),
            "rule key {key} undocumented"
        );
    }
}

#[test]
fn valid_fixtures_load() {
    for file in toml_files("valid") {
        if let Err(e) = relay_config::load(Some(&file)) {
            panic!("{} should load:\n{e}", file.display());
        }
    }
}

#[test]
fn invalid_fixtures_fail_naming_the_key() {
    for file in toml_files("invalid") {
        let text = fs::read_to_string(&file).expect("fixture");
        let key = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks `# expect: <key>`", file.display()));
        let err = match relay_config::load(Some(&file)) {
            Ok(_) => panic!("{} should fail", file.display()),
            Err(e) => e,
        };
        let problem = err
            .problems()
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("{}: no problem for {key} in:\n{err}", file.display()));
        assert_eq!(Path::new(&problem.source), file.as_path(), "{problem}");
        assert!(err.to_string().contains(key));
    }
}
