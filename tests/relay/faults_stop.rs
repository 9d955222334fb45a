//! Graceful stop under load: SIGTERM while a client is still uploading a
//! large message, and while deliveries wait on a slow upstream. The upload
//! ends with `250` (stored) or `421` (not stored), never a `250` without a
//! commit; the exit status is 0; nothing is lost or repeated after restart.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// The ~5 MB message the slow client uploads.
fn large_message(tag: &str) -> Vec<u8> {
    let mut m = message(tag);
    let mut i = 0;
    while m.len() < 5 * 1024 * 1024 {
        m.extend_from_slice(format!("{tag} {i:08} {}\r\n", "y".repeat(100)).as_bytes());
        i += 1;
    }
    m
}

fn read_reply(reader: &mut BufReader<TcpStream>) -> String {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return reply;
        }
        reply.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return reply;
        }
    }
}

#[test]
fn sigterm_during_a_slow_5_mb_upload_ends_in_250_or_421_and_loses_nothing() {
    let (t, b) = (fake(), fake());
    let config = config_for(&t, &b, "");
    let relay = relay_with(config.clone());
    let body = large_message("big-upload");
    let (started, upload_started) = mpsc::channel();
    let addr = relay.addr;
    let upload = {
        let body = body.clone();
        std::thread::spawn(move || {
            let stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut w = stream;
            assert!(read_reply(&mut reader).starts_with("220"));
            for (line, want) in [
                ("EHLO slow.client", "250"),
                ("MAIL FROM:<app@example.com>", "250"),
                ("RCPT TO:<u@example.net>", "250"),
                ("DATA", "354"),
            ] {
                w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
                let reply = read_reply(&mut reader);
                assert!(reply.starts_with(want), "{line}: {reply}");
            }
            // 50 chunks, 40 ms apart: about two seconds of upload.
            for (i, chunk) in body.chunks(body.len().div_ceil(50)).enumerate() {
                if w.write_all(chunk).is_err() {
                    return String::new();
                }
                if i == 10 {
                    let _ = started.send(());
                }
                std::thread::sleep(Duration::from_millis(40));
            }
            if w.write_all(b".\r\n").is_err() {
                return String::new();
            }
            read_reply(&mut reader)
        })
    };
    upload_started
        .recv_timeout(Duration::from_secs(30))
        .expect("upload under way");
    let dir = relay.dir.clone();
    let stopping = Instant::now();
    let status = relay.terminate();
    let stop_took = stopping.elapsed();
    let reply = upload.join().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(
        reply.starts_with("250") || reply.starts_with("421"),
        "the upload must end in 250 or 421, got {reply:?}"
    );

    let relay = Relay::start(Start {
        config,
        token: Some(TOKEN),
        dir: Some(dir),
    });
    let got = settle(&relay, &t, Duration::from_secs(30));
    if reply.starts_with("250") {
        assert_each_once(&got, &["big-upload".to_string()]);
        assert!(strip_added_headers(&got[0].data) == body.as_slice());
    } else {
        assert!(got.is_empty(), "421 but delivered");
    }
    println!(
        "stop during upload: reply {:?}, exit {status}, stop took {:.1} s, delivered {}",
        reply.trim(),
        stop_took.as_secs_f64(),
        got.len()
    );
}

#[test]
fn sigterm_while_deliveries_wait_on_a_slow_upstream_exits_0_and_delivers_each_once() {
    let (t, b) = (fake(), fake());
    t.set_data_reply_delay(Some(Duration::from_secs(2)));
    let config = config_for(&t, &b, "");
    let mut relay = relay_with(config.clone());
    let subjects: Vec<String> = (0..6).map(|i| format!("slow-up-{i}")).collect();
    send_concurrently(relay.addr, &subjects, 2);
    relay.wait_log("Connected and authenticated.", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    let dir = relay.dir.clone();
    let stopping = Instant::now();
    let status = relay.terminate();
    let stop_took = stopping.elapsed();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let before_restart = t.messages().len();

    t.set_data_reply_delay(None);
    let relay = Relay::start(Start {
        config,
        token: Some(TOKEN),
        dir: Some(dir),
    });
    let got = settle(&relay, &t, Duration::from_secs(30));
    assert_each_once(&got, &subjects);
    println!(
        "stop during slow deliveries: exit {status}, stop took {:.1} s, {before_restart} delivered before the stop, {} after restart, duplicates 0",
        stop_took.as_secs_f64(),
        got.len() - before_restart
    );
}
