//! The monitoring files in `deploy/monitoring/` against Debian's real
//! Prometheus (`apt-get install prometheus`; scripts/test installs it):
//! promtool checks the alert rules and runs their unit tests; then a
//! Prometheus started here scrapes three relays every second and
//! evaluates `alerts.yaml`, and every query of the Grafana dashboard must
//! answer with data.
//!
//! The relays, each in a state an operator must hear about, or not:
//! - busy: delivers mail, defers one, has one recipient rejected for
//!   good, takes mail from an authenticated `[[clients]]` entry and
//!   refuses it a sender, and has an upstream whose fake refuses its SMTP
//!   Token (paused), holding a message that waits since two hours ago;
//! - stuck: its upstream is down, so its one message waits and nothing
//!   is delivered;
//! - gone: scraped, then stopped.
//!
//! Prometheus listens on a free loopback port with its data in a temp
//! dir; any `prometheus` service the package installed is not involved.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use relay_queue::{Content, NewMessage, Queue, RetryPolicy, SqliteQueue};
use serde_json::Value;

use crate::admin::{admin_addr, get, with_admin};
use crate::app_credentials::hash;
use crate::harness::*;
use crate::runtime_contract::workspace;

const ACCESS: &str = "receipts-access";
const BILLING_PW: &str = "billing monitoring pw";
/// How long a relay may take to reach the state the alerts are checked
/// in, and Prometheus to scrape and evaluate it (every second).
const SETTLE: Duration = Duration::from_secs(60);

fn monitoring_dir() -> PathBuf {
    workspace().join("deploy/monitoring")
}

/// A program of Prometheus's (from `PATH`, else `/usr/bin`, where
/// Debian's `prometheus` package puts it); panics, never skips, when it
/// is missing.
fn prometheus_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: the monitoring tests need Prometheus \
                 (apt-get install --no-install-recommends prometheus; scripts/test installs it)"
            )
        })
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn promtool_checks_the_alert_rules_and_passes_their_unit_tests() {
    let promtool = prometheus_tool("promtool");
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(monitoring_dir())
            .output()
            .unwrap();
        assert!(out.status.success(), "promtool {args:?}: {}", text(&out));
    }
    // Every alert is in the reference's table.
    let reference = std::fs::read_to_string(workspace().join("docs/REFERENCE.md")).unwrap();
    let rules = std::fs::read_to_string(monitoring_dir().join("alerts.yaml")).unwrap();
    for name in alert_names(&rules) {
        assert!(
            reference.contains(&format!("| `{name}` |")),
            "alert {name} is not in docs/REFERENCE.md's Monitoring table"
        );
    }
}

/// The `- alert: NAME` names of a rule file.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("- alert:"))
        .map(|name| name.trim().to_string())
        .collect()
}

/// A Prometheus process with its own config, data folder and port.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (job `postmark-relay`) and
    /// evaluating `rules` every second; waits until it is ready.
    fn start(targets: &[SocketAddr], rules: &Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: postmark-relay\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", "),
            rules = rules.display().to_string(),
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_tool("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut prometheus = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = prometheus.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            if http_get(addr, "/-/ready").is_some_and(|(status, _)| status == 200) {
                return prometheus;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 30 s:\n{}",
                prometheus.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/PATH`'s `data`; panics unless the API says success.
    fn api(&self, path: &str) -> Value {
        let (status, body) = http_get(self.addr, &format!("/api/v1/{path}"))
            .unwrap_or_else(|| panic!("no answer to /api/v1/{path}:\n{}", self.log()));
        let answer: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/api/v1/{path}: {status} {e}: {body}"));
        assert_eq!(answer["status"], "success", "/api/v1/{path}: {body}");
        answer["data"].clone()
    }

    /// An instant query's result (a vector's samples).
    fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api(&format!("query?query={}", url_encode(promql)));
        data["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 GET (so the answer is neither chunked nor kept alive);
/// `None` if nothing answered.
fn http_get(addr: SocketAddr, target: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Puts a message for upstream `receipts` into the queue in `folder` as
/// the relay would have stored it two hours ago.
fn enqueue_two_hours_ago(folder: &Path) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The relay's defaults (docs/REFERENCE.md, [retry]).
        let policy = RetryPolicy {
            initial_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(15 * 60),
            multiplier: 2.0,
            give_up_after: Duration::from_secs(72 * 3600),
            keep_history: true,
        };
        let queue = SqliteQueue::open(folder, policy).unwrap();
        let mut content = b"X-PM-Message-Stream: receipts\r\n".to_vec();
        content.extend_from_slice(&message("waiting since two hours"));
        queue
            .enqueue(NewMessage {
                id: "00000000000001D1".into(),
                received_at: SystemTime::now() - Duration::from_secs(2 * 3600),
                sender: "app@example.com".into(),
                recipients: vec!["u@example.net".into()],
                upstream: "receipts".into(),
                stream: Some("receipts".into()),
                size: content.len() as u64,
                client: None,
                content: Content::whole(content),
            })
            .await
            .unwrap();
    });
}

/// The busy relay's extra config: upstream `receipts` on `t` with an SMTP
/// Token whose Secret Key `t` refuses, and client `billing`.
fn busy_extra(t: &FakePostmark) -> String {
    format!(
        "##\n[upstreams.receipts]\nhost = \"localhost\"\nport = {port}\nca_file = \"{ca}\"\n\
         streams = [\"receipts\"]\nsmtp_access_key = \"{ACCESS}\"\nsmtp_secret_key = \"a-wrong-secret\"\n\n\
         [[clients]]\nname = \"billing\"\npassword_hash = \"{hash}\"\nsenders = [\"*@billing.example.com\"]\n",
        port = t.port(),
        ca = t.ca_file().display(),
        hash = hash(BILLING_PW),
    )
}

/// One message from `billing` (AUTH PLAIN on loopback, no TLS needed)
/// and one sender it may not use; returns the two final replies.
fn send_as_billing(addr: SocketAddr) -> (String, String) {
    let (mut c, _) = Client::connect(addr);
    assert!(c.cmd("EHLO billing.client").starts_with("250"));
    let plain = base64(format!("\0billing\0{BILLING_PW}").as_bytes());
    let auth = c.cmd(&format!("AUTH PLAIN {plain}"));
    assert!(auth.starts_with("235"), "{auth}");
    let refused = c.cmd("MAIL FROM:<app@example.com>");
    assert!(
        c.cmd("MAIL FROM:<app@billing.example.com>")
            .starts_with("250"),
        "billing's own sender"
    );
    assert!(c.cmd("RCPT TO:<u@example.net>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send_raw(
        b"From: Billing <app@billing.example.com>\r\nTo: u@example.net\r\n\
          Subject: from billing\r\n\r\nan invoice\r\n",
    );
    c.send_raw(b".\r\n");
    let queued = c.read_reply();
    c.cmd("QUIT");
    (queued, refused)
}

/// `alertname instance [upstream reason]` of every pending or firing
/// alert.
fn active_alerts(prometheus: &Prometheus) -> BTreeSet<String> {
    let data = prometheus.api("alerts");
    let alerts = data["alerts"].as_array().cloned().unwrap_or_default();
    alerts
        .iter()
        .filter(|a| a["state"] == "pending" || a["state"] == "firing")
        .map(|a| {
            let labels = &a["labels"];
            ["alertname", "instance", "upstream", "reason"]
                .iter()
                .filter_map(|k| labels[*k].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Every `expr` of the dashboard's panels (rows included), with its
/// panel title.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, found: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    found.push((title.clone(), expr.to_string()));
                }
            }
            walk(&panel["panels"], found);
        }
    }
    let mut found = Vec::new();
    walk(&dashboard["panels"], &mut found);
    found
}

/// Every `datasource` object anywhere in the dashboard.
fn datasources(value: &Value, found: &mut Vec<Value>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "datasource" && v.is_object() {
                    found.push(v.clone());
                }
                datasources(v, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| datasources(v, found)),
        _ => {}
    }
}

/// What Grafana puts in place of the dashboard's variables: "All" for
/// the job and instance pickers, and windows long enough to span this
/// whole test (its counters only start when it does).
fn grafana_substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "5m")
        .replace("$__range", "5m")
        .replace("$job", ".+")
        .replace("$instance", ".+")
}

#[test]
fn prometheus_raises_the_alerts_the_relays_states_call_for_and_answers_every_dashboard_query() {
    let began = Instant::now();
    let rules = monitoring_dir().join("alerts.yaml");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring_dir().join("grafana-dashboard.json")).unwrap(),
    )
    .expect("grafana-dashboard.json is JSON");

    // busy: the transactional fake takes the Server API Token and one SMTP
    // Token, whose Secret Key the relay gets wrong for `receipts`.
    let t = FakePostmark::start(FakeOptions {
        server_token: TOKEN.into(),
        smtp_tokens: vec![(ACCESS.into(), "the-right-secret".into())],
        ..FakeOptions::default()
    });
    let b = fake();
    let busy_dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    enqueue_two_hours_ago(&busy_dir.path().join("queue"));
    let mut busy = Relay::start(Start {
        config: with_admin(config_for(&t, &b, &busy_extra(&t))),
        token: Some(TOKEN),
        dir: Some(busy_dir),
    });
    let busy_admin = admin_addr(&mut busy);
    // stuck: its only upstream is down.
    let down = fake();
    down.set_down(true);
    let mut stuck = relay_with(with_admin(config_for(&down, &down, "")));
    let stuck_admin = admin_addr(&mut stuck);
    // gone: scraped, then stopped.
    let mut gone = relay_with(with_admin(config_for(&t, &b, "")));
    let gone_admin = admin_addr(&mut gone);

    let prometheus = Prometheus::start(&[busy_admin, stuck_admin, gone_admin], &rules);
    let deadline = Instant::now() + SETTLE;
    while prometheus.query("up == 1").len() < 3 {
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape all three relays: {:?}\n{}",
            prometheus.query("up"),
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every rule loaded and evaluates without error.
    let rule_count = alert_names(&std::fs::read_to_string(&rules).unwrap()).len();
    let groups = prometheus.api("rules")["groups"].clone();
    let loaded: Vec<Value> = groups
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(loaded.len(), rule_count, "{groups}");
    drop(gone);

    // The busy relay's mail, now that its counters have been scraped at 0.
    t.reject_recipient("nobody@example.net", (550, "5.1.1 Mailbox does not exist"));
    t.fail_next_recipients(1, (451, "4.2.1 Mailbox busy, try later"));
    for (tag, to) in [
        ("deferred once", "u@example.net"),
        ("delivered", "u@example.net"),
        ("rejected", "nobody@example.net"),
    ] {
        let reply = send(busy.addr, "app@example.com", &[to], &message(tag));
        assert!(reply.starts_with("250"), "{tag}: {reply}");
    }
    let (queued, refused) = send_as_billing(busy.addr);
    assert!(queued.starts_with("250"), "{queued}");
    assert!(refused.starts_with("550 5.7.1"), "{refused}");
    t.wait_for(3, SETTLE);
    busy.wait_log("Message deferred.", SETTLE);
    busy.wait_log("Message failed", SETTLE);
    busy.wait_log("same SMTP Token of this stream", SETTLE);
    let reply = send(
        stuck.addr,
        "app@example.com",
        &["u@example.net"],
        &message("stuck"),
    );
    assert!(reply.starts_with("250"), "{reply}");
    stuck.wait_log("Message deferred.", SETTLE);

    // Pending or firing (every `for:` is a minute or more, longer than
    // this test needs). Not expected: NoTargets (three are scraped),
    // NoDeliveries on busy (it relays), and on stuck anything but
    // NoDeliveries (it is ready, and its mail is seconds old).
    let want: BTreeSet<String> = [
        format!("PostmarkRelayDown {gone_admin}"),
        format!("PostmarkRelayNotReady {busy_admin}"),
        format!("PostmarkRelayUpstreamPaused {busy_admin} receipts"),
        format!("PostmarkRelayMailWaitingLong {busy_admin}"),
        format!("PostmarkRelayMessagesFailing {busy_admin} transactional rejected"),
        format!("PostmarkRelayNoDeliveries {stuck_admin}"),
    ]
    .into_iter()
    .collect();
    let deadline = Instant::now() + SETTLE;
    loop {
        let active = active_alerts(&prometheus);
        if active == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {SETTLE:?}, the pending or firing alerts are not the expected ones\n\
             missing: {:#?}\nunexpected: {:#?}\nalerts: {}\nprometheus log:\n{}",
            want.difference(&active).collect::<Vec<_>>(),
            active.difference(&want).collect::<Vec<_>>(),
            prometheus.api("alerts"),
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for rule in prometheus.api("rules")["groups"][0]["rules"]
        .as_array()
        .unwrap()
    {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    // Every metric the rules and the dashboard query is one the relay
    // exports (now that every labelled series has a sample).
    let (_, exposition) = get(busy_admin, "/metrics");
    let mut exprs: Vec<String> = loaded
        .iter()
        .map(|rule| rule["query"].as_str().unwrap().to_string())
        .collect();
    exprs.extend(dashboard_queries(&dashboard).into_iter().map(|(_, e)| e));
    let names: BTreeSet<&str> = exprs
        .iter()
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("postmark_relay_"))
        .collect();
    for name in names {
        assert!(
            exposition
                .lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "{name} is queried in deploy/monitoring but not in the relay's /metrics:\n{exposition}"
        );
    }

    // The dashboard: a data source picked at import, never a fixed uid.
    assert!(
        dashboard["schemaVersion"].as_u64() >= Some(39),
        "schemaVersion"
    );
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["type"] == "datasource"
            && v["query"] == "prometheus"
            && v["name"] == "datasource"),
        "no Prometheus data source variable named datasource"
    );
    let mut sources = Vec::new();
    datasources(&dashboard, &mut sources);
    assert!(!sources.is_empty());
    for source in sources {
        assert_eq!(source["uid"], "${datasource}", "{source}");
    }
    // Each variable's label_values(SELECTOR, LABEL) finds values.
    for variable in variables.iter().filter(|v| v["type"] == "query") {
        let definition = variable["definition"].as_str().unwrap();
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|d| d.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{definition}"));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        let promql = format!(
            "count by ({}) ({})",
            label.trim(),
            grafana_substitute(selector)
        );
        assert!(
            !prometheus.query(&promql).is_empty(),
            "variable {}: {promql} found nothing",
            variable["name"]
        );
    }
    // Every panel's every query answers with numbers.
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 15, "{queries:?}");
    for (title, expr) in queries {
        let promql = grafana_substitute(&expr);
        let result = prometheus.query(&promql);
        assert!(
            !result.is_empty(),
            "panel {title:?}: {promql} returned no data"
        );
        for sample in &result {
            let value: f64 = sample["value"][1].as_str().unwrap().parse().unwrap();
            assert!(
                value.is_finite(),
                "panel {title:?}: {promql} gave {value} for {}",
                sample["metric"]
            );
        }
    }
    println!(
        "monitoring: {} alerts active as expected, every dashboard query answered, in {:.1} s",
        want.len(),
        began.elapsed().as_secs_f64()
    );
}
