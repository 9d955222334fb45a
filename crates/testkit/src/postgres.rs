//! [`TestPostgres`]: a real PostgreSQL server for tests of the shared
//! queue, from Debian's `postgresql` package, in a temporary folder on a
//! free loopback port. It can be stopped and started again on the same
//! port (outage tests) and is stopped when dropped.
//!
//! PostgreSQL refuses to run as root, so when the tests run as root the
//! server (and its tools) run as the `postgres` system user the package
//! creates, in a folder that user owns. The relay connects as a role that
//! owns only its database, with a password and no superuser rights, as in
//! production.
//!
//! [`TestPostgres::start_tls`] serves TLS with a certificate from a test CA
//! ([`TestPostgres::ca_file`]) and refuses TCP connections without it, so
//! a test that connects knows TLS was used.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cert::{self, ServerCert};

/// Where Debian installs the server binaries, one folder per version.
const DEBIAN_BINARIES: &str = "/usr/lib/postgresql";
/// The role and database the relay uses.
pub const PG_ROLE: &str = "relay";
/// The role's password (appears in URLs; tests check it never leaks).
pub const PG_PASSWORD: &str = "pg-test-pa55word";

/// A running (or stopped) PostgreSQL server owned by one test.
pub struct TestPostgres {
    /// Holds the data folder and the socket; removed on drop.
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// `Some("postgres")` when we are root.
    run_as: Option<&'static str>,
    /// The server's certificate files, when it serves TLS.
    tls: Option<TlsFiles>,
}

/// Where a TLS server's PKI lives.
struct TlsFiles {
    /// The test CA (PEM), outside the data folder.
    ca_file: PathBuf,
    /// Certificate and key (PEM) in the data folder, the key mode `0600`
    /// and, like the certificate, owned by the server's user.
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// `pg_hba.conf` of a TLS server: the local socket (the tests' `psql`)
/// trusted; TCP only with TLS, so a plain connection matches no line and
/// is refused.
const TLS_ONLY_HBA: &str = "\
local   all all              trust
hostssl all all 127.0.0.1/32 scram-sha-256
hostssl all all ::1/128      scram-sha-256
";

impl TestPostgres {
    /// Creates a cluster, starts it, and creates the relay's role and
    /// database. Panics (never skips) when PostgreSQL is not installed.
    pub fn start() -> TestPostgres {
        TestPostgres::create(false)
    }

    /// Like [`start`](Self::start), serving TLS with a certificate for
    /// `localhost`, `127.0.0.1` and `::1` signed by a test CA
    /// ([`ca_file`](Self::ca_file)); TCP connections without TLS are
    /// refused. Connect with [`tls_url`](Self::tls_url).
    pub fn start_tls() -> TestPostgres {
        TestPostgres::create(true)
    }

    fn create(tls: bool) -> TestPostgres {
        let bin = binaries();
        let run_as = is_root().then_some("postgres");
        let dir = tempfile::Builder::new()
            .prefix("pg-test")
            .tempdir()
            .expect("a temporary folder for PostgreSQL");
        if let Some(user) = run_as {
            give(dir.path(), user);
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut pg = TestPostgres {
            dir,
            bin,
            port,
            run_as,
            tls: None,
        };
        pg.tool(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        if tls {
            pg.tls = Some(pg.write_tls_files());
        }
        pg.start_again();
        pg.sql_in(
            "postgres",
            &format!("CREATE ROLE {PG_ROLE} LOGIN PASSWORD '{PG_PASSWORD}'"),
        );
        pg.sql_in(
            "postgres",
            &format!("CREATE DATABASE {PG_ROLE} OWNER {PG_ROLE}"),
        );
        pg
    }

    /// `postgres://relay:PASSWORD@127.0.0.1:PORT/relay` (plain TCP).
    pub fn url(&self) -> String {
        format!(
            "postgres://{PG_ROLE}:{PG_PASSWORD}@127.0.0.1:{}/{PG_ROLE}",
            self.port
        )
    }

    /// `postgres://relay:PASSWORD@127.0.0.1:PORT/relay?sslmode=require`,
    /// for a server from [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> String {
        format!("{}?sslmode=require", self.url())
    }

    /// PEM file of the test CA that signed the certificate of a server
    /// from [`start_tls`](Self::start_tls); panics for a plain server.
    pub fn ca_file(&self) -> &Path {
        match &self.tls {
            Some(files) => &files.ca_file,
            None => panic!("this TestPostgres has no TLS: use TestPostgres::start_tls"),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the (stopped) server again on the same port; waits until it
    /// accepts connections.
    pub fn start_again(&self) {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        if let Some(files) = &self.tls {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                files.cert_file.display(),
                files.key_file.display()
            ));
        }
        self.tool(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-l",
                &self.dir.path().join("server.log").display().to_string(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// Stops the server (fast shutdown: sessions are cut, like a database
    /// going away); [`start_again`](Self::start_again) brings it back.
    pub fn stop(&self) {
        self.tool(
            "pg_ctl",
            &[
                "-D",
                &self.data().display().to_string(),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        );
    }

    /// Runs SQL as the superuser in the relay's database over the local
    /// socket; returns the unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        self.sql_in(PG_ROLE, sql)
    }

    /// Like [`psql`](Self::psql), in database `db`.
    pub fn sql_in(&self, db: &str, sql: &str) -> String {
        let out = self.tool(
            "psql",
            &[
                "-h",
                &self.dir.path().display().to_string(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAt",
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The server's own log, for a failing test's report.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Writes a fresh PKI (the CA beside the data folder, the server's
    /// certificate and key in it) and the TLS-only `pg_hba.conf`, as the
    /// server needs them: the key `0600` and owned by the server's user
    /// (PostgreSQL refuses a key others may read).
    fn write_tls_files(&self) -> TlsFiles {
        let generated = ServerCert::generate("relay-testkit PostgreSQL CA");
        let files = TlsFiles {
            ca_file: self.dir.path().join("ca.pem"),
            cert_file: self.data().join("server.crt"),
            key_file: self.data().join("server.key"),
        };
        cert::write(&files.ca_file, &generated.ca_pem);
        cert::write(&files.cert_file, &generated.cert_pem);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&files.key_file)
            .and_then(|mut f| f.write_all(generated.key_pem.as_bytes()))
            .unwrap_or_else(|e| panic!("write {}: {e}", files.key_file.display()));
        if let Some(user) = self.run_as {
            give(&files.cert_file, user);
            give(&files.key_file, user);
        }
        cert::write(&self.data().join("pg_hba.conf"), TLS_ONLY_HBA);
        files
    }

    /// Runs a PostgreSQL tool (as `postgres` when we are root); panics
    /// with its output if it fails.
    fn tool(&self, name: &str, args: &[&str]) -> Output {
        let program = self.bin.join(name);
        let out = self
            .command(name)
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        assert!(
            out.status.success(),
            "{name} failed ({}):\n{}\n{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out
    }
}

impl TestPostgres {
    /// PostgreSQL's program `name`, run as the server's user.
    fn command(&self, name: &str) -> Command {
        let program = self.bin.join(name);
        match self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(&program);
                cmd
            }
            None => Command::new(&program),
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.data();
        if data.join("postmaster.pid").exists() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}

/// The newest installed server's binary folder; panics naming the package
/// when there is none.
fn binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_BINARIES)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed: the shared-queue tests need a real server \
             (initdb and pg_ctl under {DEBIAN_BINARIES}/<version>/bin). \
             Install it with `apt-get install postgresql` (.ci/run does)."
        ),
    }
}

/// Makes `user` the owner of `path`.
fn give(path: &Path, user: &str) {
    let status = Command::new("chown")
        .arg(format!("{user}:{user}"))
        .arg(path)
        .status()
        .expect("chown runs");
    assert!(status.success(), "cannot give {} to {user}", path.display());
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
