//! The one way a test waits: a check repeated until it holds, or a future, both bounded by
//! [`WAIT_LIMIT`].

use std::future::Future;
use std::time::Duration;
use tokio::sync::Notify;

/// How long a test waits for something that should happen.
pub const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// Runs `check` every few milliseconds until it returns `Some`; panics naming `what` after
/// [`WAIT_LIMIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {WAIT_LIMIT:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `done` every few milliseconds until it holds; panics naming `what` after [`WAIT_LIMIT`].
pub async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(what, || {
        let done = done();
        async move { done.await.then_some(()) }
    })
    .await;
}

/// Awaits `work`; panics naming `what` if it takes longer than [`WAIT_LIMIT`].
pub async fn within<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT_LIMIT, work)
        .await
        .unwrap_or_else(|_| panic!("gave up after {WAIT_LIMIT:?} waiting until {what}"))
}

/// Whether `wake` was notified (a notification is kept until someone waits).
pub async fn was_woken(wake: &Notify) -> bool {
    tokio::time::timeout(Duration::from_secs(1), wake.notified())
        .await
        .is_ok()
}

/// Whether the dispatcher was told, within a second, that deliveries are due.
pub async fn dispatcher_was_woken(app: &super::TestApp) -> bool {
    tokio::time::timeout(Duration::from_secs(1), app.dispatcher.outbox().ready())
        .await
        .is_ok()
}
