//! The `shopper-bridge` binary: parses the command line and hands over to the library.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use shopper_bridge::config::Settings;
use shopper_bridge::simulator::{Faults, Simulator, SimulatorConfig};
use shopper_bridge::startup::{shutdown_signal, Application};
use shopper_bridge::telemetry::{self, error_chain};
use shopper_bridge::{demo, store};

const DEFAULT_CONFIG: &str = "shopper-bridge.toml";

#[derive(Parser)]
#[command(name = "shopper-bridge", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge: admin API, poller and dispatcher.
    Serve {
        /// TOML config file; every key can be overridden by SHOPPER_BRIDGE_* variables.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Apply the store's migrations and exit.
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Serve a fake Instacart Connect API.
    Simulate {
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: SocketAddr,
        #[command(flatten)]
        world: SimulatedWorld,
    },
    /// Simulator, bridge and a local receiver per channel: prints what each receives.
    Demo {
        /// Address of the admin API (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Channels to subscribe a receiver to.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "webhook,email,slack"
        )]
        channels: Vec<demo::Receiver>,
        /// The e-mail subscriber's digest window in seconds (0: one e-mail per event).
        #[arg(long, default_value_t = 10)]
        email_digest: u32,
        #[command(flatten)]
        world: SimulatedWorld,
    },
}

/// What the simulated Instacart Connect serves.
#[derive(clap::Args)]
struct SimulatedWorld {
    /// Number of simulated orders (the seed order 122233 is always one).
    #[arg(long, default_value_t = 3)]
    orders: usize,
    /// How often a new chat or lifecycle message appears.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    message_interval: Duration,
    /// Orders' chat expires this long after the simulator starts.
    #[arg(long, value_parser = humantime::parse_duration)]
    expire_after: Option<Duration>,
    /// OAuth client credentials the simulator accepts.
    #[arg(long, default_value = "demo-client")]
    client_id: String,
    #[arg(long, default_value = "demo-secret")]
    client_secret: String,
    /// Share of post-checkout requests answered 429.
    #[arg(long, default_value_t = 0.0)]
    fault_429: f64,
    /// Share of post-checkout requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    fault_5xx: f64,
    /// Share of post-checkout requests answered with a malformed body.
    #[arg(long, default_value_t = 0.0)]
    fault_malformed: f64,
}

impl SimulatedWorld {
    fn into_config(self) -> SimulatorConfig {
        let defaults = SimulatorConfig::default();
        let mut orders = vec!["122233".to_owned()];
        orders.extend((1..self.orders).map(|n| (700_000 + n * 7_919).to_string()));
        SimulatorConfig {
            orders,
            message_interval: Some(self.message_interval),
            expire_after: self.expire_after,
            client_id: self.client_id,
            client_secret: self.client_secret,
            faults: Faults {
                rate_429: self.fault_429,
                rate_5xx: self.fault_5xx,
                rate_malformed: self.fault_malformed,
                ..defaults.faults
            },
            ..defaults
        }
    }
}

fn load_settings(config: Option<PathBuf>) -> anyhow::Result<Settings> {
    let required = config.is_some();
    let path = config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    Ok(Settings::load(&path, required)?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info,sqlx=warn",
    });
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => {
            let app = Application::build(load_settings(config)?).await?;
            tracing::info!(port = app.port(), "shopper-bridge listening");
            app.run_until_stopped(shutdown_signal()).await?;
        }
        Command::Migrate { config } => {
            let settings = load_settings(config)?;
            store::open(&settings.store.url).await?;
            println!("migrations applied to {}", settings.store.url);
        }
        Command::Simulate { listen, world } => {
            let simulator = Simulator::build(world.into_config(), listen).await?;
            println!(
                "simulated Instacart Connect on http://{}",
                simulator.local_addr()
            );
            simulator.run_until_stopped(shutdown_signal()).await?;
        }
        Command::Demo {
            listen,
            channels,
            email_digest,
            world,
        } => {
            let options = demo::DemoOptions {
                listen,
                channels,
                email_digest_seconds: email_digest,
            };
            demo::run(world.into_config(), options, shutdown_signal()).await?;
        }
    }
    Ok(())
}
