//! `bench-load`: the same load as `smtp-source -s S -m M -l L`, one message
//! per connection like smtp-source (connect, EHLO, MAIL, RCPT, DATA, body,
//! QUIT), with a timestamp on each end of DATA: the time from the moment the
//! body and its final `.` were handed to the kernel (one write, TCP_NODELAY)
//! to the moment the `250` arrived.
//!
//! Prints one line: `messages seconds msgs_per_s p50_ms p90_ms p99_ms max_ms`.
//! Exits 1 if any message was not answered `250`.
//!
//! Usage: bench-load ADDR SESSIONS MESSAGES LENGTH

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

type Conn = BufReader<TcpStream>;

/// Reads one (possibly multi-line) reply; returns its code.
async fn reply(conn: &mut Conn, line: &mut String) -> std::io::Result<u16> {
    loop {
        line.clear();
        if conn.read_line(line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("bad reply {line:?}")));
        }
    }
}

async fn expect(conn: &mut Conn, line: &mut String, class: u16) -> std::io::Result<()> {
    let code = reply(conn, line).await?;
    if code / 100 != class {
        return Err(std::io::Error::other(format!("unexpected reply {}", line.trim_end())));
    }
    Ok(())
}

async fn command(conn: &mut Conn, line: &mut String, cmd: &[u8], class: u16) -> std::io::Result<()> {
    conn.get_mut().write_all(cmd).await?;
    expect(conn, line, class).await
}

/// A message of about `length` bytes: a few headers, then 76-column lines.
fn body(length: usize) -> Vec<u8> {
    let mut out = b"From: <a@example.com>\r\nTo: <b@example.net>\r\nSubject: bench\r\n\r\n".to_vec();
    while out.len() + 80 < length {
        out.extend_from_slice(&[b'X'; 76]);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

async fn one(addr: &str, body: &[u8]) -> std::io::Result<Duration> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut conn = BufReader::new(stream);
    let mut line = String::new();
    expect(&mut conn, &mut line, 2).await?;
    command(&mut conn, &mut line, b"EHLO bench-load\r\n", 2).await?;
    command(&mut conn, &mut line, b"MAIL FROM:<a@example.com>\r\n", 2).await?;
    command(&mut conn, &mut line, b"RCPT TO:<b@example.net>\r\n", 2).await?;
    command(&mut conn, &mut line, b"DATA\r\n", 3).await?;
    conn.get_mut().write_all(body).await?;
    let sent = Instant::now();
    expect(&mut conn, &mut line, 2).await?;
    let took = sent.elapsed();
    command(&mut conn, &mut line, b"QUIT\r\n", 2).await?;
    Ok(took)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: bench-load ADDR SESSIONS MESSAGES LENGTH");
        std::process::exit(64);
    }
    let addr = args[1].clone();
    let sessions: usize = args[2].parse().expect("SESSIONS");
    let messages: usize = args[3].parse().expect("MESSAGES");
    let body = Arc::new(body(args[4].parse().expect("LENGTH")));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let results = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..sessions {
            let (addr, body, next) = (addr.clone(), body.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut times = Vec::new();
                let mut errors = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < messages {
                    match one(&addr, &body).await {
                        Ok(t) => times.push(t),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (times, errors)
            }));
        }
        let mut times = Vec::new();
        let mut errors = Vec::new();
        for t in tasks {
            let (t, e) = t.await.expect("task");
            times.extend(t);
            errors.extend(e);
        }
        (times, errors)
    });
    let elapsed = started.elapsed().as_secs_f64();
    let (mut times, errors) = results;
    times.sort();
    println!(
        "{} {:.3} {:.1} {:.2} {:.2} {:.2} {:.2}",
        times.len(),
        elapsed,
        times.len() as f64 / elapsed,
        percentile(&times, 0.50),
        percentile(&times, 0.90),
        percentile(&times, 0.99),
        percentile(&times, 1.0),
    );
    if !errors.is_empty() {
        eprintln!("bench-load: {} messages failed, first: {}", errors.len(), errors[0]);
        std::process::exit(1);
    }
}
