//! `bench-proc`: CPU time and memory of a process tree, from /proc.
//!
//! `bench-proc snap ROOT` prints `cpu_s rss_kb hwm_kb procs` where
//!   cpu_s  = utime+stime of ROOT and every live descendant, plus ROOT's
//!            cutime+cstime (the CPU of children it already reaped — Postfix's
//!            master reaps smtpd/cleanup/smtp processes that exit);
//!   rss_kb = sum of VmRSS over the tree (shared pages counted once per process);
//!   hwm_kb = sum of VmHWM over the tree (each process's own peak).
//! `bench-proc peak ROOT FILE [INTERVAL_MS]` samples the tree's summed VmRSS
//! and summed Pss every INTERVAL_MS (default 100) and keeps the largest of
//! each seen in FILE (`rss_kb pss_kb`), until ROOT exits or the sampler is
//! killed.
//! `bench-proc ports N` prints N free loopback TCP ports in 20000-31999
//! (bound at once, then released, so they differ).

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

/// Clock ticks per second for /proc/PID/stat times (USER_HZ; 100 on Linux).
const TICKS: f64 = 100.0;

struct Stat {
    ppid: u32,
    ticks: u64,
    child_ticks: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; fields resume after its ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid=4, utime=14, stime=15, cutime=16, cstime=17.
    let n = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        ppid: n(4)? as u32,
        ticks: n(14)? + n(15)?,
        child_ticks: n(16)? + n(17)?,
    })
}

fn status_kb(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Proportional set size: shared pages divided among the processes sharing
/// them, so a sum over processes counts each page once.
fn pss_kb(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// ROOT and its live descendants.
fn tree(root: u32) -> Vec<(u32, Stat)> {
    let mut all: HashMap<u32, Stat> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if let Some(s) = stat(pid) {
                    all.insert(pid, s);
                }
            }
        }
    }
    let mut members = vec![root];
    let mut i = 0;
    while i < members.len() {
        let parent = members[i];
        members.extend(all.iter().filter(|(_, s)| s.ppid == parent).map(|(p, _)| *p));
        i += 1;
    }
    members
        .into_iter()
        .filter_map(|p| all.remove(&p).map(|s| (p, s)))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("ports") {
        let n: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(1);
        // Below Linux's ephemeral range (32768-60999), so that the many
        // client connections of a run, or other programs binding port 0,
        // do not take a port between our pick and the server's bind.
        let mut seed = std::process::id() as u64 ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut held = Vec::new();
        while held.len() < n {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let port = 20000 + (seed >> 33) as u16 % 12000;
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                held.push(l);
            }
        }
        let ports: Vec<String> = held
            .iter()
            .map(|l| l.local_addr().expect("local address").port().to_string())
            .collect();
        println!("{}", ports.join(" "));
        return;
    }
    let root: u32 = args.get(2).and_then(|p| p.parse().ok()).unwrap_or_else(|| {
        eprintln!("usage: bench-proc snap ROOT | bench-proc peak ROOT FILE [INTERVAL_MS]");
        std::process::exit(64)
    });
    match args[1].as_str() {
        "snap" => {
            let members = tree(root);
            let mut ticks = 0;
            let (mut rss, mut hwm) = (0, 0);
            for (pid, s) in &members {
                ticks += s.ticks;
                if *pid == root {
                    ticks += s.child_ticks;
                }
                rss += status_kb(*pid, "VmRSS:");
                hwm += status_kb(*pid, "VmHWM:");
            }
            println!("{:.2} {rss} {hwm} {}", ticks as f64 / TICKS, members.len());
        }
        "peak" => {
            let file = args.get(3).expect("FILE");
            let every = Duration::from_millis(args.get(4).and_then(|v| v.parse().ok()).unwrap_or(100));
            let (mut peak, mut peak_pss) = (0, 0);
            loop {
                let members = tree(root);
                if members.is_empty() {
                    break;
                }
                let rss: u64 = members.iter().map(|(p, _)| status_kb(*p, "VmRSS:")).sum();
                let pss: u64 = members.iter().map(|(p, _)| pss_kb(*p)).sum();
                if rss > peak || pss > peak_pss {
                    peak = peak.max(rss);
                    peak_pss = peak_pss.max(pss);
                    let _ = fs::write(file, format!("{peak} {peak_pss}\n"));
                }
                std::thread::sleep(every);
            }
        }
        other => {
            eprintln!("bench-proc: unknown command {other}");
            std::process::exit(64);
        }
    }
}
