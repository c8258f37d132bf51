//! `shopper-bridge bench` end to end with tiny parameters: the simulator and receiver in this
//! process, the real `shopper-bridge` binary as the bridge under test.

use std::path::PathBuf;
use std::time::Duration;

use shopper_bridge::bench::{self, BenchOptions, Scenario};
use shopper_bridge::simulator::Faults;

fn options(scenario: Scenario) -> BenchOptions {
    let mut options = BenchOptions::new(
        scenario,
        PathBuf::from(env!("CARGO_BIN_EXE_shopper-bridge")),
    );
    options.raw_duration = Duration::from_millis(300);
    options.timeout = Duration::from_secs(30);
    options
}

fn target_names(report: &bench::BenchReport) -> Vec<&str> {
    report.targets.iter().map(|t| t.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_delivers_every_message_once_to_every_subscriber_and_reports_zero_lost() {
    let mut options = options(Scenario::Burst {
        orders: 5,
        messages_per_order: 2,
        poll_interval: Duration::from_millis(200),
    });
    options.subscribers = 2;
    let report = bench::run(options).await.unwrap();

    assert!(report.passed(), "{report}");
    assert_eq!((report.expected_deliveries, report.delivered), (20, 20));
    assert_eq!(
        (report.lost, report.duplicates, report.unexpected),
        (0, 0, 0)
    );
    assert_eq!(report.bad_signatures, 0);
    assert!(report.raw_limit_per_s > 0.0 && report.deliveries_per_s > 0.0);
    let latency = report.latency_bridge_added.unwrap();
    assert_eq!(latency.count, 20);
    assert!(report.latency_end_to_end.unwrap().p50_ms >= latency.p50_ms);
    assert!(report.polls > 0 && report.peak_rss_mib > 1.0 && report.bridge_cpu_s > 0.0);
    assert!(report.bridge_threads_cpu_s.contains_key("tokio-rt-worker"));
    let first = report.first_delivery_s.unwrap();
    assert!(first <= report.elapsed_s && report.last_message_served_s.unwrap() <= report.elapsed_s);
    assert_eq!(report.bridge_exit, "exit status: 0");
    assert_eq!(
        target_names(&report),
        ["deliveries/s vs raw limit", "events lost"]
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["scenario"], "burst");
    assert_eq!(json["lost"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_loses_nothing_despite_a_failing_receiver_and_a_faulty_upstream() {
    let mut options = options(Scenario::Steady {
        orders: 20,
        poll_interval: Duration::from_millis(300),
        messages_per_second: 20.0,
        duration: Duration::from_millis(1500),
    });
    options.subscribers = 2;
    options.receiver_fail_rate = 0.2;
    options.simulator_faults = Faults {
        rate_5xx: 0.05,
        rate_429: 0.02,
        ..Faults::default()
    };
    let report = bench::run(options).await.unwrap();

    assert!(report.passed(), "{report}");
    assert_eq!(report.expected_deliveries, 60);
    assert_eq!(report.lost, 0);
    assert!(report.receiver_refused_503 > 0, "{report}");
    assert!(report.poll_gap.is_some() && report.scheduler_lag.is_some());
    assert!(report.polls_per_s > 0.0);
    // Backed-off polls and retried deliveries are the point here, not the speed goals.
    assert_eq!(target_names(&report), ["events lost"]);
    assert!(report.to_string().contains("the speed goals do not apply"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_finish_in_time_ends_and_reports_what_is_missing() {
    // Polled once on registration, then not for about a minute: the messages are never seen.
    let mut options = options(Scenario::Burst {
        orders: 3,
        messages_per_order: 1,
        poll_interval: Duration::from_secs(60),
    });
    options.subscribers = 1;
    // Room for a slow start on a busy machine; the run ends at the deadline either way.
    options.timeout = Duration::from_secs(6);
    let report = bench::run(options).await.unwrap();

    assert!(report.timed_out && !report.passed());
    assert_eq!(report.lost, 3);
    let missing = report.missing.as_ref().unwrap();
    assert_eq!(missing.messages_never_polled, 3);
    assert_eq!(missing.messages_polled_not_delivered, 0);
    assert_eq!(missing.example_event_ids.len(), 3);
    assert!(report.to_string().contains("TIMED OUT"));
}

#[tokio::test]
async fn a_missing_bridge_binary_is_named_in_the_error() {
    let mut options = options(Scenario::burst());
    options.bridge_binary = PathBuf::from("/nonexistent/shopper-bridge");
    let error = bench::run(options).await.unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/shopper-bridge"),
        "{error}"
    );
}
