//! The deployment files under `deploy/` and the `Dockerfile` agree with the
//! binary: every YAML file parses; images, ports, probe paths and the token's
//! name are the real ones; every `POSTMARK_RELAY_*` setting they make loads
//! with `postmark-relay config` (so each is a real key with a valid value);
//! the shared-service files (Kubernetes `relay-service.yaml`,
//! `compose-service.yml`) put every relay on one PostgreSQL queue behind
//! port 25; the systemd unit passes `systemd-analyze verify`; and the Debian
//! package's relay.toml is `config/relay.toml` with only the queue path
//! changed.
//!
//! YAML is read by PyYAML (`python3 -c 'import yaml'`; Debian: python3-yaml)
//! and handed over as JSON, so no YAML crate enters the build.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::runtime_contract::{dockerfile_env, workspace};

/// The relay's ports and probes, as the binary serves them.
const SMTP_PORT: u64 = 25;
const ADMIN_PORT: u64 = 9925;
/// The relay's own grace period after SIGTERM is 30 s.
const MIN_STOP_SECONDS: u64 = 35;

fn deploy() -> PathBuf {
    workspace().join("deploy")
}

/// A python3 that has PyYAML.
fn python_with_yaml() -> &'static str {
    for python in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(python)
            .args(["-c", "import yaml"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return python;
        }
    }
    panic!(
        "these tests read YAML with PyYAML: apt-get install python3-yaml (or pip install PyYAML)"
    );
}

/// Every document in a YAML file, as JSON values.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = Command::new(python_with_yaml())
        .args([
            "-c",
            "import json, sys, yaml\n\
             with open(sys.argv[1]) as f:\n    \
                 json.dump([d for d in yaml.safe_load_all(f) if d is not None], sys.stdout)",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} is not valid YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            found.push(path);
        }
    }
}

/// `postmark-relay config` with exactly `env` (no file, no other
/// `POSTMARK_*` from the test's environment); panics unless it loads.
fn assert_config_loads(what: &str, env: &BTreeMap<String, String>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let file = env
        .get("POSTMARK_RELAY_CONFIG")
        .map_or(empty, std::path::PathBuf::from);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_postmark-relay"));
    cmd.arg("config")
        .arg("-c")
        .arg(&file)
        .env_remove("RUST_LOG");
    for (key, _) in std::env::vars() {
        if key.starts_with("POSTMARK_") {
            cmd.env_remove(key);
        }
    }
    let out = cmd.envs(env).output().unwrap();
    assert!(
        out.status.success(),
        "{what}: `postmark-relay config` refused its settings {env:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every YAML file under deploy/ parses.
#[test]
fn every_yaml_file_parses() {
    let mut files = Vec::new();
    yaml_files(&deploy(), &mut files);
    assert!(files.len() >= 4, "found only {files:?}");
    for file in files {
        assert!(!yaml_docs(&file).is_empty(), "{} is empty", file.display());
    }
}

/// The Dockerfile's ENV loads, and its ports, user, volume and
/// health check match the binary.
#[test]
fn dockerfile_matches_the_binary() {
    let text = std::fs::read_to_string(workspace().join("Dockerfile")).unwrap();
    let env: BTreeMap<String, String> = dockerfile_env().into_iter().collect();
    for key in env.keys() {
        assert!(key.starts_with("POSTMARK_RELAY_"), "unexpected ENV {key}");
    }
    let printed = assert_config_loads("Dockerfile ENV", &env);
    assert!(printed.contains(r#"listen = ["0.0.0.0:25"]"#), "{printed}");
    let queue = &env["POSTMARK_RELAY_QUEUE__PATH"];
    let has = |line: &str| text.lines().any(|l| l.trim() == line);
    assert!(has(&format!("VOLUME {queue}")), "VOLUME is not {queue}");
    assert!(has(&format!("EXPOSE {SMTP_PORT} {ADMIN_PORT}")));
    assert!(has("USER 65532:65532"));
    assert!(has("STOPSIGNAL SIGTERM"));
    assert!(text.contains(r#"CMD ["/usr/local/bin/postmark-relay", "health"]"#));
    assert!(text.contains("cargo build --release --locked -p postmark-relay"));
    // The volume's folder exists in the image and belongs to the user.
    assert!(text.contains(&format!("--chown=65532:65532 /out/spool {queue}")));
}

/// The relay container of a pod spec (in `containers` or `initContainers`).
fn relay_container(pod: &Value) -> (&Value, bool) {
    for (list, init) in [("containers", false), ("initContainers", true)] {
        if let Some(found) = pod[list]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "postmark-relay"))
        {
            return (found, init);
        }
    }
    panic!("no postmark-relay container in {pod}");
}

/// The relay container runs as the image's user, read-only, with no
/// capabilities.
fn check_hardening(file: &str, relay: &Value) {
    let sc = &relay["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{file}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{file}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{file}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{file}"
    );
}

/// The Secret named `name` in secret.example.yaml.
fn example_secret(name: &str) -> Value {
    yaml_docs(&deploy().join("kubernetes/secret.example.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("secret.example.yaml: no Secret {name}"))
}

/// What a mounted Secret's `key` holds: the example Secret's value, with a
/// real hash for each password_hash placeholder; the TLS Secret (made by
/// cert-manager or `kubectl create secret tls`) gets a generated
/// certificate.
fn secret_file(secret: &str, key: &str) -> String {
    if secret == "postmark-relay-tls" {
        // One certificate for both keys: they must fit each other.
        static CERT: std::sync::OnceLock<relay_testkit::ServerCert> = std::sync::OnceLock::new();
        let cert = CERT.get_or_init(|| relay_testkit::ServerCert::generate("deploy files test CA"));
        return match key {
            "tls.crt" => cert.cert_pem.clone(),
            "tls.key" => cert.key_pem.clone(),
            other => panic!("a TLS Secret has no key {other}"),
        };
    }
    let value = example_secret(secret)["stringData"][key]
        .as_str()
        .unwrap_or_else(|| panic!("secret.example.yaml: {secret} has no {key}"))
        .to_owned();
    let placeholder = "PASTE the output of postmark-relay hash-password";
    if value.contains(placeholder) {
        value.replace(placeholder, &crate::app_credentials::hash("example"))
    } else {
        value
    }
}

/// The relay container's settings on top of the image's ENV (the pod
/// overrides it), after checking the token comes from a key of the example
/// Secret.
fn relay_env(file: &str, relay: &Value) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = dockerfile_env().into_iter().collect();
    let mut token_from_secret = false;
    for var in relay["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        if name == "POSTMARK_SERVER_TOKEN" {
            let key = &var["valueFrom"]["secretKeyRef"];
            let secret = example_secret(key["name"].as_str().unwrap());
            let key = key["key"].as_str().unwrap();
            assert!(
                secret["stringData"][key].is_string(),
                "{file}: secret key {key}"
            );
            token_from_secret = true;
        } else {
            assert!(name.starts_with("POSTMARK_RELAY_"), "{file}: env {name}");
            env.insert(name.to_string(), var["value"].as_str().unwrap().to_string());
        }
    }
    assert!(
        token_from_secret,
        "{file}: POSTMARK_SERVER_TOKEN not from the Secret"
    );
    env
}

fn check_deployment(file: &str, native_sidecar: bool) {
    let docs = yaml_docs(&deploy().join("kubernetes").join(file));
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .unwrap_or_else(|| panic!("{file}: no Deployment"));
    let pod = &deployment["spec"]["template"]["spec"];
    assert!(
        pod["terminationGracePeriodSeconds"].as_u64().unwrap() >= MIN_STOP_SECONDS,
        "{file}: terminationGracePeriodSeconds shorter than the relay's drain"
    );
    let (relay, init) = relay_container(pod);
    assert_eq!(init, native_sidecar, "{file}: where the relay runs");
    if native_sidecar {
        assert_eq!(relay["restartPolicy"], "Always", "{file}");
        assert_eq!(relay["startupProbe"]["httpGet"]["path"], "/healthz");
        assert!(pod["containers"].as_array().is_some_and(|c| !c.is_empty()));
    } else {
        assert_eq!(pod["containers"].as_array().unwrap().len(), 2, "{file}");
    }
    assert!(
        relay["image"]
            .as_str()
            .unwrap()
            .starts_with("postmark-relay:"),
        "{file}: image"
    );
    let ports: Vec<u64> = relay["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, vec![SMTP_PORT, ADMIN_PORT], "{file}");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(relay[probe]["httpGet"]["path"], path, "{file}: {probe}");
        assert_eq!(
            relay[probe]["httpGet"]["port"], ADMIN_PORT,
            "{file}: {probe}"
        );
    }
    check_hardening(file, relay);
    let effective = relay_env(file, relay);
    assert_config_loads(file, &effective);
    assert_eq!(
        effective["POSTMARK_RELAY_ADMIN__LISTEN"],
        format!("0.0.0.0:{ADMIN_PORT}"),
        "{file}: the kubelet probes the pod IP"
    );

    // The queue path is a mounted volume (the root filesystem is read-only).
    let queue = &effective["POSTMARK_RELAY_QUEUE__PATH"];
    let mount = relay["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == queue.as_str())
        .unwrap_or_else(|| panic!("{file}: nothing mounted at {queue}"));
    assert!(pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == mount["name"]));
}

#[test]
fn kubernetes_sidecar_matches_the_binary() {
    check_deployment("deployment.yaml", false);
}

#[test]
fn kubernetes_native_sidecar_matches_the_binary() {
    check_deployment("deployment-native-sidecar.yaml", true);
}

/// The addresses of a listen setting as the environment gives it: one
/// address or a TOML-style array of them.
fn listen_addresses(value: &str) -> Vec<SocketAddr> {
    value
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|a| a.trim().trim_matches('"').parse().unwrap())
        .collect()
}

/// Whether `selector` (a non-empty `matchLabels`) selects pods with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
}

/// The container port a Service's `targetPort` or a probe's `port` names:
/// a number, or the name of one of the container's ports.
fn container_port(relay: &Value, port: &Value) -> u64 {
    match port {
        Value::String(name) => relay["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no container port named {name}"))["containerPort"]
            .as_u64()
            .unwrap(),
        number => number.as_u64().unwrap(),
    }
}

/// The variables Kubernetes puts into every pod of the namespace for
/// `service` (`<NAME>_SERVICE_HOST`, `<NAME>_PORT_25_TCP`, ...) unless the
/// pod sets `enableServiceLinks: false`.
fn service_links(service: &Value) -> BTreeMap<String, String> {
    let ip = "10.96.0.25";
    let prefix = service["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_ascii_uppercase()
        .replace('-', "_");
    let mut env = BTreeMap::new();
    env.insert(format!("{prefix}_SERVICE_HOST"), ip.to_string());
    for (i, port) in service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let number = port["port"].as_u64().unwrap();
        let proto = port["protocol"].as_str().unwrap_or("TCP");
        let url = format!("{}://{ip}:{number}", proto.to_ascii_lowercase());
        if i == 0 {
            env.insert(format!("{prefix}_SERVICE_PORT"), number.to_string());
            env.insert(format!("{prefix}_PORT"), url.clone());
        }
        if let Some(name) = port["name"].as_str() {
            let name = name.to_ascii_uppercase().replace('-', "_");
            env.insert(format!("{prefix}_SERVICE_PORT_{name}"), number.to_string());
        }
        let base = format!("{prefix}_PORT_{number}_{proto}");
        env.insert(format!("{base}_PROTO"), proto.to_ascii_lowercase());
        env.insert(format!("{base}_PORT"), number.to_string());
        env.insert(format!("{base}_ADDR"), ip.to_string());
        env.insert(base, url);
    }
    env
}

/// relay-service.yaml: three replicas sharing the PostgreSQL queue behind a
/// Service on port 25, with a disruption budget and a spread over nodes.
#[test]
fn kubernetes_shared_service_matches_the_binary() {
    let file = "relay-service.yaml";
    let docs = yaml_docs(&deploy().join("kubernetes").join(file));
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("{file}: no {kind}"))
    };
    let (deployment, service, pdb) = (
        find("Deployment"),
        find("Service"),
        find("PodDisruptionBudget"),
    );
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap();
    assert_eq!(replicas, 3, "{file}");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert!(
        selects(&deployment["spec"]["selector"]["matchLabels"], labels),
        "{file}: the Deployment's selector"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    let (relay, init) = relay_container(pod);
    assert!(!init, "{file}: the relay is the pod's container");
    assert_eq!(pod["containers"].as_array().unwrap().len(), 1, "{file}");
    assert!(
        relay["image"]
            .as_str()
            .unwrap()
            .starts_with("postmark-relay:"),
        "{file}: image"
    );
    check_hardening(file, relay);
    assert_eq!(relay["resources"]["limits"]["memory"], "64Mi", "{file}");

    // The settings, as the container gets them, load with the URL file in
    // place; every Service's links reach the container unless turned off.
    let mut effective = relay_env(file, relay);
    if pod["enableServiceLinks"] != false {
        for doc in docs.iter().filter(|d| d["kind"] == "Service") {
            effective.extend(service_links(doc));
        }
    }
    assert_eq!(
        effective["POSTMARK_RELAY_QUEUE__BACKEND"], "postgres",
        "{file}"
    );
    assert!(
        !effective.contains_key("POSTMARK_RELAY_QUEUE__URL"),
        "{file}: the url would win over url_file"
    );
    // Every file the settings name is a mounted Secret's key, readable by
    // no one else; with the example Secrets' contents (a generated
    // certificate for the TLS Secret, real hashes for the placeholders) in
    // their place, the settings load.
    let tmp = tempfile::tempdir().unwrap();
    let mut here_env = effective.clone();
    for (var, path) in &effective {
        if !(var.ends_with("_FILE") || var == "POSTMARK_RELAY_CONFIG") {
            continue;
        }
        let (dir, name) = path.rsplit_once('/').unwrap();
        let mount = relay["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{file}: {var}: nothing mounted at {dir}"));
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{file}: no volume {}", mount["name"]));
        let secret_volume = &volume["secret"];
        let key = match secret_volume["items"].as_array() {
            Some(items) => items
                .iter()
                .find(|i| i["path"] == name)
                .unwrap_or_else(|| panic!("{file}: the Secret has no item {name}"))["key"]
                .as_str()
                .unwrap(),
            None => name,
        };
        let mode = secret_volume["defaultMode"].as_u64().unwrap();
        assert_eq!(mode & 0o007, 0, "{file}: {path} is mode {mode:o}");
        let content = secret_file(secret_volume["secretName"].as_str().unwrap(), key);
        let here = tmp.path().join(var);
        std::fs::write(&here, content).unwrap();
        here_env.insert(var.clone(), here.display().to_string());
    }
    assert!(
        here_env["POSTMARK_RELAY_SERVER__REQUIRE_AUTH"] == "true"
            && here_env["POSTMARK_RELAY_SERVER__REQUIRE_TLS"] == "true",
        "{file}: apps authenticate, over TLS"
    );
    let printed = assert_config_loads(file, &here_env);
    assert!(printed.contains(r#"backend = "postgres""#), "{printed}");
    assert!(printed.contains(r#"url = "postgres://"#), "{printed}");
    assert!(printed.contains(r#"name = "newsletter""#), "{printed}");
    assert!(printed.contains(r#"rate = "5000/h""#), "{printed}");

    // No state in the pod: the queue is in PostgreSQL.
    for volume in pod["volumes"].as_array().unwrap() {
        assert!(
            volume["secret"].is_object(),
            "{file}: volume {} is not a Secret",
            volume["name"]
        );
    }

    // The Service's port 25 reaches the relay's SMTP listener, and it
    // offers nothing else (not the admin endpoint).
    let smtp = listen_addresses(&effective["POSTMARK_RELAY_SERVER__LISTEN"]);
    assert!(
        smtp.iter().all(|a| a.ip().is_unspecified()),
        "{file}: other pods reach it on the pod IP"
    );
    assert!(
        selects(&service["spec"]["selector"], labels),
        "{file}: the Service's selector"
    );
    assert!(
        service["spec"]["type"].is_null() || service["spec"]["type"] == "ClusterIP",
        "{file}: the Service stays inside the cluster"
    );
    let ports = service["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{file}: the Service offers SMTP only");
    assert_eq!(ports[0]["port"], SMTP_PORT, "{file}");
    let target = container_port(relay, &ports[0]["targetPort"]);
    assert!(
        smtp.iter().any(|a| u64::from(a.port()) == target),
        "{file}: the Service targets port {target}, the relay listens on {smtp:?}"
    );

    // Probes on the admin endpoint's port, which listens on the pod IP.
    let admin: SocketAddr = effective["POSTMARK_RELAY_ADMIN__LISTEN"].parse().unwrap();
    assert!(
        admin.ip().is_unspecified(),
        "{file}: the kubelet probes the pod IP"
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &relay[probe]["httpGet"];
        assert_eq!(get["path"], path, "{file}: {probe}");
        assert_eq!(
            container_port(relay, &get["port"]),
            u64::from(admin.port()),
            "{file}: {probe}"
        );
    }

    // The grace period covers preStop's wait and the relay's drain.
    let pre_stop = relay["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap_or(0);
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace >= pre_stop + MIN_STOP_SECONDS,
        "{file}: terminationGracePeriodSeconds {grace} < {pre_stop} + {MIN_STOP_SECONDS}"
    );

    // One node lost leaves the others: replicas spread over nodes.
    let spread = pod["topologySpreadConstraints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["topologyKey"] == "kubernetes.io/hostname"
                && c["whenUnsatisfiable"] == "DoNotSchedule"
                && c["maxSkew"] == 1
                && selects(&c["labelSelector"]["matchLabels"], labels)
        });
    assert!(spread, "{file}: no spread of the replicas over nodes");

    // Drains take one replica at a time.
    assert!(
        selects(&pdb["spec"]["selector"]["matchLabels"], labels),
        "{file}: the PodDisruptionBudget's selector"
    );
    let budget = &pdb["spec"];
    let one_at_a_time = budget["maxUnavailable"] == 1
        || budget["minAvailable"]
            .as_u64()
            .is_some_and(|n| n >= 1 && n + 1 == replicas);
    assert!(one_at_a_time, "{file}: PodDisruptionBudget {budget}");
}

#[test]
fn compose_file_matches_the_binary() {
    let compose = &yaml_docs(&deploy().join("docker-compose.yml"))[0];
    let relay = &compose["services"]["relay"];
    assert!(relay["image"]
        .as_str()
        .unwrap()
        .starts_with("postmark-relay:"));
    let build = &relay["build"];
    let context = deploy().join(build["context"].as_str().unwrap());
    assert!(context
        .join(build["dockerfile"].as_str().unwrap())
        .is_file());

    // The env file's example names the token.
    assert_eq!(relay["env_file"], ".env");
    let example = std::fs::read_to_string(deploy().join(".env.example")).unwrap();
    assert!(example
        .lines()
        .any(|l| l.starts_with("POSTMARK_SERVER_TOKEN=")));

    let mut env: BTreeMap<String, String> = dockerfile_env().into_iter().collect();
    for (name, value) in relay["environment"].as_object().unwrap() {
        assert!(name.starts_with("POSTMARK_RELAY_"), "env {name}");
        env.insert(name.clone(), value.as_str().unwrap().to_string());
    }
    assert_config_loads("docker-compose.yml", &env);

    let queue = &env["POSTMARK_RELAY_QUEUE__PATH"];
    let volume = relay["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .find_map(|v| v.strip_suffix(&format!(":{queue}")))
        .unwrap_or_else(|| panic!("no volume at {queue}"));
    assert!(
        compose["volumes"].get(volume).is_some(),
        "{volume} is not a named volume"
    );
    let grace = relay["stop_grace_period"].as_str().unwrap();
    let grace = humantime::parse_duration(grace).unwrap();
    assert!(
        grace.as_secs() >= MIN_STOP_SECONDS,
        "stop_grace_period {grace:?}"
    );
    assert_eq!(
        relay["ports"],
        serde_json::json!([format!("127.0.0.1:{ADMIN_PORT}:{ADMIN_PORT}")]),
        "publish only the admin port, on the host's loopback"
    );
    assert_eq!(
        compose["services"]["app"]["environment"]["SMTP_HOST"],
        "relay"
    );
}

/// `KEY=VALUE` lines of deploy/.env.example.
fn env_example() -> BTreeMap<String, String> {
    std::fs::read_to_string(deploy().join(".env.example"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `text` with compose's `${NAME}`, `${NAME:?message}` and
/// `${NAME:-default}` replaced from `vars` (an unset name panics).
fn interpolate(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').unwrap();
        let expr = &rest[start + 2..end];
        let name = expr.split([':', '?', '-']).next().unwrap();
        let value = vars
            .get(name)
            .unwrap_or_else(|| panic!("${{{name}}} is not in .env.example"));
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// compose-service.yml: PostgreSQL with a health check and a named volume,
/// and two relays sharing it once it is healthy.
#[test]
fn compose_shared_service_matches_the_binary() {
    let file = "compose-service.yml";
    let compose = &yaml_docs(&deploy().join(file))[0];
    let services = &compose["services"];
    let vars = env_example();

    let postgres = &services["postgres"];
    assert_eq!(postgres["image"], "postgres:16", "{file}");
    let test = postgres["healthcheck"]["test"].as_array().unwrap();
    assert!(
        test.iter().any(|t| t == "pg_isready"),
        "{file}: postgres health check {test:?}"
    );
    let data = postgres["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .find_map(|v| v.strip_suffix(":/var/lib/postgresql/data"))
        .unwrap_or_else(|| panic!("{file}: no volume for PostgreSQL's data"));
    assert!(
        compose["volumes"].get(data).is_some(),
        "{file}: {data} is not a named volume"
    );
    let pg_env = |key: &str| interpolate(postgres["environment"][key].as_str().unwrap(), &vars);
    // The password is the one in .env, not written here.
    assert!(
        postgres["environment"]["POSTGRES_PASSWORD"]
            .as_str()
            .unwrap()
            .starts_with("${POSTGRES_PASSWORD"),
        "{file}: the password comes from .env"
    );
    let want_url = format!(
        "postgres://{}:{}@postgres:5432/{}",
        pg_env("POSTGRES_USER"),
        pg_env("POSTGRES_PASSWORD"),
        pg_env("POSTGRES_DB")
    );

    let relays: Vec<&str> = services
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("postmark-relay:"))
        })
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(relays, ["relay-a", "relay-b"], "{file}");
    let mut urls = Vec::new();
    for name in &relays {
        let relay = &services[*name];
        assert_eq!(
            relay["depends_on"]["postgres"]["condition"], "service_healthy",
            "{file}: {name} starts once PostgreSQL is healthy"
        );
        let context = deploy().join(relay["build"]["context"].as_str().unwrap());
        assert!(context
            .join(relay["build"]["dockerfile"].as_str().unwrap())
            .is_file());
        assert_eq!(relay["env_file"], ".env", "{file}: {name}");
        let grace =
            humantime::parse_duration(relay["stop_grace_period"].as_str().unwrap()).unwrap();
        assert!(grace.as_secs() >= MIN_STOP_SECONDS, "{file}: {name}");

        let mut env: BTreeMap<String, String> = dockerfile_env().into_iter().collect();
        for (key, value) in relay["environment"].as_object().unwrap() {
            assert!(key.starts_with("POSTMARK_RELAY_"), "{file}: {name}: {key}");
            env.insert(key.clone(), interpolate(value.as_str().unwrap(), &vars));
        }
        assert_eq!(
            env["POSTMARK_RELAY_QUEUE__BACKEND"], "postgres",
            "{file}: {name}"
        );
        let printed = assert_config_loads(&format!("{file}: {name}"), &env);
        assert!(printed.contains(r#"backend = "postgres""#), "{printed}");
        urls.push(env["POSTMARK_RELAY_QUEUE__URL"].clone());

        // Only the admin endpoint is published, on the host's loopback.
        for port in relay["ports"].as_array().into_iter().flatten() {
            let port = port.as_str().unwrap();
            assert!(
                port.starts_with("127.0.0.1:") && port.ends_with(&format!(":{ADMIN_PORT}")),
                "{file}: {name} publishes {port}"
            );
        }
    }
    assert_eq!(
        urls,
        [want_url.clone(), want_url],
        "{file}: one queue, PostgreSQL's"
    );

    // The app reaches a relay by a name both answer to, once they are up.
    let app = &services["app"];
    let host = app["environment"]["SMTP_HOST"].as_str().unwrap();
    for name in &relays {
        let aliases = &services[*name]["networks"]["default"]["aliases"];
        assert!(
            *name == host
                || aliases
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == host)),
            "{file}: {name} does not answer to {host}"
        );
        assert_eq!(
            app["depends_on"][*name]["condition"], "service_healthy",
            "{file}: app waits for {name}"
        );
    }
}

/// The unit file, its `Environment=` settings, and `systemd-analyze verify`
/// (systemd must be installed; Debian: apt-get install systemd).
#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(deploy().join("systemd/postmark-relay.service")).unwrap();
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(value("ExecStart"), ["/usr/bin/postmark-relay serve"]);
    assert_eq!(value("Type"), ["simple"]);
    assert_eq!(value("ExecReload"), ["/bin/kill -HUP $MAINPID"]);
    assert_eq!(value("StateDirectory"), ["postmark-relay"]);
    assert!(value("TimeoutStopSec")[0].parse::<u64>().unwrap() >= MIN_STOP_SECONDS);

    // Environment= settings are real keys; %S is /var/lib for system units.
    let mut env = BTreeMap::new();
    for setting in value("Environment") {
        let (k, v) = setting.split_once('=').unwrap();
        env.insert(k.to_string(), v.replace("%S", "/var/lib"));
    }
    let printed = assert_config_loads("postmark-relay.service", &env);
    assert!(printed.contains(r#"path = "/var/lib/postmark-relay""#));

    // verify needs ExecStart's binary to exist: point it at the built one.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("postmark-relay.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/bin/postmark-relay",
            env!("CARGO_BIN_EXE_postmark-relay"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap_or_else(|e| panic!("systemd-analyze: {e} (apt-get install systemd)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Unknown keys and bad values are only warnings: none allowed.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warns: {stderr}"
    );
}

/// What `deploy/debian/relay.toml` must be: `config/relay.toml` with a header
/// and the queue in the unit's StateDirectory.
fn debian_relay_toml() -> String {
    let reference = std::fs::read_to_string(workspace().join("config/relay.toml")).unwrap();
    let header = "\
# /etc/postmark-relay/relay.toml, installed by the postmark-relay Debian
# package (a conffile: your edits are kept on upgrade). The same as the
# project's config/relay.toml except for [queue] path. Apply changes with
# `systemctl reload postmark-relay` (listen addresses and the queue path need
# `systemctl restart postmark-relay`). The token can also go in
# /etc/default/postmark-relay as POSTMARK_SERVER_TOKEN=...
#
";
    let queue_old =
        "[queue]\n# Folder of the durable message store (SQLite); created if missing.\n";
    let queue_new =
        "[queue]\n# Folder of the durable message store (SQLite); created if missing.\n\
# The Debian package's systemd unit keeps it in its StateDirectory,\n\
# /var/lib/postmark-relay, and sets POSTMARK_RELAY_QUEUE__PATH to the same.\n";
    let path_old = "path = \"/var/spool/postmark-relay\"\n";
    let path_new = "path = \"/var/lib/postmark-relay\"\n";
    assert!(
        reference.contains(queue_old) && reference.contains(path_old),
        "config/relay.toml's [queue] changed: update debian_relay_toml() in {}",
        file!()
    );
    format!(
        "{header}{}",
        reference
            .replace(queue_old, queue_new)
            .replace(path_old, path_new)
    )
}

/// The packaged config follows config/relay.toml and loads. After editing
/// config/relay.toml, regenerate it with
/// `UPDATE_DEBIAN_CONFIG=1 cargo test -p postmark-relay --test relay deploy_files`.
#[test]
fn debian_config_follows_the_reference() {
    let path = deploy().join("debian/relay.toml");
    let want = debian_relay_toml();
    if std::env::var_os("UPDATE_DEBIAN_CONFIG").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap();
    assert!(
        have == want,
        "deploy/debian/relay.toml differs from config/relay.toml (+ queue path); regenerate: \
         UPDATE_DEBIAN_CONFIG=1 cargo test -p postmark-relay --test relay deploy_files"
    );
    let out = crate::harness::run_cli(&["config"], &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#"path = "/var/lib/postmark-relay""#));
}
