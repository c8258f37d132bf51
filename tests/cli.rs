//! The binary's start-up: a bad configuration fails at once, naming the key and the rule; the
//! example file and the README's tables agree with the embedded defaults; and the demo shows each
//! channel.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use figment::error::Kind;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use secrecy::SecretString;
use shopper_bridge::config::{ConfigError, Settings, DEFAULTS};

fn bridge(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shopper-bridge"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .current_dir(dir)
        .output()
        .expect("the binary runs")
}

fn config_file(dir: &Path, toml: &str) -> String {
    let path = dir.join("bridge.toml");
    std::fs::write(&path, toml).unwrap();
    path.display().to_string()
}

const VALID: &str = r#"
[server]
admin_token = "a-long-enough-admin-token"
[instacart]
token = "static-token"
"#;

fn assert_fails_naming(output: &Output, needles: &[&str]) {
    assert!(!output.status.success(), "expected failure");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{needle:?} not in stderr: {stderr}"
        );
    }
}

#[test]
fn a_missing_admin_token_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), "[instacart]\ntoken = \"t\"\n");
    let out = bridge(&["serve", "--config", &path], &[], dir.path());
    assert_fails_naming(&out, &["server.admin_token", "is required"]);
}

#[test]
fn a_rule_violation_in_the_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), &format!("{VALID}[poller]\nconcurrency = 0\n"));
    let out = bridge(&["serve", "--config", &path], &[], dir.path());
    assert_fails_naming(&out, &["poller.concurrency", "must be at least 1"]);
}

#[test]
fn a_badly_typed_environment_override_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(dir.path(), VALID);
    let out = bridge(
        &["serve", "--config", &path],
        &[("SHOPPER_BRIDGE_POLLER__INTERVAL", "often")],
        dir.path(),
    );
    assert_fails_naming(
        &out,
        &[
            "`poller.interval`",
            "expected a duration",
            "SHOPPER_BRIDGE_POLLER__INTERVAL",
        ],
    );
}

#[test]
fn an_unknown_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(
        dir.path(),
        &format!("{VALID}[poller]\nintervall = \"5s\"\n"),
    );
    let out = bridge(&["serve", "--config", &path], &[], dir.path());
    assert_fails_naming(&out, &["intervall"]);
}

#[test]
fn an_explicit_config_file_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let out = bridge(&["serve", "--config", "nowhere.toml"], &[], dir.path());
    assert_fails_naming(&out, &["nowhere.toml", "not found"]);
}

#[test]
fn secrets_given_in_config_never_reach_the_error_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(
        dir.path(),
        "[server]\nadmin_token = \"short-secret\"\n[instacart]\ntoken = \"tok-1234567890\"\n",
    );
    let out = bridge(&["serve", "--config", &path], &[], dir.path());
    assert_fails_naming(&out, &["server.admin_token", "at least 16 characters"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("short-secret") && !stderr.contains("tok-1234567890"));
}

#[test]
fn a_digits_only_secret_from_the_environment_is_a_secret_not_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let out = bridge(
        &["migrate"],
        &[
            ("SHOPPER_BRIDGE_SERVER__ADMIN_TOKEN", "1234567890123456789"),
            // Leading zeros and a dot survive: the value is taken as written.
            ("SHOPPER_BRIDGE_INSTACART__TOKEN", "00123.50"),
            ("SHOPPER_BRIDGE_STORE__URL", "sqlite://bridge.db"),
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_too_short_numeric_secret_is_refused_without_being_shown() {
    let dir = tempfile::tempdir().unwrap();
    let out = bridge(
        &["migrate"],
        &[
            ("SHOPPER_BRIDGE_SERVER__ADMIN_TOKEN", "98765432"),
            ("SHOPPER_BRIDGE_INSTACART__TOKEN", "static-token"),
        ],
        dir.path(),
    );
    assert_fails_naming(&out, &["server.admin_token", "at least 16 characters"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("98765432"));
}

#[test]
fn numeric_secrets_in_the_config_file_are_accepted_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let path = config_file(
        dir.path(),
        "[server]\nadmin_token = 1234567890123456789\n[instacart]\nclient_id = \"c\"\nclient_secret = 424242\n[store]\nurl = \"sqlite://bridge.db\"\n",
    );
    let out = bridge(&["migrate", "--config", &path], &[], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (key, value) in [("admin_token", "3.14159265358979"), ("admin_token", "true")] {
        let path = config_file(
            dir.path(),
            &format!("[server]\n{key} = {value}\n[instacart]\ntoken = \"t\"\n"),
        );
        let out = bridge(&["migrate", "--config", &path], &[], dir.path());
        assert_fails_naming(&out, &["server.admin_token", "must be a string"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(value), "{stderr}");
    }
}

#[test]
fn the_environment_alone_is_enough_to_migrate_a_new_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = bridge(
        &["migrate"],
        &[
            (
                "SHOPPER_BRIDGE_SERVER__ADMIN_TOKEN",
                "a-long-enough-admin-token",
            ),
            ("SHOPPER_BRIDGE_INSTACART__TOKEN", "static-token"),
            ("SHOPPER_BRIDGE_STORE__URL", "sqlite://bridge.db"),
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("bridge.db").exists());
    // A store URL may carry credentials (a future PostgreSQL one would): it is never printed.
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(stdout.trim(), "migrations applied");
    assert!(!stderr.contains("sqlite://"), "{stderr}");
}

const ADMIN_TOKEN: &str = "a-long-enough-admin-token";
const CONNECT_TOKEN: &str = "static-token";

fn repo_file(name: &str) -> String {
    format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Every key the figment sets, dotted (`poller.interval`), with its value.
fn keys_set(figment: &Figment) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, dict: &Dict, keys: &mut BTreeMap<String, Value>) {
        for (name, value) in dict {
            let key = match prefix {
                "" => name.clone(),
                _ => format!("{prefix}.{name}"),
            };
            match value {
                Value::Dict(_, inner) => walk(&key, inner, keys),
                _ => {
                    keys.insert(key, value.clone());
                }
            }
        }
    }
    let mut keys = BTreeMap::new();
    walk("", &figment.extract::<Dict>().unwrap(), &mut keys);
    keys
}

#[test]
fn the_example_file_sets_every_default_and_nothing_else() {
    let example = Figment::from(Toml::file_exact(repo_file("shopper-bridge.example.toml")));
    let defaults = Figment::from(Toml::string(DEFAULTS));
    assert_eq!(
        keys_set(&example).keys().collect::<Vec<_>>(),
        keys_set(&defaults).keys().collect::<Vec<_>>(),
        "the example file should set exactly the keys that have a default"
    );

    // The keys without a default that make settings valid, the same on both sides.
    let from_example = Settings::from_figment(
        example
            .merge(Serialized::default("server.admin_token", ADMIN_TOKEN))
            .merge(Serialized::default("instacart.token", CONNECT_TOKEN)),
    )
    .unwrap();
    let mut from_defaults = Settings::default();
    from_defaults.server.admin_token = Some(SecretString::from(ADMIN_TOKEN));
    from_defaults.instacart.token = Some(SecretString::from(CONNECT_TOKEN));
    // Settings have no PartialEq (secrets do not compare); their Debug shows every value but the
    // secrets, which are the same here.
    let (from_example, from_defaults) =
        (format!("{from_example:#?}"), format!("{from_defaults:#?}"));
    assert!(
        from_example == from_defaults,
        "from the example file: {from_example}\nfrom the defaults: {from_defaults}"
    );
}

/// Each key of the README's `| key | default | meaning |` tables with its default cell (a row
/// may name two keys that share one).
fn readme_keys() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in readme.lines() {
        if line == "| key | default | meaning |" {
            in_table = true;
        } else if !line.starts_with('|') {
            in_table = false;
        } else if in_table && line.starts_with("| `") {
            let cells: Vec<&str> = line.splitn(4, '|').map(str::trim).collect();
            for key in cells[1].split('`').skip(1).step_by(2) {
                rows.push((key.to_owned(), cells[2].to_owned()));
            }
        }
    }
    rows
}

/// Whether the settings know `key`: they refuse unknown keys, whatever the value.
fn is_a_setting(key: &str) -> bool {
    match Settings::from_figment(Figment::from(Serialized::default(key, "probe"))) {
        Err(ConfigError::Parse(error)) => !(*error)
            .into_iter()
            .any(|e| matches!(e.kind, Kind::UnknownField(..))),
        _ => true,
    }
}

/// A default as the README writes it: `5s`, `16`, `1` (for 1.0), a list as `5s, 5m`.
fn as_written(value: &Value) -> String {
    match value {
        Value::String(_, text) => text.clone(),
        Value::Bool(_, flag) => flag.to_string(),
        Value::Num(_, number) => match number.to_f64() {
            Some(float) => float.to_string(),
            None => number
                .to_i128()
                .expect("TOML integers are signed")
                .to_string(),
        },
        Value::Array(_, items) => items.iter().map(as_written).collect::<Vec<_>>().join(", "),
        other => panic!("no README form for {other:?}"),
    }
}

#[test]
fn the_readme_tables_name_real_keys_with_the_embedded_defaults() {
    assert!(
        !is_a_setting("server.no_such_key"),
        "the probe finds nothing"
    );
    let rows = readme_keys();
    for key in ["server.listen", "slack.signing_secret", "email.timeout"] {
        assert!(
            rows.iter().any(|(k, _)| k == key),
            "{key} not found in the README tables"
        );
    }
    let defaults = keys_set(&Figment::from(Toml::string(DEFAULTS)));
    for (key, cell) in &rows {
        assert!(
            is_a_setting(key),
            "the README names `{key}`, which is no setting"
        );
        // A default in backticks is a value; `(required)`, `(built-in)` or nothing mean none.
        let written = cell
            .strip_prefix('`')
            .and_then(|c| c.strip_suffix('`'))
            .filter(|c| !c.contains('`'));
        match (written, defaults.get(key)) {
            (Some(written), Some(value)) => {
                assert_eq!(written, as_written(value), "README default of `{key}`")
            }
            (None, None) => {}
            (written, value) => {
                panic!("`{key}`: the README says {written:?}, the defaults {value:?}")
            }
        }
    }
    for key in defaults.keys() {
        assert!(
            rows.iter().any(|(k, _)| k == key),
            "`{key}` is missing from the README tables"
        );
    }
}

/// What the demo must have printed, per channel: a line starting with the first text and
/// containing the second.
const DEMO_SHOWS: [(&str, &str); 9] = [
    ("webhook │ ✓ chat_message.created", "signature verified"),
    (
        "webhook │ ✓ lifecycle_message.created",
        "signature verified",
    ),
    ("e-mail  │ ✉ ", "Order "),
    (
        "e-mail  │     From: Store 42 <shopper-chat@store.example>",
        "To: staff@store.example",
    ),
    ("e-mail  │     Message-ID: <", "@shopper-bridge>"),
    // A later e-mail about an order threads under its first one.
    ("e-mail  │     Message-ID: <", "In-Reply-To: <"),
    (
        "e-mail  │     multipart/alternative",
        "text/plain + text/html",
    ),
    ("slack   │ ✓ ", "text: "),
    ("slack   │     [section] ", "wrote:"),
];

#[test]
fn the_demo_shows_what_each_channel_receives_and_stops_on_ctrl_c() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_shopper-bridge"))
        .args(["demo", "--message-interval", "200ms", "--email-digest", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the demo starts");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = demo.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen: Vec<String> = Vec::new();
    let shown = |seen: &[String], (start, needle): (&str, &str)| {
        seen.iter()
            .any(|l| l.starts_with(start) && l.contains(needle))
    };
    while !DEMO_SHOWS.iter().all(|&wanted| shown(&seen, wanted)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = demo.kill();
                let missing: Vec<_> = DEMO_SHOWS
                    .iter()
                    .filter(|&&wanted| !shown(&seen, wanted))
                    .collect();
                panic!("within 60 s, nothing like {missing:?}; printed: {seen:#?}");
            }
        }
    }
    assert!(!seen.iter().any(|l| l.contains('✗')), "{seen:#?}");

    let interrupted = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(interrupted.success());
    let status = demo.wait().expect("the demo exits");
    assert!(status.success(), "the demo exited with {status}");
}
