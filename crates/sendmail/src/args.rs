//! sendmail(8)'s command line, parsed by hand: getopt-style (grouped flags,
//! option values attached or separate, options anywhere before `--`), so
//! the flags that PHP, cron and legacy tools pass keep working.

use std::path::PathBuf;

use relay_message::address_list;

/// What the command line asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `-c FILE` / `--config FILE` / `-C FILE`: our config file.
    pub config: Option<PathBuf>,
    /// `-t`: recipients from To/Cc/Bcc; Bcc removed.
    pub recipients_from_headers: bool,
    /// `-i` / `-oi`: a lone `.` line does not end the message.
    pub ignore_dots: bool,
    /// `-f` / `-r`: the envelope sender (`Some("")` is the null sender `<>`).
    pub sender: Option<String>,
    /// `-F`: full name for the `From:` header we add when there is none.
    pub full_name: Option<String>,
    /// Recipients given as arguments (comma-separated lists split).
    pub recipients: Vec<String>,
    /// `-bs`: speak SMTP on stdin/stdout (a proxy of a session with the
    /// relay) instead of reading one message.
    pub smtp_session: bool,
}

/// Why the command line cannot be run; each maps to exit 64 (or 0 for help).
#[derive(Debug, PartialEq, Eq)]
pub enum ArgsError {
    /// `--help`: print the usage on stdout and exit 0.
    Help,
    /// A malformed command line: the text says what is wrong.
    Usage(String),
    /// A sendmail mode this relay does not implement (`-bs`, `-bp`, `-q`, ...).
    Unsupported(String),
}

/// The usage text, printed with every usage error.
pub const USAGE: &str = "\
usage: sendmail [-t] [-i] [-f FROM] [-F NAME] [-c FILE] [--] [RECIPIENT...]
       sendmail -bs [-c FILE]   (SMTP on standard input and output, passed to the relay)
  -t          recipients from the To:, Cc: and Bcc: headers (Bcc: is removed)
  -i, -oi     a line with a single '.' does not end the message
  -f, -r FROM envelope sender [default: From: with -t, else $USER@server.hostname]
  -F NAME     full name for the From: header added when the message has none
  -c FILE     postmark-relay config; the message goes to its first server.listen
Accepted and ignored: -bm -em -ee -oXXX -v -m -n -G -U -B X -N X -R X -O X -V X -L X -h N -X F -p P -d X -A X -M X
The message is read from standard input.";

/// Options that take a value (attached, `-fFROM`, or as the next argument).
const WITH_VALUE: &[char] = &[
    'f', 'r', 'F', 'c', 'C', 'o', 'O', 'b', 'e', 'B', 'N', 'R', 'V', 'L', 'h', 'X', 'p', 'd', 'A',
    'M',
];

/// Flags without a value that are accepted and ignored.
const IGNORED_FLAGS: &[char] = &['v', 'm', 'n', 'G', 'U', 's'];

/// Parses the arguments after the program or subcommand name.
pub fn parse(args: &[String]) -> Result<Options, ArgsError> {
    let mut opts = Options::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            for rcpt in rest.by_ref() {
                add_recipients(&mut opts, rcpt);
            }
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some(("config", file)) => opts.config = Some(PathBuf::from(file)),
                None if long == "config" => {
                    let file = value(&mut rest, "--config")?;
                    opts.config = Some(PathBuf::from(file));
                }
                None if long == "help" => return Err(ArgsError::Help),
                _ => return Err(ArgsError::Usage(format!("unknown option {arg}"))),
            }
            continue;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            add_recipients(&mut opts, arg);
            continue;
        };
        for (at, flag) in flags.char_indices() {
            if WITH_VALUE.contains(&flag) {
                let attached = &flags[at + flag.len_utf8()..];
                let val = if attached.is_empty() {
                    value(&mut rest, &format!("-{flag}"))?
                } else {
                    attached.to_string()
                };
                apply(&mut opts, flag, val)?;
                break;
            }
            match flag {
                't' => opts.recipients_from_headers = true,
                'i' => opts.ignore_dots = true,
                'q' | 'I' => {
                    return Err(ArgsError::Unsupported(format!(
                        "-{flags} (queue runs and alias databases are the relay's business)"
                    )))
                }
                f if IGNORED_FLAGS.contains(&f) => {}
                f => return Err(ArgsError::Usage(format!("unknown option -{f}"))),
            }
        }
    }
    Ok(opts)
}

/// The value of an option given as the next argument.
fn value<'a>(
    rest: &mut impl Iterator<Item = &'a String>,
    option: &str,
) -> Result<String, ArgsError> {
    rest.next()
        .cloned()
        .ok_or_else(|| ArgsError::Usage(format!("option {option} needs a value")))
}

/// Applies one option that carries a value.
fn apply(opts: &mut Options, flag: char, val: String) -> Result<(), ArgsError> {
    match flag {
        'f' | 'r' => opts.sender = Some(envelope_sender(&val)),
        'F' => opts.full_name = Some(val),
        'c' | 'C' => opts.config = Some(PathBuf::from(val)),
        // -oi is -i; -oem, -oee, -odi, -odb and every other -oX are ignored.
        'o' if val == "i" => opts.ignore_dots = true,
        'b' => match val.as_str() {
            "m" => {}
            "s" => opts.smtp_session = true,
            mode => {
                return Err(ArgsError::Unsupported(format!(
                    "-b{mode} (only -bm, a message on stdin, and -bs, SMTP on stdin and stdout, are supported)"
                )))
            }
        },
        _ => {}
    }
    Ok(())
}

/// `-f` accepts `addr`, `<addr>`, `Name <addr>` and `<>` (the null sender).
fn envelope_sender(val: &str) -> String {
    address_list(val).into_iter().next().unwrap_or_default()
}

fn add_recipients(opts: &mut Options, arg: &str) {
    opts.recipients.extend(address_list(arg));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Options, ArgsError> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    fn ok(line: &str) -> Options {
        parse_str(line).unwrap()
    }

    #[test]
    fn php_and_cron_defaults() {
        let o = ok("-t -i");
        assert!(o.recipients_from_headers && o.ignore_dots);
        assert!(o.recipients.is_empty());
        let o = ok("-ti");
        assert!(o.recipients_from_headers && o.ignore_dots);
        let o = ok("-oi -oem -oee -odi -odb -em -v -bm -oXfoo a@b");
        assert!(o.ignore_dots && !o.recipients_from_headers);
        assert_eq!(o.recipients, ["a@b"]);
        assert!(!ok("-oem a@b").ignore_dots);
    }

    #[test]
    fn sender_forms() {
        assert_eq!(ok("-f app@x.com").sender.as_deref(), Some("app@x.com"));
        assert_eq!(ok("-fapp@x.com").sender.as_deref(), Some("app@x.com"));
        assert_eq!(ok("-r app@x.com").sender.as_deref(), Some("app@x.com"));
        assert_eq!(ok("-rapp@x.com").sender.as_deref(), Some("app@x.com"));
        assert_eq!(ok("-f <app@x.com>").sender.as_deref(), Some("app@x.com"));
        assert_eq!(ok("-f <>").sender.as_deref(), Some(""));
        assert_eq!(ok("-tif app@x.com").sender.as_deref(), Some("app@x.com"));
        assert_eq!(ok("a@b").sender, None);
    }

    #[test]
    fn full_name_forms() {
        let args = ["-F", "Web Shop", "a@b"].map(String::from);
        assert_eq!(parse(&args).unwrap().full_name.as_deref(), Some("Web Shop"));
        assert_eq!(ok("-FShop a@b").full_name.as_deref(), Some("Shop"));
    }

    #[test]
    fn config_forms() {
        let want = Some(PathBuf::from("/etc/r.toml"));
        assert_eq!(ok("-c /etc/r.toml a@b").config, want);
        assert_eq!(ok("-c/etc/r.toml a@b").config, want);
        assert_eq!(ok("--config /etc/r.toml a@b").config, want);
        assert_eq!(ok("--config=/etc/r.toml a@b").config, want);
        assert_eq!(ok("-C /etc/r.toml a@b").config, want);
    }

    #[test]
    fn ignored_options_consume_their_values() {
        let o = ok("-N never -R hdrs -B 8BITMIME -O DeliveryMode=b -V envid -L tag -h 3 a@b");
        assert_eq!(o.recipients, ["a@b"]);
        let o = ok("-Nnever -Rhdrs -B8BITMIME a@b");
        assert_eq!(o.recipients, ["a@b"]);
    }

    #[test]
    fn recipients_lists_and_double_dash() {
        let o = ok("a@b,c@d e@f -- -odd@x.com");
        assert_eq!(o.recipients, ["a@b", "c@d", "e@f", "-odd@x.com"]);
        let args = ["Ann <ann@x.com>, bob@y.com"].map(String::from);
        assert_eq!(parse(&args).unwrap().recipients, ["ann@x.com", "bob@y.com"]);
        // Options after recipients still count (GNU getopt permutes).
        assert!(ok("a@b -i").ignore_dots);
    }

    #[test]
    fn usage_errors() {
        assert!(matches!(parse_str("-Z a@b"), Err(ArgsError::Usage(_))));
        assert!(matches!(parse_str("-tZ"), Err(ArgsError::Usage(_))));
        assert!(matches!(parse_str("--bogus"), Err(ArgsError::Usage(_))));
        assert!(matches!(parse_str("-f"), Err(ArgsError::Usage(_))));
        assert!(matches!(parse_str("a@b -c"), Err(ArgsError::Usage(_))));
        assert_eq!(parse_str("--help"), Err(ArgsError::Help));
    }

    #[test]
    fn bs_is_an_smtp_session() {
        assert!(parse_str("-bs -i").unwrap().smtp_session);
        assert!(parse_str("-b s").unwrap().smtp_session);
        assert!(!parse_str("a@b").unwrap().smtp_session);
    }

    #[test]
    fn unsupported_modes() {
        for line in ["-bp", "-bv a@b", "-q", "-q30m", "-bi", "-I"] {
            assert!(
                matches!(parse_str(line), Err(ArgsError::Unsupported(_))),
                "{line}"
            );
        }
    }
}
