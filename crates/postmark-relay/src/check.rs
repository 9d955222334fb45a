//! `check`: the config is already valid when this runs; this says whether
//! the queue and the secret files are private, logs in to every upstream
//! exactly as the daemon would, and prints one verdict line per upstream
//! with a fix for each failure. Exits 0 only if all upstreams pass.
//!
//! A queue or secret file other users can read is a warning with its fix,
//! never a failure: the exit code answers "can this config deliver mail?"
//! (deploy scripts gate on it), `serve` tightens a queue it owns by itself
//! at start, and `check` often runs as another user than `serve` (root via
//! sudo), so it cannot tell whether `serve` will be able to.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use relay_config::Config;
use relay_delivery::probe::{probe, Failure, Step, Verdict};
use relay_delivery::{Upstream, UpstreamError};
use relay_queue::private::{self, Privacy};

/// Per step (connect, each command): long enough for a slow network, short
/// enough that a blocked port is reported while the operator still waits.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the check and prints the verdicts on stdout.
pub fn run(loaded: &relay_config::Loaded) -> ExitCode {
    let config = &loaded.config;
    println!("{}", summary(config, loaded.file.as_deref()));
    println!("{}", queue_privacy(&config.queue.path));
    for exposed in relay_config::world_readable_secrets(config) {
        println!("WARNING: {exposed}.");
    }
    println!("Checking each upstream (DNS, TCP, STARTTLS, AUTH):");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("postmark-relay check: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let verdicts = runtime.block_on(check_all(config));
    let addresses: Vec<String> = config
        .upstreams
        .values()
        .map(|up| format!("{}:{}", up.host, up.port))
        .collect();
    let name_width = config.upstreams.keys().map(String::len).max().unwrap_or(0);
    let at_width = addresses.iter().map(String::len).max().unwrap_or(0);
    let mut passed = true;
    for ((name, at), verdict) in config.upstreams.keys().zip(&addresses).zip(&verdicts) {
        println!("{name:<name_width$}  {at:<at_width$}  {verdict}");
        passed &= matches!(verdict, Verdict::Passed(_));
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What was validated, without secrets.
fn summary(config: &Config, file: Option<&std::path::Path>) -> String {
    let source = file.map_or("built-in defaults and environment".to_string(), |f| {
        f.display().to_string()
    });
    let names: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
    let token = if config.postmark.server_token.is_some() {
        "set"
    } else {
        "not set"
    };
    format!(
        "Configuration ({source}) is valid: {} upstreams ({}), Server API Token {token}.",
        names.len(),
        names.join(", ")
    )
}

/// One line on whether the queue in `folder` is private, with the fix when
/// it is not.
fn queue_privacy(folder: &Path) -> String {
    let at = format!("Queue {} (queue.path)", folder.display());
    match private::inspect(folder) {
        Ok(Privacy::Missing) => format!(
            "{at}: not created yet; serve creates it private (folder {}, files {}).",
            private::octal(private::FOLDER_MODE),
            private::octal(private::FILE_MODE)
        ),
        Ok(Privacy::Private) => format!(
            "{at}: private (folder {}, files {}).",
            private::octal(private::FOLDER_MODE),
            private::octal(private::FILE_MODE)
        ),
        Ok(Privacy::Loose(loose)) => {
            let found: Vec<String> = loose
                .iter()
                .map(|l| {
                    let name = l.path.file_name().map_or_else(
                        || l.path.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    );
                    format!("{name} {} (owner uid {})", private::octal(l.mode), l.owner)
                })
                .collect();
            format!(
                "WARNING: {at} is readable by other local users: {}. serve tightens it at start when it runs as the owner (or root); otherwise run: {}",
                found.join(", "),
                private::fix_command(&loose)
            )
        }
        Err(e) => format!("WARNING: {at}: cannot check its permissions: {e}."),
    }
}

/// Probes every upstream at once (a blocked port costs one timeout, not
/// one per upstream); verdicts come back in `config.upstreams` order.
async fn check_all(config: &Config) -> Vec<Verdict> {
    let tasks: Vec<_> = relay_delivery::upstreams(config)
        .into_iter()
        .map(|(_, built)| match for_probe(built) {
            Ok(up) => tokio::spawn(async move { probe(&up).await }),
            Err(failure) => tokio::spawn(async move { Verdict::Failed(failure) }),
        })
        .collect();
    let mut verdicts = Vec::with_capacity(tasks.len());
    for task in tasks {
        verdicts.push(task.await.unwrap_or_else(|e| {
            Verdict::Failed(Failure {
                step: Step::Config,
                reason: format!("the check itself failed: {e}"),
                fix: None,
            })
        }));
    }
    verdicts
}

/// The delivery settings of upstream `name`, built as `serve` builds them
/// (with a shorter timeout), or why they cannot work.
pub(crate) fn runtime_upstream(config: &Config, name: &str) -> Result<Upstream, Failure> {
    relay_delivery::upstreams(config)
        .into_iter()
        .find(|(n, _)| n == name)
        .map_or_else(
            || {
                Err(Failure {
                    step: Step::Config,
                    reason: format!("there is no upstream named {name}"),
                    fix: Some(format!("add [upstreams.{name}] to the config")),
                })
            },
            |(_, built)| for_probe(built),
        )
}

/// A built upstream with the probe's timeout, or a config failure with its
/// fix.
fn for_probe(built: Result<Upstream, UpstreamError>) -> Result<Upstream, Failure> {
    let fix = match &built {
        Ok(_) => None,
        Err(UpstreamError::NoToken { name }) => Some(format!("set POSTMARK_SERVER_TOKEN (or postmark.server_token, postmark.server_token_file, upstreams.{name}.server_token) to the Server API Token (Postmark: Servers → your server → API Tokens)")),
        Err(UpstreamError::Tls { name, .. }) => Some(format!("point upstreams.{name}.ca_file at a readable PEM file of CA certificates")),
    };
    built
        .map(|mut up| {
            up.timeout = up.timeout.min(PROBE_TIMEOUT);
            up
        })
        .map_err(|e| Failure {
            step: Step::Config,
            reason: e.to_string(),
            fix,
        })
}
