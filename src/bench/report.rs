//! The bench's result: figures, the targets checked against them, and the table.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::receiver::ReceiverCounts;
use super::stats::Percentiles;
use super::{BenchOptions, Measured, Scenario, POLL_JITTER};

const MIB: f64 = 1024.0 * 1024.0;

/// The run's settings, as they shape the figures.
#[derive(Debug, Clone, Serialize)]
pub struct Parameters {
    pub orders: usize,
    /// Burst only.
    pub messages_per_order: Option<usize>,
    pub subscribers: usize,
    pub poll_interval_s: f64,
    /// Steady only.
    pub messages_per_second: Option<f64>,
    /// Steady only: how long messages are added.
    pub duration_s: Option<f64>,
    pub delivery_concurrency: usize,
    pub poll_concurrency: Option<usize>,
    pub receiver_fail_rate: f64,
    pub simulator_rate_5xx: f64,
    pub simulator_rate_429: f64,
    /// `temporary SQLite file`, or `--store-url`.
    pub store: &'static str,
}

impl Parameters {
    pub fn faults_injected(&self) -> bool {
        self.receiver_fail_rate > 0.0
            || self.simulator_rate_5xx > 0.0
            || self.simulator_rate_429 > 0.0
    }
}

/// What had not arrived when the bench gave up.
#[derive(Debug, Clone, Serialize)]
pub struct MissingReport {
    pub deliveries: u64,
    /// Messages never served by the simulator: the bridge did not poll their order in time.
    pub messages_never_polled: u64,
    /// Messages served but not (fully) delivered.
    pub messages_polled_not_delivered: u64,
    pub example_event_ids: Vec<String>,
    pub bridge_log_tail: Option<String>,
}

/// One of the targets and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub name: &'static str,
    pub goal: &'static str,
    pub value: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub scenario: &'static str,
    pub cores: usize,
    pub parameters: Parameters,
    /// Signed webhooks per second the bench's own client got accepted by the same receiver.
    pub raw_limit_per_s: f64,
    pub expected_deliveries: u64,
    /// Distinct (event, subscriber) pairs that arrived with a valid signature.
    pub delivered: u64,
    /// From the first message added to the last delivery's arrival.
    pub elapsed_s: f64,
    /// From the first message added to the first delivery's arrival.
    pub first_delivery_s: Option<f64>,
    /// From the first message added to the moment the simulator had served every message:
    /// past it, the wait is on delivery alone.
    pub last_message_served_s: Option<f64>,
    pub deliveries_per_s: f64,
    pub ratio_to_raw_limit: f64,
    /// Arrival minus the moment the simulator first served the message.
    pub latency_bridge_added: Option<Percentiles>,
    /// Arrival minus the message's creation: includes the wait for the next poll.
    pub latency_end_to_end: Option<Percentiles>,
    /// `order_messages` and `chat_messages` requests (burst: the whole run; steady: the window
    /// in which messages are added).
    pub polls: u64,
    pub polls_per_s: f64,
    /// Orders divided by the poll interval.
    pub target_polls_per_s: f64,
    /// Steady only: time between consecutive whole answers for the same order.
    pub poll_gap: Option<Percentiles>,
    /// Steady only: how far each poll gap overran the interval plus its jitter (0 when on time).
    pub scheduler_lag: Option<Percentiles>,
    /// The bridge process's VmHWM.
    pub peak_rss_mib: f64,
    /// CPU (user + system) of the bridge process during the scenario.
    pub bridge_cpu_s: f64,
    pub bridge_cpu_s_per_1000_deliveries: f64,
    /// The bridge's CPU during the scenario by thread name (`tokio-rt-worker`: the async work;
    /// `sqlx-sqlite-worker`: SQLite statements).
    pub bridge_threads_cpu_s: BTreeMap<String, f64>,
    /// CPU of the bench process (simulator, receiver) during the scenario.
    pub bench_cpu_s: f64,
    pub lost: u64,
    pub duplicates: u64,
    /// Deliveries of events the bench did not cause.
    pub unexpected: u64,
    pub bad_signatures: u64,
    pub receiver_refused_503: u64,
    pub simulator_injected_429: u64,
    pub simulator_injected_5xx: u64,
    pub timed_out: bool,
    pub missing: Option<MissingReport>,
    pub bridge_exit: String,
    pub targets: Vec<TargetCheck>,
}

impl BenchReport {
    /// Everything arrived, once at least, every signature verified, within the time budget.
    pub fn passed(&self) -> bool {
        self.lost == 0 && !self.timed_out && self.bad_signatures == 0
    }
}

pub(super) fn build(
    options: &BenchOptions,
    raw_limit_per_s: f64,
    measured: Measured,
    counts: ReceiverCounts,
    bridge_exit: String,
    log_tail: Option<String>,
) -> BenchReport {
    let Measured {
        start,
        end,
        poll_window,
        tally,
        timings,
        poll_gaps,
        timed_out,
    } = measured;
    let scenario = options.scenario;
    let interval = scenario.poll_interval();
    let elapsed = tally.last_arrival.unwrap_or(end.at) - start.at;
    let delivered = tally.unique;
    let deliveries_per_s = per_second(delivered, elapsed);
    let (bridge_latency, end_to_end) = tally.latencies(&timings);
    let latency_bridge_added = Percentiles::of(bridge_latency);
    let allowed_gap = interval.mul_f64(1.0 + POLL_JITTER);
    let scheduler_lag = poll_gaps.as_ref().and_then(|gaps| {
        Percentiles::of(gaps.iter().map(|g| g.saturating_sub(allowed_gap)).collect())
    });
    let bridge_cpu_s = end.bridge.cpu_seconds - start.bridge.cpu_seconds;
    let bridge_threads_cpu_s = end
        .bridge
        .threads
        .iter()
        .map(|(name, cpu)| {
            let before = start.bridge.threads.get(name).copied().unwrap_or(0.0);
            (name.clone(), (cpu - before).max(0.0))
        })
        .collect();
    let since_start = |at: std::time::Instant| (at - start.at).as_secs_f64();
    let last_message_served_s = timings
        .values()
        .map(|t| t.first_served)
        .max()
        .map(since_start);
    let lost = tally.expected() - delivered;
    let missing = (lost > 0).then(|| MissingReport {
        bridge_log_tail: log_tail,
        ..tally.missing(&timings)
    });
    let mut report = BenchReport {
        scenario: scenario.name(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        parameters: parameters(options),
        raw_limit_per_s,
        expected_deliveries: tally.expected(),
        delivered,
        elapsed_s: elapsed.as_secs_f64(),
        first_delivery_s: tally.first_arrival.map(since_start),
        last_message_served_s,
        deliveries_per_s,
        ratio_to_raw_limit: ratio(deliveries_per_s, raw_limit_per_s),
        latency_bridge_added,
        latency_end_to_end: Percentiles::of(end_to_end),
        polls: poll_window.0,
        polls_per_s: per_second(poll_window.0, poll_window.1),
        target_polls_per_s: scenario.orders() as f64 / interval.as_secs_f64(),
        poll_gap: poll_gaps.and_then(Percentiles::of),
        scheduler_lag,
        peak_rss_mib: end.bridge.peak_rss_bytes as f64 / MIB,
        bridge_cpu_s,
        bridge_cpu_s_per_1000_deliveries: ratio(bridge_cpu_s * 1000.0, delivered as f64),
        bridge_threads_cpu_s,
        bench_cpu_s: end.bench.cpu_seconds - start.bench.cpu_seconds,
        lost,
        duplicates: tally.duplicates,
        unexpected: tally.unexpected,
        bad_signatures: counts.bad_signatures,
        receiver_refused_503: counts.refused,
        simulator_injected_429: end.stats.injected_429 - start.stats.injected_429,
        simulator_injected_5xx: end.stats.injected_503 - start.stats.injected_503,
        timed_out,
        missing,
        bridge_exit,
        targets: Vec::new(),
    };
    report.targets = targets(&report, &scenario);
    report
}

fn parameters(options: &BenchOptions) -> Parameters {
    let (messages_per_order, messages_per_second, duration_s) = match options.scenario {
        Scenario::Burst {
            messages_per_order, ..
        } => (Some(messages_per_order), None, None),
        Scenario::Steady {
            messages_per_second,
            duration,
            ..
        } => (
            None,
            Some(messages_per_second),
            Some(duration.as_secs_f64()),
        ),
    };
    Parameters {
        orders: options.scenario.orders(),
        messages_per_order,
        subscribers: options.subscribers,
        poll_interval_s: options.scenario.poll_interval().as_secs_f64(),
        messages_per_second,
        duration_s,
        delivery_concurrency: options.delivery_concurrency,
        poll_concurrency: options.poll_concurrency,
        receiver_fail_rate: options.receiver_fail_rate,
        simulator_rate_5xx: options.simulator_faults.rate_5xx,
        simulator_rate_429: options.simulator_faults.rate_429,
        store: match options.store_url {
            Some(_) => "--store-url",
            None => "temporary SQLite file",
        },
    }
}

/// The targets for this scenario. The speed goals are set for runs without faults: a
/// failed poll backs its order off and a refused delivery waits for its retry, so with faults
/// only "0 lost" applies.
fn targets(report: &BenchReport, scenario: &Scenario) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    match scenario {
        _ if report.parameters.faults_injected() => {}
        Scenario::Burst { .. } => checks.push(TargetCheck {
            name: "deliveries/s vs raw limit",
            goal: ">= 0.50",
            value: format!("{:.3}", report.ratio_to_raw_limit),
            met: report.ratio_to_raw_limit >= 0.5,
        }),
        Scenario::Steady { .. } => {
            let polls = ratio(report.polls_per_s, report.target_polls_per_s);
            let p99 = report.latency_bridge_added.map(|p| p.p99_ms);
            checks.extend([
                TargetCheck {
                    name: "polls/s vs orders/interval",
                    goal: ">= 0.98",
                    value: format!("{polls:.3}"),
                    met: polls >= 0.98,
                },
                TargetCheck {
                    name: "bridge-added latency p99",
                    goal: "<= 50 ms",
                    value: p99.map_or("n/a".to_owned(), |p| format!("{p:.1} ms")),
                    met: p99.is_some_and(|p| p <= 50.0),
                },
                TargetCheck {
                    name: "bridge peak RSS",
                    goal: "<= 150 MiB",
                    value: format!("{:.1} MiB", report.peak_rss_mib),
                    met: report.peak_rss_mib <= 150.0,
                },
            ]);
        }
    }
    checks.push(TargetCheck {
        name: "events lost",
        goal: "0",
        value: report.lost.to_string(),
        met: report.lost == 0,
    });
    checks
}

fn per_second(count: u64, over: Duration) -> f64 {
    ratio(count as f64, over.as_secs_f64())
}

/// 0 instead of a division by zero.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// `12,345`
fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn percentiles(p: &Option<Percentiles>) -> String {
    match p {
        Some(p) => format!(
            "p50 {:.1} ms   p95 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
            p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms
        ),
        None => "n/a".to_owned(),
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.parameters;
        writeln!(
            f,
            "shopper-bridge bench: {} ({} cores)",
            self.scenario, self.cores
        )?;
        match (p.messages_per_order, p.messages_per_second, p.duration_s) {
            (Some(m), _, _) => writeln!(
                f,
                "  {} orders x {m} messages x {} subscribers; poll interval {}s",
                grouped(p.orders as f64),
                p.subscribers,
                p.poll_interval_s
            )?,
            (_, Some(rate), Some(duration)) => writeln!(
                f,
                "  {} orders polled every {}s; {rate} messages/s for {duration}s; {} subscribers",
                grouped(p.orders as f64),
                p.poll_interval_s,
                p.subscribers
            )?,
            _ => {}
        }
        writeln!(
            f,
            "  delivery concurrency {}; store: {}; receiver fails {:.0}%; simulator 5xx {:.0}%, 429 {:.0}%",
            p.delivery_concurrency,
            p.store,
            p.receiver_fail_rate * 100.0,
            p.simulator_rate_5xx * 100.0,
            p.simulator_rate_429 * 100.0
        )?;
        writeln!(f)?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: String| {
            writeln!(f, "  {name:<28}{value}")
        };
        row(
            f,
            "raw loopback limit",
            format!("{} /s", grouped(self.raw_limit_per_s)),
        )?;
        row(
            f,
            "delivered",
            format!(
                "{} of {} in {:.2} s",
                grouped(self.delivered as f64),
                grouped(self.expected_deliveries as f64),
                self.elapsed_s
            ),
        )?;
        let offset = |s: Option<f64>| s.map_or("n/a".to_owned(), |s| format!("{s:.2} s"));
        row(
            f,
            "first delivery / all polled",
            format!(
                "{} / {} after the first message",
                offset(self.first_delivery_s),
                offset(self.last_message_served_s)
            ),
        )?;
        row(
            f,
            "deliveries/s",
            format!(
                "{} /s   ({:.3} of the raw limit)",
                grouped(self.deliveries_per_s),
                self.ratio_to_raw_limit
            ),
        )?;
        row(
            f,
            "latency, bridge-added",
            percentiles(&self.latency_bridge_added),
        )?;
        row(
            f,
            "latency, end-to-end",
            percentiles(&self.latency_end_to_end),
        )?;
        row(
            f,
            "polls/s",
            format!(
                "{} /s   (target {} /s: {:.3})",
                grouped(self.polls_per_s),
                grouped(self.target_polls_per_s),
                ratio(self.polls_per_s, self.target_polls_per_s)
            ),
        )?;
        if self.poll_gap.is_some() {
            row(f, "poll gap", percentiles(&self.poll_gap))?;
            row(f, "scheduler lag", percentiles(&self.scheduler_lag))?;
        }
        row(
            f,
            "bridge peak RSS",
            format!("{:.1} MiB", self.peak_rss_mib),
        )?;
        row(
            f,
            "bridge CPU",
            format!(
                "{:.2} s   ({:.3} s per 1,000 deliveries); bench process {:.2} s",
                self.bridge_cpu_s, self.bridge_cpu_s_per_1000_deliveries, self.bench_cpu_s
            ),
        )?;
        let threads: Vec<String> = self
            .bridge_threads_cpu_s
            .iter()
            .filter(|(_, cpu)| **cpu > 0.0)
            .map(|(name, cpu)| format!("{name} {cpu:.2} s"))
            .collect();
        row(f, "bridge CPU by thread", threads.join(", "))?;
        row(
            f,
            "lost / duplicates",
            format!("{} / {}", self.lost, self.duplicates),
        )?;
        row(
            f,
            "unexpected / bad signatures",
            format!("{} / {}", self.unexpected, self.bad_signatures),
        )?;
        row(
            f,
            "faults answered",
            format!(
                "receiver 503: {}; simulator 5xx: {}, 429: {}",
                self.receiver_refused_503, self.simulator_injected_5xx, self.simulator_injected_429
            ),
        )?;
        row(f, "bridge exit", self.bridge_exit.clone())?;
        writeln!(f)?;
        if self.parameters.faults_injected() {
            writeln!(
                f,
                "  targets (faults injected: the speed goals do not apply)"
            )?;
        } else {
            writeln!(f, "  targets")?;
        }
        for t in &self.targets {
            let mark = if t.met { "met" } else { "MISSED" };
            writeln!(
                f,
                "    {:<30}{:<14}goal {:<12}{mark}",
                t.name, t.value, t.goal
            )?;
        }
        if let Some(m) = &self.missing {
            writeln!(f)?;
            writeln!(
                f,
                "  {}: {} deliveries missing; messages never polled: {}, polled but not delivered: {}",
                if self.timed_out { "TIMED OUT" } else { "INCOMPLETE" },
                m.deliveries,
                m.messages_never_polled,
                m.messages_polled_not_delivered
            )?;
            writeln!(f, "  e.g. {}", m.example_event_ids.join(", "))?;
            if let Some(log) = &m.bridge_log_tail {
                writeln!(f, "  the bridge's log ends with:\n{log}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0.0), "0");
        assert_eq!(grouped(999.4), "999");
        assert_eq!(grouped(1_000.0), "1,000");
        assert_eq!(grouped(79_123.6), "79,124");
        assert_eq!(grouped(1_234_567.0), "1,234,567");
    }
}
