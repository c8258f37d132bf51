//! `shopper-bridge bench`: one self-contained measurement of the bridge against this machine's
//! own limit (issue 4).
//!
//! The bench process runs the Connect simulator and a signature-verifying webhook receiver; the
//! bridge under test runs as a separate `shopper-bridge serve` process with a generated config,
//! so the memory and CPU measured are its own. Before the scenario, the bench's own client
//! pushes signed webhooks to the same receiver as fast as it can: the raw limit every figure is
//! compared with. Then, set up through the admin API like any deployment, the bridge polls the
//! simulator and delivers; the receiver notes each `webhook-id` and arrival, the simulator when
//! each message was created and first served.

mod bridge;
mod procfs;
mod raw;
mod receiver;
mod report;
mod stats;
mod tally;

pub use report::{BenchReport, MissingReport, Parameters, TargetCheck};
pub use stats::Percentiles;

use axum::body::Bytes;
use chrono::Utc;
use rand::distributions::{Alphanumeric, DistString};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::DeliverySettings;
use crate::domain::SeenState;
use crate::domain::{EventType, OrderId, ValidationError};
use crate::instacart::models::OrderMessagesResponse;
use crate::poller::differ;
use crate::simulator::{
    Faults, MessageTiming, Simulator, SimulatorConfig, SimulatorConfigError, SimulatorHandle,
    SimulatorStats,
};
use bridge::{Bridge, BridgeConfig};
use procfs::Usage;
use receiver::Receiver;
use tally::Tally;

/// The defaults.
pub mod defaults {
    use std::time::Duration;

    pub const BURST_ORDERS: usize = 2_000;
    pub const BURST_MESSAGES: usize = 10;
    /// Short, so the burst measures delivery more than the wait for the next poll.
    pub const BURST_POLL_INTERVAL: Duration = Duration::from_secs(1);
    pub const STEADY_ORDERS: usize = 10_000;
    pub const STEADY_POLL_INTERVAL: Duration = Duration::from_secs(5);
    pub const STEADY_RATE: f64 = 200.0;
    pub const STEADY_DURATION: Duration = Duration::from_secs(30);
    pub const SUBSCRIBERS: usize = 4;
    pub const RAW_DURATION: Duration = Duration::from_secs(3);
    pub const TIMEOUT: Duration = Duration::from_secs(120);
}

/// What every bench message says: a typical shopper line, so bodies have a realistic size.
pub const MESSAGE_BODY: &str = "They are out of oat milk, which replacement would you like?";
/// Bench orders are numbered from here: eight digits, like real order ids.
const FIRST_ORDER: usize = 10_000_000;
/// The order the sample body for the raw limit is taken from; never watched.
const PROBE_ORDER: usize = 99_999_999;
/// The poll jitter written into the bridge's config (its default), which the lag allows for.
const POLL_JITTER: f64 = 0.1;
/// How often the bench looks at what arrived, and adds steady messages.
const TICK: Duration = Duration::from_millis(5);
/// A steady scenario registers its orders in this many slices, spread over one poll interval.
const REGISTRATION_SLICES: usize = 50;
/// A net under the phases' own deadlines (which report what was missing) in case one hangs.
const HANG_MARGIN: Duration = Duration::from_secs(30);

/// What the bench does to the bridge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scenario {
    /// `orders` orders each get `messages_per_order` chat messages at once after a first poll;
    /// measures how long until every delivery arrived.
    Burst {
        orders: usize,
        messages_per_order: usize,
        poll_interval: Duration,
    },
    /// `orders` orders polled every `poll_interval`, with new messages at `messages_per_second`
    /// across them for `duration`; measures polls per second, scheduler lag and latency.
    Steady {
        orders: usize,
        poll_interval: Duration,
        messages_per_second: f64,
        duration: Duration,
    },
}

impl Scenario {
    /// 2,000 orders × 10 messages, polled every second.
    pub fn burst() -> Self {
        Scenario::Burst {
            orders: defaults::BURST_ORDERS,
            messages_per_order: defaults::BURST_MESSAGES,
            poll_interval: defaults::BURST_POLL_INTERVAL,
        }
    }

    /// 10,000 orders polled every 5 s, 200 new messages per second, for 30 s.
    pub fn steady() -> Self {
        Scenario::Steady {
            orders: defaults::STEADY_ORDERS,
            poll_interval: defaults::STEADY_POLL_INTERVAL,
            messages_per_second: defaults::STEADY_RATE,
            duration: defaults::STEADY_DURATION,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Burst { .. } => "burst",
            Scenario::Steady { .. } => "steady",
        }
    }

    pub fn orders(&self) -> usize {
        match *self {
            Scenario::Burst { orders, .. } | Scenario::Steady { orders, .. } => orders,
        }
    }

    pub fn poll_interval(&self) -> Duration {
        match *self {
            Scenario::Burst { poll_interval, .. } | Scenario::Steady { poll_interval, .. } => {
                poll_interval
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub scenario: Scenario,
    /// Webhook subscribers, each receiving every event.
    pub subscribers: usize,
    /// The bridge's `delivery.concurrency`, and the raw-limit client's.
    pub delivery_concurrency: usize,
    /// The bridge's `poller.concurrency`; its default when `None`.
    pub poll_concurrency: Option<usize>,
    /// Share of deliveries the receiver refuses with 503.
    pub receiver_fail_rate: f64,
    /// Faults the simulator injects during the scenario.
    pub simulator_faults: Faults,
    /// How long the raw limit is measured.
    pub raw_duration: Duration,
    /// The whole run's budget; on expiry the report says what was missing.
    pub timeout: Duration,
    /// The bridge's store; a temporary SQLite file when `None`.
    pub store_url: Option<String>,
    /// The `shopper-bridge` executable run as the bridge under test.
    pub bridge_binary: PathBuf,
    /// `RUST_LOG` for the bridge process.
    pub bridge_log: String,
}

impl BenchOptions {
    /// The scenario with the defaults for everything else.
    pub fn new(scenario: Scenario, bridge_binary: PathBuf) -> Self {
        Self {
            scenario,
            subscribers: defaults::SUBSCRIBERS,
            delivery_concurrency: DeliverySettings::default().concurrency,
            poll_concurrency: None,
            receiver_fail_rate: 0.0,
            simulator_faults: Faults::default(),
            raw_duration: defaults::RAW_DURATION,
            timeout: defaults::TIMEOUT,
            store_url: None,
            bridge_binary,
            bridge_log: "warn".to_owned(),
        }
    }

    fn validate(&self) -> Result<(), BenchError> {
        let invalid = |option, rule| Err(BenchError::InvalidOption { option, rule });
        let positive = [
            ("orders", self.scenario.orders()),
            ("subscribers", self.subscribers),
            ("delivery concurrency", self.delivery_concurrency),
            ("poll concurrency", self.poll_concurrency.unwrap_or(1)),
        ];
        if let Some((option, _)) = positive.into_iter().find(|(_, n)| *n == 0) {
            return invalid(option, "must be at least 1");
        }
        if self.scenario.orders() >= PROBE_ORDER - FIRST_ORDER {
            return invalid("orders", "must be fewer than 89,999,999");
        }
        if self.scenario.poll_interval().is_zero() {
            return invalid("poll interval", "must be greater than zero");
        }
        match self.scenario {
            Scenario::Burst {
                messages_per_order: 0,
                ..
            } => return invalid("messages", "must be at least 1"),
            Scenario::Steady {
                messages_per_second,
                duration,
                ..
            } if !(messages_per_second > 0.0 && messages_per_second.is_finite())
                || duration.is_zero() =>
            {
                return invalid("rate and duration", "must be greater than zero");
            }
            _ => {}
        }
        if !(0.0..1.0).contains(&self.receiver_fail_rate) {
            return invalid("receiver fail rate", "must be at least 0 and below 1");
        }
        if self.raw_duration.is_zero() {
            return invalid("raw duration", "must be greater than zero");
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid bench option: {option} {rule}")]
    InvalidOption {
        option: &'static str,
        rule: &'static str,
    },
    #[error("I/O failed")]
    Io(#[from] io::Error),
    #[error("an HTTP call of the bench failed")]
    Http(#[from] reqwest::Error),
    #[error("the simulator refused the fault rates")]
    Faults(#[from] SimulatorConfigError),
    #[error("cannot start the bridge binary {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the bridge exited ({status}); its log ends with:\n{log_tail}")]
    BridgeExited { status: String, log_tail: String },
    #[error("the bridge's admin API answered {status} to {call}: {body}")]
    Admin {
        call: String,
        status: u16,
        body: String,
    },
    #[error("the bridge returned an unusable value")]
    Invalid(#[from] ValidationError),
    #[error("the simulator's answer for the sample body produced no chat_message.created event")]
    NoSampleEvent,
    #[error("timed out while {phase}: {detail}")]
    Timeout { phase: &'static str, detail: String },
}

/// Runs one measurement; the report says whether everything arrived ([`BenchReport::passed`]).
pub async fn run(options: BenchOptions) -> Result<BenchReport, BenchError> {
    options.validate()?;
    let budget = options.timeout + HANG_MARGIN;
    tokio::time::timeout(budget, run_validated(options))
        .await
        .unwrap_or_else(|_| {
            Err(BenchError::Timeout {
                phase: "running the bench",
                detail: format!("no phase ended within {budget:?}"),
            })
        })
}

/// CPU and request counts at one moment, to measure a phase by difference.
struct Snapshot {
    at: Instant,
    stats: SimulatorStats,
    bridge: Usage,
    bench: Usage,
}

impl Snapshot {
    fn take(sim: &SimulatorHandle, bridge: &mut Bridge) -> Result<Self, BenchError> {
        Ok(Self {
            at: Instant::now(),
            stats: sim.stats(),
            bridge: bridge.usage()?,
            bench: procfs::usage(None)?,
        })
    }

    fn polls(&self) -> u64 {
        self.stats.order_messages_requests + self.stats.chat_messages_requests
    }
}

/// What a scenario measured, for the report.
struct Measured {
    start: Snapshot,
    end: Snapshot,
    /// Where polls per second are counted (the whole run for burst, the message window for
    /// steady).
    poll_window: (u64, Duration),
    tally: Tally,
    timings: HashMap<i64, MessageTiming>,
    poll_gaps: Option<Vec<Duration>>,
    timed_out: bool,
}

/// Everything the scenarios share.
struct Rig {
    sim: SimulatorHandle,
    receiver: Receiver,
    bridge: Bridge,
    orders: Vec<OrderId>,
    subscribers: usize,
    deadline: Instant,
}

async fn run_validated(options: BenchOptions) -> Result<BenchReport, BenchError> {
    let deadline = Instant::now() + options.timeout;
    let cancel = CancellationToken::new();
    let _stop_servers = cancel.clone().drop_guard();
    let workdir = tempfile::tempdir()?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));

    let token = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
    let simulator = Simulator::build(
        SimulatorConfig {
            orders: Vec::new(),
            static_token: Some(token.clone()),
            record_message_timings: true,
            ..SimulatorConfig::default()
        },
        loopback,
    )
    .await?;
    let sim_url = format!("http://{}", simulator.local_addr());
    let sim = simulator.handle();
    tokio::spawn(simulator.run_until_stopped(cancel.clone()));
    let receiver = Receiver::start(cancel.clone()).await?;

    let body = sample_body(&sim, &sim_url, &token).await?;
    let raw_limit_per_s = raw::measure(
        &receiver,
        body,
        options.subscribers,
        options.delivery_concurrency,
        options.raw_duration,
    )
    .await?;
    receiver.reset();

    let bridge_config = BridgeConfig {
        binary: options.bridge_binary.clone(),
        store_url: options.store_url.clone(),
        instacart_url: sim_url,
        instacart_token: token,
        poll_interval: options.scenario.poll_interval(),
        poll_jitter: POLL_JITTER,
        poll_concurrency: options.poll_concurrency,
        delivery_concurrency: options.delivery_concurrency,
        log_filter: options.bridge_log.clone(),
    };
    let bridge = Bridge::start(&bridge_config, workdir.path(), deadline).await?;
    let mut secrets = Vec::with_capacity(options.subscribers);
    for subscriber in 0..options.subscribers {
        secrets.push(bridge.create_subscriber(&receiver.url(subscriber)).await?);
    }
    receiver.set_secrets(secrets);

    let orders = (0..options.scenario.orders())
        .map(|i| OrderId::parse("order_id", &(FIRST_ORDER + i).to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rig = Rig {
        sim,
        receiver,
        bridge,
        orders,
        subscribers: options.subscribers,
        deadline,
    };
    let spread = match options.scenario {
        Scenario::Burst { .. } => Duration::ZERO,
        Scenario::Steady { poll_interval, .. } => poll_interval,
    };
    rig.baseline(spread).await?;
    rig.sim.set_faults(options.simulator_faults)?;
    rig.receiver.set_fail_rate(options.receiver_fail_rate);

    let measured = match options.scenario {
        Scenario::Burst {
            messages_per_order, ..
        } => rig.burst(messages_per_order).await?,
        Scenario::Steady {
            messages_per_second,
            duration,
            ..
        } => rig.steady(messages_per_second, duration).await?,
    };
    let counts = rig.receiver.counts();
    let log_tail = measured.timed_out.then(|| rig.bridge.log_tail());
    let bridge_exit = rig.bridge.stop().await?;
    Ok(report::build(
        &options,
        raw_limit_per_s,
        measured,
        counts,
        bridge_exit.to_string(),
        log_tail,
    ))
}

/// The exact body the bridge sends for a bench message: the simulator's answer for a probe
/// order, through the bridge's own differ.
async fn sample_body(
    sim: &SimulatorHandle,
    sim_url: &str,
    token: &str,
) -> Result<Bytes, BenchError> {
    let probe = PROBE_ORDER.to_string();
    sim.add_empty_orders(&[&probe]);
    sim.add_chat_messages(&[(&probe, MESSAGE_BODY)]);
    let answer: OrderMessagesResponse = reqwest::Client::new()
        .get(format!(
            "{sim_url}/v2/post_checkout/orders/{probe}/order_messages"
        ))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let order = OrderId::parse("order_id", &probe)?;
    let event = differ::diff(&order, &SeenState::default(), &answer.into(), Utc::now())
        .events
        .into_iter()
        .find(|event| event.event_type == EventType::ChatMessageCreated)
        .ok_or(BenchError::NoSampleEvent)?;
    Ok(Bytes::from(event.payload))
}

impl Rig {
    /// Registers the orders (empty: a first poll announces nothing), spread evenly over
    /// `spread`, and waits until each has been polled once, so the scenario starts from a bridge
    /// that knows them all.
    ///
    /// Spread over one poll interval, the orders' polls are spread over it too, as when orders
    /// come one by one. Registered at once, their polls would come in waves an interval apart
    /// (the jitter disperses them only slowly), and the polls counted in a window would depend
    /// on where its ends cut the waves: a few percent either way.
    async fn baseline(&mut self, spread: Duration) -> Result<(), BenchError> {
        let keys: Vec<&str> = self.orders.iter().map(OrderId::as_str).collect();
        self.sim.add_empty_orders(&keys);
        let served_before = self.sim.orders_served();
        let keys: Vec<String> = keys.into_iter().map(str::to_owned).collect();
        // Burst registers at once, in one slice, as it always has.
        let wanted = if spread.is_zero() {
            1
        } else {
            REGISTRATION_SLICES
        };
        let per_slice = keys.len().div_ceil(wanted).max(1);
        let slices = keys.len().div_ceil(per_slice).max(1);
        let registering = Instant::now();
        for (slice, orders) in keys.chunks(per_slice).enumerate() {
            let due = registering + spread.mul_f64(slice as f64 / slices as f64);
            tokio::time::sleep_until(due.into()).await;
            self.bridge.watch_orders(orders).await?;
        }
        let target = served_before + self.orders.len();
        loop {
            let served = self.sim.orders_served();
            if served >= target {
                break;
            }
            if Instant::now() >= self.deadline {
                return Err(BenchError::Timeout {
                    phase: "waiting for the first poll of every order",
                    detail: format!(
                        "{} of {} orders polled; the bridge's log ends with:\n{}",
                        served - served_before,
                        self.orders.len(),
                        self.bridge.log_tail()
                    ),
                });
            }
            self.bridge.ensure_running()?;
            tokio::time::sleep(TICK).await;
        }
        // The baseline's poll gaps are not the scenario's.
        self.sim.take_timings();
        Ok(())
    }

    async fn burst(&mut self, messages_per_order: usize) -> Result<Measured, BenchError> {
        let mut pairs = Vec::with_capacity(self.orders.len() * messages_per_order);
        for order in &self.orders {
            pairs.extend(std::iter::repeat_n(
                (order.as_str(), MESSAGE_BODY),
                messages_per_order,
            ));
        }
        let mut tally = Tally::new(self.subscribers);
        let start = Snapshot::take(&self.sim, &mut self.bridge)?;
        let added = self.sim.add_chat_messages(&pairs);
        let order_of_each = self
            .orders
            .iter()
            .flat_map(|order| std::iter::repeat_n(order, messages_per_order));
        for (order, message) in order_of_each.zip(&added) {
            tally.expect(order, message.id);
        }
        let timed_out = self.collect(&mut tally).await?;
        let end = Snapshot::take(&self.sim, &mut self.bridge)?;
        let timings = self.sim.take_timings();
        let elapsed = tally.last_arrival.unwrap_or(end.at) - start.at;
        Ok(Measured {
            poll_window: (end.polls() - start.polls(), elapsed),
            start,
            end,
            tally,
            timings: by_message(timings.served),
            poll_gaps: None,
            timed_out,
        })
    }

    async fn steady(
        &mut self,
        messages_per_second: f64,
        duration: Duration,
    ) -> Result<Measured, BenchError> {
        let mut tally = Tally::new(self.subscribers);
        let mut rng = StdRng::from_entropy();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = Snapshot::take(&self.sim, &mut self.bridge)?;
        let mut added = 0u64;
        let mut timed_out = false;
        loop {
            ticks.tick().await;
            let elapsed = start.at.elapsed().min(duration);
            let due = (messages_per_second * elapsed.as_secs_f64()) as u64 - added;
            let chosen: Vec<&OrderId> = (0..due)
                .map(|_| &self.orders[rng.gen_range(0..self.orders.len())])
                .collect();
            let pairs: Vec<(&str, &str)> = chosen
                .iter()
                .map(|order| (order.as_str(), MESSAGE_BODY))
                .collect();
            for (order, message) in chosen.iter().zip(self.sim.add_chat_messages(&pairs)) {
                tally.expect(order, message.id);
            }
            added += due;
            tally.absorb(self.receiver.take_arrivals());
            self.bridge.ensure_running()?;
            if elapsed >= duration {
                break;
            }
            if Instant::now() >= self.deadline {
                timed_out = true;
                break;
            }
        }
        let now = self.sim.stats();
        let window_polls = now.order_messages_requests + now.chat_messages_requests - start.polls();
        let window = self.sim.take_timings();
        timed_out |= self.collect(&mut tally).await?;
        let end = Snapshot::take(&self.sim, &mut self.bridge)?;
        let mut served = window.served;
        served.extend(self.sim.take_timings().served);
        Ok(Measured {
            start,
            end,
            poll_window: (window_polls, duration),
            tally,
            timings: by_message(served),
            poll_gaps: Some(window.poll_gaps),
            timed_out,
        })
    }

    /// Takes arrivals until every expected delivery is in; `true` when the deadline came first.
    async fn collect(&mut self, tally: &mut Tally) -> Result<bool, BenchError> {
        loop {
            tally.absorb(self.receiver.take_arrivals());
            if tally.complete() {
                return Ok(false);
            }
            if Instant::now() >= self.deadline {
                return Ok(true);
            }
            self.bridge.ensure_running()?;
            tokio::time::sleep(TICK).await;
        }
    }
}

fn by_message(served: Vec<MessageTiming>) -> HashMap<i64, MessageTiming> {
    served.into_iter().map(|t| (t.message_id, t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(change: impl FnOnce(&mut BenchOptions)) -> &'static str {
        let mut options = BenchOptions::new(Scenario::burst(), PathBuf::from("shopper-bridge"));
        change(&mut options);
        match options.validate() {
            Err(BenchError::InvalidOption { option, .. }) => option,
            other => panic!("expected an invalid option, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_options_are_named() {
        let binary = PathBuf::from("shopper-bridge");
        BenchOptions::new(Scenario::burst(), binary.clone())
            .validate()
            .unwrap();
        BenchOptions::new(Scenario::steady(), binary)
            .validate()
            .unwrap();
        assert_eq!(refused(|o| o.subscribers = 0), "subscribers");
        assert_eq!(
            refused(|o| o.receiver_fail_rate = 1.0),
            "receiver fail rate"
        );
        assert_eq!(
            refused(|o| o.poll_concurrency = Some(0)),
            "poll concurrency"
        );
        assert_eq!(
            refused(|o| o.scenario = Scenario::Burst {
                orders: 1,
                messages_per_order: 0,
                poll_interval: Duration::from_secs(1),
            }),
            "messages"
        );
        assert_eq!(
            refused(|o| o.scenario = Scenario::Steady {
                orders: 1,
                poll_interval: Duration::from_secs(1),
                messages_per_second: f64::NAN,
                duration: Duration::from_secs(1),
            }),
            "rate and duration"
        );
        assert_eq!(
            refused(|o| o.scenario = Scenario::Burst {
                orders: 90_000_000,
                messages_per_order: 1,
                poll_interval: Duration::from_secs(1),
            }),
            "orders"
        );
    }
}
