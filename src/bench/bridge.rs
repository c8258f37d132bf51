//! The bridge under test, as a separate `shopper-bridge serve` process with a generated config,
//! so the memory and CPU measured are its own; and the admin calls that set it up.

use futures::stream::{self, StreamExt, TryStreamExt};
use rand::distributions::{Alphanumeric, DistString};
use serde_json::{json, Value};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::procfs::{self, Usage};
use super::BenchError;
use crate::config::ENV_PREFIX;
use crate::domain::SigningSecret;

/// Admin calls in flight at once while registering orders.
const REGISTER_CONCURRENCY: usize = 32;
/// Waits between delivery attempts: short, so a run with a failing receiver still ends soon;
/// long enough, so a delivery refused at random is practically never parked (0.1^11 at a 10%
/// failure rate).
const RETRY_SCHEDULE: &[&str] = &[
    "20ms", "50ms", "100ms", "200ms", "300ms", "500ms", "1s", "1s", "2s", "2s",
];
/// The poller's back-off ceiling in poll intervals: a faulty upstream delays an order by at most
/// this much, so a run with simulator faults still ends in time.
const MAX_BACKOFF_INTERVALS: u32 = 2;
/// How long SIGTERM gets before SIGKILL; the bridge's own shutdown grace is shorter.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// The last bytes of the bridge's log quoted in an error.
const LOG_TAIL_BYTES: usize = 4000;

/// What the generated config says beyond the fixed bench settings.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub binary: PathBuf,
    pub store_url: Option<String>,
    pub instacart_url: String,
    pub instacart_token: String,
    pub poll_interval: Duration,
    pub poll_jitter: f64,
    pub poll_concurrency: Option<usize>,
    pub delivery_concurrency: usize,
    /// `RUST_LOG` of the bridge process.
    pub log_filter: String,
}

/// A running bridge process. Dropping it kills the process.
pub struct Bridge {
    child: Child,
    admin_url: String,
    admin_token: String,
    client: reqwest::Client,
    log_path: PathBuf,
}

impl Bridge {
    /// Writes the config into `workdir`, starts the process and waits until `/healthz` answers.
    pub async fn start(
        config: &BridgeConfig,
        workdir: &Path,
        deadline: Instant,
    ) -> Result<Self, BenchError> {
        let port = free_port()?;
        let admin_token = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
        let store_url = config
            .store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", workdir.join("bridge.db").display()));
        let config_path = workdir.join("bridge.toml");
        std::fs::write(
            &config_path,
            config_toml(config, port, &admin_token, &store_url),
        )?;
        let log_path = workdir.join("bridge.log");
        let log = File::create(&log_path)?;
        let mut command = Command::new(&config.binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", &config.log_filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The generated config is the whole truth: no setting leaks in from the environment.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with(ENV_PREFIX) {
                command.env_remove(name);
            }
        }
        let child = command.spawn().map_err(|source| BenchError::Spawn {
            binary: config.binary.clone(),
            source,
        })?;
        let mut bridge = Self {
            child,
            admin_url: format!("http://127.0.0.1:{port}"),
            admin_token,
            client: reqwest::Client::new(),
            log_path,
        };
        bridge.wait_until_healthy(deadline).await?;
        Ok(bridge)
    }

    async fn wait_until_healthy(&mut self, deadline: Instant) -> Result<(), BenchError> {
        let url = format!("{}/healthz", self.admin_url);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(self.exited(status));
            }
            if let Ok(response) = self.client.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(BenchError::Timeout {
                    phase: "starting the bridge",
                    detail: format!("/healthz never answered 200; log:\n{}", self.log_tail()),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn exited(&self, status: ExitStatus) -> BenchError {
        BenchError::BridgeExited {
            status: status.to_string(),
            log_tail: self.log_tail(),
        }
    }

    /// The end of the bridge's log, for error messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read(&self.log_path).unwrap_or_default();
        let start = log.len().saturating_sub(LOG_TAIL_BYTES);
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error carrying the log's end if the process has exited.
    pub fn ensure_running(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait()? {
            Some(status) => Err(self.exited(status)),
            None => Ok(()),
        }
    }

    /// CPU time and peak memory of the bridge process so far.
    pub fn usage(&mut self) -> Result<Usage, BenchError> {
        self.ensure_running()?;
        Ok(procfs::usage(Some(self.pid()))?)
    }

    /// A webhook subscriber for `url`; returns the secret it signs with.
    pub async fn create_subscriber(&self, url: &str) -> Result<SigningSecret, BenchError> {
        let created: Value = self
            .admin_post("/v1/subscribers", &json!({"kind": "webhook", "url": url}))
            .await?
            .json()
            .await?;
        let secret = created["secret"].as_str().unwrap_or_default();
        Ok(SigningSecret::parse("secret", secret)?)
    }

    /// Starts watching every order, a few admin calls at a time.
    pub async fn watch_orders(&self, order_ids: &[String]) -> Result<(), BenchError> {
        stream::iter(order_ids)
            .map(|order_id| async move {
                self.admin_post("/v1/orders", &json!({ "order_id": order_id }))
                    .await
                    .map(drop)
            })
            .buffer_unordered(REGISTER_CONCURRENCY)
            .try_collect::<()>()
            .await
    }

    async fn admin_post(&self, path: &str, body: &Value) -> Result<reqwest::Response, BenchError> {
        let response = self
            .client
            .post(format!("{}{path}", self.admin_url))
            .bearer_auth(&self.admin_token)
            .json(body)
            .send()
            .await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            let status = response.status().as_u16();
            Err(BenchError::Admin {
                call: format!("POST {path}"),
                status,
                body: response.text().await.unwrap_or_default(),
            })
        }
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after a grace); returns how it ended.
    pub async fn stop(mut self) -> Result<ExitStatus, BenchError> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // std offers only SIGKILL; `kill` sends the SIGTERM a graceful shutdown needs.
        Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()?;
        let until = Instant::now() + STOP_GRACE;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= until {
                self.child.kill()?;
                return Ok(self.child.wait()?);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port free at this moment, for the bridge to bind.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// A TOML basic string; JSON's escapes are valid in one.
fn quoted(value: &str) -> String {
    serde_json::to_string(value).expect("a string always serializes")
}

fn config_toml(config: &BridgeConfig, port: u16, admin_token: &str, store_url: &str) -> String {
    let poll_concurrency = config
        .poll_concurrency
        .map(|c| format!("concurrency = {c}\n"))
        .unwrap_or_default();
    let retry_schedule: Vec<String> = RETRY_SCHEDULE.iter().map(|d| quoted(d)).collect();
    format!(
        "[server]\n\
         listen = \"127.0.0.1:{port}\"\n\
         admin_token = {admin_token}\n\
         \n\
         [store]\n\
         url = {store_url}\n\
         \n\
         [instacart]\n\
         base_url = {instacart_url}\n\
         token = {instacart_token}\n\
         \n\
         [poller]\n\
         interval = {interval}\n\
         jitter = {jitter}\n\
         max_backoff = {max_backoff}\n\
         {poll_concurrency}\
         \n\
         [delivery]\n\
         concurrency = {delivery_concurrency}\n\
         allow_private_targets = true\n\
         retry_schedule = [{retry_schedule}]\n",
        admin_token = quoted(admin_token),
        store_url = quoted(store_url),
        instacart_url = quoted(&config.instacart_url),
        instacart_token = quoted(&config.instacart_token),
        interval = quoted(&humantime::format_duration(config.poll_interval).to_string()),
        max_backoff = quoted(
            &humantime::format_duration(config.poll_interval * MAX_BACKOFF_INTERVALS).to_string()
        ),
        jitter = config.poll_jitter,
        delivery_concurrency = config.delivery_concurrency,
        retry_schedule = retry_schedule.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use figment::providers::{Format, Toml};
    use figment::Figment;
    use secrecy::ExposeSecret;

    #[test]
    fn generated_config_is_valid_and_says_what_the_bench_asked() {
        let config = BridgeConfig {
            binary: PathBuf::from("shopper-bridge"),
            store_url: None,
            instacart_url: "http://127.0.0.1:7070/".to_owned(),
            instacart_token: "tok\"en".to_owned(),
            poll_interval: Duration::from_millis(1500),
            poll_jitter: 0.1,
            poll_concurrency: Some(64),
            delivery_concurrency: 48,
            log_filter: "warn".to_owned(),
        };
        let text = config_toml(&config, 4321, "0123456789abcdef0123", "sqlite:///tmp/b.db");
        let settings = Settings::from_figment(Figment::new().merge(Toml::string(&text))).unwrap();
        assert_eq!(settings.server.listen.port(), 4321);
        assert_eq!(settings.store.url, "sqlite:///tmp/b.db");
        assert_eq!(settings.instacart.token.unwrap().expose_secret(), "tok\"en");
        assert_eq!(settings.poller.interval, Duration::from_millis(1500));
        assert_eq!(settings.poller.max_backoff, Duration::from_millis(3000));
        assert_eq!(settings.poller.concurrency, 64);
        assert_eq!(settings.delivery.concurrency, 48);
        assert!(settings.delivery.allow_private_targets);
        assert_eq!(settings.delivery.retry_schedule.len(), RETRY_SCHEDULE.len());
    }
}
