//! `check`: the config is already valid when this runs; this says whether
//! the queue and the secret files are private, logs in to every upstream
//! exactly as the daemon would (and, with `--from ADDR`, asks each whether
//! it takes ADDR as a sender), and prints one verdict line per upstream
//! with a fix for each failure. Exits 0 only if all upstreams pass.
//!
//! A queue or secret file other users can read is a warning with its fix,
//! never a failure: the exit code answers "can this config deliver mail?"
//! (deploy scripts gate on it), `serve` tightens a queue it owns by itself
//! at start, and `check` often runs as another user than `serve` (root via
//! sudo), so it cannot tell whether `serve` will be able to.

use std::path::Path;
use std::process::ExitCode;

use relay_config::Config;
use relay_delivery::probe::{probe_all, Verdict};
use relay_queue::private::{self, Privacy};

/// Runs the check and prints the verdicts on stdout.
pub fn run(loaded: &relay_config::Loaded, sender: Option<&str>) -> ExitCode {
    if let Some(bad) = sender.filter(|s| !plausible_address(s)) {
        eprintln!(
            "postmark-relay check: --from {:?} is not an email address (local@domain, no spaces, brackets or control characters)",
            bad
        );
        return ExitCode::from(crate::EX_USAGE);
    }
    let config = &loaded.config;
    println!("{}", summary(config, loaded.file.as_deref()));
    println!("{}", queue_privacy(&config.queue.path));
    for exposed in relay_config::world_readable_secrets(config) {
        println!("WARNING: {exposed}.");
    }
    match sender {
        Some(sender) => println!(
            "Checking each upstream (DNS, TCP, STARTTLS, AUTH, MAIL FROM:<{sender}> then RSET):"
        ),
        None => println!("Checking each upstream (DNS, TCP, STARTTLS, AUTH):"),
    }
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
    let verdicts = runtime.block_on(probe_all(config, sender));
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
        passed &= matches!(verdict, Verdict::Passed(..));
    }
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Whether `address` can go into `MAIL FROM:<…>` as it is: one
/// `local@domain` word, nothing that could end the command or add another.
fn plausible_address(address: &str) -> bool {
    address
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !address
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>'))
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
