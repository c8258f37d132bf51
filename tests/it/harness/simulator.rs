//! The built-in Connect simulator on a loopback port, for as long as the test holds it.

use tokio_util::sync::{CancellationToken, DropGuard};

use shopper_bridge::simulator::{Simulator, SimulatorConfig, SimulatorHandle};

/// A running simulator; dropping it stops it.
pub struct RunningSimulator {
    /// `http://127.0.0.1:{port}`.
    pub base_url: String,
    pub handle: SimulatorHandle,
    /// The static bearer token of its config, if it has one.
    pub token: Option<String>,
    _stop: DropGuard,
}

/// Binds `config`'s simulator to a free loopback port and serves it in the background.
pub async fn start_simulator(config: SimulatorConfig) -> RunningSimulator {
    let token = config.static_token.clone();
    let simulator = Simulator::build(config, ([127, 0, 0, 1], 0).into())
        .await
        .expect("simulator binds");
    let base_url = format!("http://{}", simulator.local_addr());
    let handle = simulator.handle();
    let stop = CancellationToken::new();
    tokio::spawn(simulator.run_until_stopped(stop.clone()));
    RunningSimulator {
        base_url,
        handle,
        token,
        _stop: stop.drop_guard(),
    }
}
