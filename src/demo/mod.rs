//! `shopper-bridge demo`: the simulated Connect API, the bridge on a temporary SQLite file, and a
//! local receiver for each channel, wired together through the admin API exactly as a retailer
//! would, printing what each receiver gets until Ctrl-C.
//!
//! Every channel runs its real protocol over loopback: webhooks are signed and verified, e-mail
//! goes through lettre to an SMTP server ([`mailbox`]) and is parsed from the raw message, Slack
//! messages are posted as JSON to an incoming-webhook stand-in that answers like Slack.

mod email;
pub mod mailbox;
mod slack;
mod webhook;

use anyhow::Context;
use axum::Router;
use rand::distributions::{Alphanumeric, DistString};
use secrecy::SecretString;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, SmtpTls};
use crate::domain::SigningSecret;
use crate::simulator::{Simulator, SimulatorConfig};
use crate::startup::Application;
use mailbox::Mailbox;

const MAIL_FROM: &str = "Store 42 <shopper-chat@store.example>";
const MAIL_TO: &str = "staff@store.example";

/// A channel the demo subscribes a local receiver to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Receiver {
    Webhook,
    Email,
    Slack,
}

impl Receiver {
    /// The console column naming the channel a line comes from.
    fn label(self) -> &'static str {
        match self {
            Self::Webhook => "webhook │",
            Self::Email => "e-mail  │",
            Self::Slack => "slack   │",
        }
    }

    /// Prints `lines` as one block (a single write, so channels never interleave within it).
    fn print(self, lines: &[String]) {
        let label = self.label();
        let block: Vec<String> = lines.iter().map(|line| format!("{label} {line}")).collect();
        println!("{}", block.join("\n"));
    }
}

/// What the demo shows.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Address of the admin API (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The channels to subscribe a receiver to.
    pub channels: Vec<Receiver>,
    /// The e-mail subscriber's digest window in seconds; 0 sends one e-mail per event.
    pub email_digest_seconds: u32,
}

pub async fn run(
    world: SimulatorConfig,
    options: DemoOptions,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let workdir = tempfile::tempdir().context("creating the demo's temporary directory")?;
    // Every part stops with `stop`: on Ctrl-C, or when one of them ends early.
    let stop = cancel.child_token();
    let mut parts = JoinSet::new();

    let simulator = Simulator::build(world.clone(), loopback()).await?;
    let simulator_url = format!("http://{}", simulator.local_addr());
    let simulator = simulator.run_until_stopped(stop.clone());
    parts.spawn(async move { simulator.await.context("the simulator failed") });

    let receivers = Receivers::start(&options.channels, &stop, &mut parts).await?;
    let admin_token = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
    let mut settings = demo_settings(&world, options.listen, &simulator_url, workdir.path())?;
    settings.server.admin_token = Some(SecretString::from(admin_token.clone()));
    if let Some(mailbox) = &receivers.mailbox {
        settings.email.smtp_url = Some(mailbox.url());
        settings.email.tls = Some(SmtpTls::None);
        settings.email.from = Some(MAIL_FROM.to_owned());
    }
    let app = Application::build(settings).await?;
    let admin = Admin {
        http: reqwest::Client::new(),
        url: format!("http://127.0.0.1:{}", app.port()),
        token: admin_token,
    };
    let app = app.run_until_stopped(stop.clone());
    parts.spawn(async move { app.await.context("the bridge failed") });

    receivers
        .subscribe(&admin, options.email_digest_seconds)
        .await?;
    for order_id in &world.orders {
        admin
            .post("/v1/orders", json!({ "order_id": order_id }))
            .await?;
    }

    println!("shopper-bridge demo");
    println!("  simulated Instacart Connect  {simulator_url}");
    println!(
        "  admin API                    {}   (token: {})",
        admin.url, admin.token
    );
    receivers.describe(options.email_digest_seconds);
    println!("  watching orders              {}", world.orders.join(", "));
    println!();
    println!(
        "  try: curl -H 'Authorization: Bearer {}' {}/v1/deliveries",
        admin.token, admin.url
    );
    println!();
    println!("What each receiver gets, as it arrives (Ctrl-C to stop):");

    let ended_early = tokio::select! {
        () = cancel.cancelled() => None,
        Some(ended) = parts.join_next() => Some(ended),
    };
    stop.cancel();
    let mut ended: Vec<_> = ended_early.into_iter().collect();
    while let Some(part) = parts.join_next().await {
        ended.push(part);
    }
    // The first failure, if any, is the demo's.
    ended.into_iter().try_for_each(|part| part?)
}

/// The receivers the demo runs, one per chosen channel.
struct Receivers {
    /// The webhook receiver's URL, and the secret it verifies with (known once subscribed).
    webhook: Option<(String, Arc<OnceLock<SigningSecret>>)>,
    mailbox: Option<Mailbox>,
    slack_url: Option<String>,
}

impl Receivers {
    async fn start(
        channels: &[Receiver],
        stop: &CancellationToken,
        parts: &mut JoinSet<anyhow::Result<()>>,
    ) -> anyhow::Result<Self> {
        let mut receivers = Self {
            webhook: None,
            mailbox: None,
            slack_url: None,
        };
        if channels.contains(&Receiver::Webhook) {
            let secret = Arc::new(OnceLock::new());
            let url = serve(webhook::router(secret.clone()), "/webhook", stop, parts).await?;
            receivers.webhook = Some((url, secret));
        }
        if channels.contains(&Receiver::Email) {
            let mailbox = Mailbox::start()
                .await
                .context("starting the local mailbox")?;
            parts.spawn(email::print_arrivals(mailbox.arrivals(), stop.clone()));
            receivers.mailbox = Some(mailbox);
        }
        if channels.contains(&Receiver::Slack) {
            let path = slack::webhook_path();
            receivers.slack_url = Some(serve(slack::router(&path), &path, stop, parts).await?);
        }
        Ok(receivers)
    }

    /// A subscriber per receiver, created through the admin API.
    async fn subscribe(&self, admin: &Admin, email_digest_seconds: u32) -> anyhow::Result<()> {
        if let Some((url, secret)) = &self.webhook {
            let subscriber = admin
                .subscribe(json!({"kind": "webhook", "url": url, "description": "demo receiver"}))
                .await?;
            let signing_secret = subscriber["secret"]
                .as_str()
                .context("the subscriber response carries its secret")?;
            secret
                .set(SigningSecret::parse("secret", signing_secret)?)
                .expect("set once");
        }
        if self.mailbox.is_some() {
            admin
                .subscribe(json!({
                    "kind": "email",
                    "to": [MAIL_TO],
                    "digest_seconds": (email_digest_seconds > 0).then_some(email_digest_seconds),
                    "description": "demo mailbox",
                }))
                .await?;
        }
        if let Some(url) = &self.slack_url {
            admin
                .subscribe(
                    json!({"kind": "slack", "webhook_url": url, "description": "demo Slack"}),
                )
                .await?;
        }
        Ok(())
    }

    /// The banner's lines about the receivers.
    fn describe(&self, email_digest_seconds: u32) {
        if let Some((url, _)) = &self.webhook {
            println!("  webhook receiver             {url}   (verifies each signature)");
        }
        if let Some(mailbox) = &self.mailbox {
            let grouping = match email_digest_seconds {
                0 => "one e-mail per event".to_owned(),
                seconds => format!("an order's events within {seconds} s as one digest"),
            };
            println!(
                "  SMTP mailbox                 {}   (for {MAIL_TO}: {grouping})",
                mailbox.url()
            );
        }
        if let Some(url) = &self.slack_url {
            println!("  Slack incoming webhook       {url}   (answers as Slack does)");
        }
    }
}

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

/// Serves `router` on a free loopback port until `stop`; returns the URL of `path` on it.
async fn serve(
    router: Router,
    path: &str,
    stop: &CancellationToken,
    parts: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind(loopback()).await?;
    let url = format!("http://{}{path}", listener.local_addr()?);
    let server =
        axum::serve(listener, router).with_graceful_shutdown(stop.clone().cancelled_owned());
    parts.spawn(async move { server.await.context("a local receiver failed") });
    Ok(url)
}

/// The admin API, as a retailer's script would call it.
struct Admin {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Admin {
    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(
            status.is_success(),
            "POST {path} answered {status}: {answer}"
        );
        Ok(answer)
    }

    async fn subscribe(&self, subscriber: Value) -> anyhow::Result<Value> {
        self.post("/v1/subscribers", subscriber).await
    }
}

fn demo_settings(
    world: &SimulatorConfig,
    listen: SocketAddr,
    simulator_url: &str,
    workdir: &std::path::Path,
) -> anyhow::Result<Settings> {
    let mut settings = Settings::default();
    settings.server.listen = listen;
    settings.store.url = format!("sqlite://{}", workdir.join("demo.db").display());
    settings.instacart.base_url = simulator_url.parse()?;
    settings.instacart.client_id = Some(world.client_id.clone());
    settings.instacart.client_secret = Some(SecretString::from(world.client_secret.clone()));
    settings.poller.interval = Duration::from_secs(1);
    // The receivers are on loopback; a real deployment keeps this off.
    settings.delivery.allow_private_targets = true;
    Ok(settings)
}
