//! `sendmail -bs`: SMTP on standard input and output, as Symfony Mailer's
//! `sendmail://default` and Laravel's `sendmail -bs -i` speak it. Rather
//! than a second SMTP server, the session is passed byte for byte to the
//! running relay, so the app sees the relay's own replies (its limits, its
//! `250 … queued as ID`) and nothing is stored twice.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use crate::EX_TEMPFAIL;

/// How long connecting to the relay may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Proxies one SMTP session between stdin/stdout and the relay at `addr`
/// until the relay closes it (after `QUIT`, or when the app's input ends).
/// When the relay cannot be reached the app gets a `421` greeting, and the
/// exit code is 75 (try again later).
pub fn proxy(addr: SocketAddr, listen_from: &str) -> ExitCode {
    let relay = match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(relay) => relay,
        Err(e) => {
            let mut stdout = io::stdout().lock();
            let _ = write!(
                stdout,
                "421 4.3.2 postmark-relay sendmail: cannot reach the relay at {addr}\r\n"
            );
            let _ = stdout.flush();
            eprintln!("sendmail: cannot connect to the relay at {addr}: {e}");
            eprintln!("{}", crate::where_from(addr, listen_from));
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    let _ = relay.set_nodelay(true);
    match relay.try_clone() {
        Ok(mut upload) => {
            // The app's commands to the relay; its end of input ends ours.
            std::thread::spawn(move || {
                let _ = io::copy(&mut io::stdin().lock(), &mut upload);
                let _ = upload.shutdown(Shutdown::Write);
            });
        }
        Err(e) => {
            eprintln!("sendmail: cannot use the connection to the relay: {e}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    }
    // The relay's replies to the app, each as soon as it arrives.
    let mut from_relay = relay;
    let mut stdout = io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        match from_relay.read(&mut buf) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(n) => {
                if stdout
                    .write_all(&buf[..n])
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    // The app is gone: nothing left to tell it.
                    return ExitCode::SUCCESS;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("sendmail: the connection to the relay broke: {e}");
                return ExitCode::from(EX_TEMPFAIL);
            }
        }
    }
}
