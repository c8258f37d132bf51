//! The `shopper-bridge` binary: parses the command line and hands over to the library.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use shopper_bridge::bench::{self, defaults, BenchOptions, Scenario};
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
    /// Simulator, bridge and a signature-verifying receiver: prints each event as it arrives.
    Demo {
        /// Address of the admin API (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[command(flatten)]
        world: SimulatedWorld,
    },
    /// Measures this build: runs the simulator, a verifying receiver and the bridge as a child
    /// process, and prints deliveries/s against the machine's own limit, latency, polls/s,
    /// memory and CPU.
    Bench(BenchArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BenchScenario {
    /// N orders each get M messages at once: deliveries per second.
    Burst,
    /// W orders polled every I seconds with R new messages per second: polls/s, lag, latency.
    Steady,
}

#[derive(clap::Args)]
struct BenchArgs {
    #[arg(value_enum)]
    scenario: BenchScenario,
    /// Watched orders [default: burst 2000, steady 10000].
    #[arg(long)]
    orders: Option<usize>,
    /// Burst: new chat messages per order.
    #[arg(long, default_value_t = defaults::BURST_MESSAGES)]
    messages: usize,
    /// Webhook subscribers; each receives every event.
    #[arg(long, default_value_t = defaults::SUBSCRIBERS)]
    subscribers: usize,
    /// The bridge's poll interval [default: burst 1s, steady 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    poll_interval: Option<Duration>,
    /// Steady: new messages per second across all orders.
    #[arg(long, default_value_t = defaults::STEADY_RATE)]
    rate: f64,
    /// Steady: how long messages are added [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// The bridge's delivery.concurrency, also used by the raw-limit client [default: the
    /// bridge's default].
    #[arg(long)]
    delivery_concurrency: Option<usize>,
    /// The bridge's poller.concurrency [default: the bridge's default].
    #[arg(long)]
    poll_concurrency: Option<usize>,
    /// Share of deliveries the receiver answers with 503.
    #[arg(long, default_value_t = 0.0)]
    receiver_fail_rate: f64,
    /// Share of simulator requests answered 503 during the scenario (the failure run:
    /// 0.05).
    #[arg(long, default_value_t = 0.0)]
    fault_5xx: f64,
    /// Share of simulator requests answered 429 during the scenario (the failure run:
    /// 0.02).
    #[arg(long, default_value_t = 0.0)]
    fault_429: f64,
    /// How long the raw loopback limit is measured [default: 3s].
    #[arg(long, value_parser = humantime::parse_duration)]
    raw_duration: Option<Duration>,
    /// Budget for the whole run; on expiry the report says what was missing [default: 120s].
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// The bridge's store [default: a temporary SQLite file].
    #[arg(long)]
    store_url: Option<String>,
    /// RUST_LOG of the bridge process.
    #[arg(long, default_value = "warn")]
    bridge_log: String,
    /// Print one JSON object on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
}

impl BenchArgs {
    fn into_options(self) -> anyhow::Result<BenchOptions> {
        let scenario = match self.scenario {
            BenchScenario::Burst => Scenario::Burst {
                orders: self.orders.unwrap_or(defaults::BURST_ORDERS),
                messages_per_order: self.messages,
                poll_interval: self.poll_interval.unwrap_or(defaults::BURST_POLL_INTERVAL),
            },
            BenchScenario::Steady => Scenario::Steady {
                orders: self.orders.unwrap_or(defaults::STEADY_ORDERS),
                poll_interval: self.poll_interval.unwrap_or(defaults::STEADY_POLL_INTERVAL),
                messages_per_second: self.rate,
                duration: self.duration.unwrap_or(defaults::STEADY_DURATION),
            },
        };
        let mut options = BenchOptions::new(scenario, std::env::current_exe()?);
        options.subscribers = self.subscribers;
        if let Some(concurrency) = self.delivery_concurrency {
            options.delivery_concurrency = concurrency;
        }
        options.poll_concurrency = self.poll_concurrency;
        options.receiver_fail_rate = self.receiver_fail_rate;
        options.simulator_faults = Faults {
            rate_5xx: self.fault_5xx,
            rate_429: self.fault_429,
            ..Faults::default()
        };
        options.raw_duration = self.raw_duration.unwrap_or(options.raw_duration);
        options.timeout = self.timeout.unwrap_or(options.timeout);
        options.store_url = self.store_url;
        options.bridge_log = self.bridge_log;
        Ok(options)
    }
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
        Command::Demo { .. } | Command::Bench(_) => "warn",
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
        Command::Demo { listen, world } => {
            demo::run(world.into_config(), listen, shutdown_signal()).await?;
        }
        Command::Bench(args) => {
            let json = args.json;
            let report = bench::run(args.into_options()?).await?;
            if json {
                eprint!("{report}");
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{report}");
            }
            if !report.passed() {
                anyhow::bail!(
                    "the bench did not complete: {} lost, {} bad signatures{}",
                    report.lost,
                    report.bad_signatures,
                    if report.timed_out { ", timed out" } else { "" }
                );
            }
        }
    }
    Ok(())
}
