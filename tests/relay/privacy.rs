//! Private by default: whatever the umask, `serve` keeps its queue to
//! itself (folder `0700`, every file in it `0600`), tightens a loose queue
//! it owns, warns with the exact `chmod` about one it does not, and warns
//! (in its log and in `check`) about a token file every local user can
//! read, which still works.
//!
//! The relay runs under `umask 022` (the usual login umask, the README's
//! quick start). As root, the suite runs it as uid/gid 65532 (`setpriv`),
//! so what is tested is a non-root relay; the case of a queue owned by
//! someone else needs root to set up, so `cargo test` lists it as ignored
//! for anyone else (scripts/test and CI, as root, run it).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::*;

/// The relay's user when the suite runs as root (distroless `nonroot`).
const UID: u32 = 65532;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every entry of `folder` with its mode, sorted by name.
fn modes(folder: &Path) -> Vec<(String, u32)> {
    let mut found: Vec<(String, u32)> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                mode(&e.path()),
            )
        })
        .collect();
    found.sort();
    found
}

/// Panics unless `folder` is 0700 and every file in it 0600.
fn assert_private(folder: &Path) {
    assert_eq!(mode(folder), 0o700, "{}", folder.display());
    let files = modes(folder);
    assert!(
        files.iter().any(|(name, _)| name == "queue.sqlite3"),
        "{files:?}"
    );
    for (name, mode) in &files {
        assert_eq!(*mode, 0o600, "{name} is {mode:04o}; all: {files:?}");
    }
}

/// A test folder the relay's user can use: readable by all (its parent
/// `/tmp` already is), holding a copy of the binary (the build folder may
/// be private to root), the fakes' CA and the config.
struct Setup {
    dir: Arc<tempfile::TempDir>,
    bin: PathBuf,
    config: PathBuf,
    queue: PathBuf,
}

impl Setup {
    /// `extra` as for [`config_for`]; the queue is `<dir>/queue`, named in
    /// the config too (so `check` sees it).
    fn new(t: &FakePostmark, b: &FakePostmark, extra: &str) -> Setup {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        chmod(dir.path(), 0o755);
        let bin = dir.path().join("postmark-relay");
        std::fs::copy(env!("CARGO_BIN_EXE_postmark-relay"), &bin).unwrap();
        chmod(&bin, 0o755);
        let mut config = config_for(t, b, extra);
        for (i, fake) in [t, b].iter().enumerate() {
            let ca = dir.path().join(format!("ca{i}.pem"));
            std::fs::copy(fake.ca_file(), &ca).unwrap();
            chmod(&ca, 0o644);
            config = config.replace(
                &fake.ca_file().display().to_string(),
                &ca.display().to_string(),
            );
        }
        let queue = dir.path().join("queue");
        config.push_str(&format!("\n[queue]\npath = \"{}\"\n", queue.display()));
        let config_path = dir.path().join("relay.toml");
        std::fs::write(&config_path, config).unwrap();
        chmod(&config_path, 0o644);
        if running_as_root() {
            // Only the relay's user may create the queue here.
            let home = dir.path();
            std::os::unix::fs::chown(home, Some(UID), Some(UID)).unwrap();
        }
        Setup {
            dir,
            bin,
            config: config_path,
            queue,
        }
    }

    /// `postmark-relay ARGS -c CONFIG` under `umask 022`, as uid 65532
    /// when this runs as root; the token from the environment if given.
    fn command(&self, args: &[&str], token: Option<&str>) -> Command {
        let mut cmd = if running_as_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args([
                "--reuid=65532",
                "--regid=65532",
                "--clear-groups",
                "--",
                "sh",
            ]);
            cmd
        } else {
            Command::new("sh")
        };
        cmd.args(["-c", r#"umask 022; exec "$0" "$@""#])
            .arg(&self.bin)
            .args(args)
            .arg("-c")
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .env("POSTMARK_RELAY_LOG__LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (key, _) in std::env::vars() {
            if key.starts_with("POSTMARK_") {
                cmd.env_remove(key);
            }
        }
        if let Some(token) = token {
            cmd.env("POSTMARK_SERVER_TOKEN", token);
        }
        cmd
    }

    fn serve(&self, token: Option<&str>) -> Relay {
        Relay::spawn(self.command(&["serve"], token), self.dir.clone())
    }

    /// `check`'s exit code and output.
    fn check(&self, token: Option<&str>) -> (Option<i32>, String) {
        let out = self
            .command(&["check"], token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    }
}

/// Sends one message and waits for the fake to have it.
fn relay_one(relay: &Relay, fake: &FakePostmark, tag: &str) {
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message(tag),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = fake.wait_for(1, Duration::from_secs(20));
    assert!(got.iter().any(|m| subject(m) == tag), "{tag} not relayed");
}

#[test]
fn a_new_queue_under_umask_022_is_0700_with_every_file_0600() {
    let (t, b) = (fake(), fake());
    let setup = Setup::new(&t, &b, "");
    let relay = setup.serve(Some(TOKEN));
    relay_one(&relay, &t, "private-new");
    assert_private(&setup.queue);
    if running_as_root() {
        let owner = std::fs::metadata(&setup.queue).unwrap().uid();
        assert_eq!(owner, UID, "the relay did not run as uid {UID}");
    }
    let (code, out) = setup.check(Some(TOKEN));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "Queue {} (queue.path): private (folder 0700, files 0600).",
            setup.queue.display()
        )),
        "{out}"
    );
    assert!(!out.contains("WARNING"), "{out}");
    assert!(relay.terminate().success());
    // A clean stop removes -wal and -shm; what stays is still private.
    assert_private(&setup.queue);
}

#[test]
fn a_loose_queue_the_relay_owns_is_tightened_at_start() {
    let (t, b) = (fake(), fake());
    let setup = Setup::new(&t, &b, "");
    let relay = setup.serve(Some(TOKEN));
    relay_one(&relay, &t, "private-first");
    drop(relay); // SIGKILL: -wal and -shm stay behind.
                 // As an older version left it under umask 022.
    chmod(&setup.queue, 0o755);
    for (name, _) in modes(&setup.queue) {
        chmod(&setup.queue.join(name), 0o644);
    }

    let (code, out) = setup.check(Some(TOKEN));
    assert_eq!(
        code,
        Some(0),
        "a loose queue is a warning, not a failure: {out}"
    );
    let warning = out
        .lines()
        .find(|l| l.starts_with("WARNING: Queue"))
        .unwrap_or_else(|| panic!("no queue warning:\n{out}"));
    let q = setup.queue.display();
    assert!(warning.contains("queue 0755"), "{warning}");
    assert!(warning.contains("queue.sqlite3 0644"), "{warning}");
    assert!(
        warning.ends_with(&format!(
            "chmod 700 {q} && chmod 600 {q}/queue.sqlite3 {q}/queue.sqlite3-wal {q}/queue.sqlite3-shm"
        )),
        "{warning}"
    );

    let mut relay = setup.serve(Some(TOKEN));
    let line = relay.wait_log("its permissions are tightened", Duration::from_secs(10));
    assert!(
        line.contains("was=0755") && line.contains("now=0700"),
        "{line}"
    );
    assert_eq!(relay.count_log("its permissions are tightened"), 4);
    assert_eq!(relay.count_log("cannot change that"), 0);
    assert_private(&setup.queue);
    // The queue still works.
    let reply = send(
        relay.addr,
        "app@example.com",
        &["u@example.net"],
        &message("private-second"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    t.wait_for(2, Duration::from_secs(20));
    assert_private(&setup.queue);
}

#[test]
#[ignore = "needs root: gives the queue another owner than the relay's user (scripts/test as root runs it)"]
fn a_loose_queue_owned_by_someone_else_is_warned_about_with_the_chmod() {
    assert!(
        running_as_root(),
        "needs root: run with scripts/test as root, or cargo test -- --ignored as root"
    );
    let (t, b) = (fake(), fake());
    let setup = Setup::new(&t, &b, "");
    // root's folder and database, which the relay's group may write: the
    // relay can use them but not change their modes.
    std::fs::create_dir(&setup.queue).unwrap();
    std::os::unix::fs::chown(&setup.queue, Some(0), Some(UID)).unwrap();
    chmod(&setup.queue, 0o775);
    let db = setup.queue.join("queue.sqlite3");
    std::fs::write(&db, b"").unwrap();
    std::os::unix::fs::chown(&db, Some(0), Some(UID)).unwrap();
    chmod(&db, 0o664);

    let mut relay = setup.serve(Some(TOKEN));
    let fix = relay.wait_log(
        "run this as the files' owner or root",
        Duration::from_secs(10),
    );
    let q = setup.queue.display();
    assert!(
        fix.contains(&format!("fix=chmod 700 {q} && chmod 600 {q}/queue.sqlite3")),
        "{fix}"
    );
    assert_eq!(
        relay.count_log("cannot change that"),
        2,
        "{:#?}",
        relay.logs()
    );
    assert!(relay.count_log("owner_uid=0") == 2, "{:#?}", relay.logs());
    // It still serves, and what it created itself is private.
    relay_one(&relay, &t, "private-not-owned");
    assert_eq!(mode(&setup.queue), 0o775);
    assert_eq!(mode(&db), 0o664);
    for name in ["queue.sqlite3-wal", "queue.sqlite3-shm"] {
        let path = setup.queue.join(name);
        assert_eq!(mode(&path), 0o600, "{name}");
        assert_eq!(std::fs::metadata(&path).unwrap().uid(), UID, "{name}");
    }

    let (code, out) = setup.check(Some(TOKEN));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("WARNING: Queue") && out.contains("(owner uid 0)"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "run: chmod 700 {q} && chmod 600 {q}/queue.sqlite3"
        )),
        "{out}"
    );
}

#[test]
fn a_world_readable_token_file_is_warned_about_in_the_log_and_in_check_and_still_works() {
    let (t, b) = (fake(), fake());
    // The file sits in the test folder, which Setup makes readable by all.
    let token_name = "token";
    let setup = Setup::new(&t, &b, "##[postmark]\nserver_token_file = \"TOKEN_FILE\"\n");
    let token_file = setup.dir.path().join(token_name);
    let config = std::fs::read_to_string(&setup.config)
        .unwrap()
        .replace("TOKEN_FILE", &token_file.display().to_string());
    std::fs::write(&setup.config, config).unwrap();
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    chmod(&token_file, 0o644);
    if running_as_root() {
        std::os::unix::fs::chown(&token_file, Some(UID), Some(UID)).unwrap();
    }

    let mut relay = setup.serve(None);
    let line = relay.wait_log(
        "A secret file is readable by every local user",
        Duration::from_secs(10),
    );
    assert!(line.contains("key=postmark.server_token_file"), "{line}");
    assert!(line.contains("mode=0644"), "{line}");
    assert!(
        line.contains(&format!("fix=chmod o-rwx {}", token_file.display())),
        "{line}"
    );
    // The token still works.
    relay_one(&relay, &t, "token-file");

    let (code, out) = setup.check(None);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "WARNING: postmark.server_token_file {} is readable by every local user (mode 0644)",
            token_file.display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("run: chmod o-rwx {}", token_file.display())),
        "{out}"
    );
    assert!(!out.contains(TOKEN), "{out}");

    // Private enough: no warning.
    chmod(&token_file, 0o600);
    let (code, out) = setup.check(None);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("WARNING"), "{out}");
    drop(relay);
    let relay = setup.serve(None);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(relay.count_log("A secret file"), 0, "{:#?}", relay.logs());
}
