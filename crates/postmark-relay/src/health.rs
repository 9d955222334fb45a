//! `health`: exits 0 when the admin endpoint answers `/healthz` with 200,
//! for container HEALTHCHECKs in images without curl.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use relay_sendmail::dial_address;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the check against `admin.listen`.
pub fn run(config: &relay_config::Config) -> ExitCode {
    let Some(addr) = config.admin.listen else {
        eprintln!("postmark-relay health: admin.listen is disabled (\"\"); nothing to ask");
        return ExitCode::FAILURE;
    };
    match get_healthz(dial_address(addr)) {
        Ok(200) => {
            println!("healthy");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("postmark-relay health: /healthz answered {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("postmark-relay health: cannot reach the admin endpoint at {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn get_healthz(addr: SocketAddr) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = Vec::new();
    stream.take(4096).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))
}
