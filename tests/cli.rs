//! The binary's start-up: a bad configuration fails at once, naming the key and the rule; and
//! the demo shows each channel.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
