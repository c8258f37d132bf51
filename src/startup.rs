//! Builds the service from its settings and runs it until told to stop.

use axum::Router;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AppState};
use crate::channels::{ChannelError, Channels};
use crate::config::{ConfigError, Settings};
use crate::dispatch::Dispatcher;
use crate::instacart::{InstacartClient, InstacartError};
use crate::outbox;
use crate::poller::Poller;
use crate::store::{self, StoreError};
use crate::talkback::Talkback;
use crate::telemetry::error_chain;
use crate::templates::{TemplateError, Templates};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not open the store")]
    Store(#[from] StoreError),
    #[error("could not set up the delivery channels")]
    Channels(#[from] ChannelError),
    #[error("could not load the message templates")]
    Templates(#[from] TemplateError),
    #[error("could not set up the Instacart client")]
    Instacart(#[from] InstacartError),
    #[error("could not listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the admin HTTP server failed")]
    Server(#[source] io::Error),
    #[error("a background task panicked")]
    Panicked(#[from] tokio::task::JoinError),
}

/// The service, built and listening, not yet serving.
pub struct Application {
    port: u16,
    listener: TcpListener,
    router: Router,
    state: AppState,
    poller: Arc<Poller>,
    dispatcher: Arc<Dispatcher>,
    templates: Templates,
    background_tasks: bool,
}

impl Application {
    /// Validates the settings, opens (and migrates) the store and binds `server.listen`; port 0
    /// picks a free port, see [`Application::port`].
    #[tracing::instrument(skip_all, fields(listen = %settings.server.listen))]
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        settings.validate()?;
        let instacart = InstacartClient::new(&settings.instacart, settings.instacart_auth()?)?;
        let templates = Templates::load(settings.templates.dir.as_deref())?;
        let store = store::open(&settings.store.url).await?;
        let channels = Channels::new(&settings, templates.clone())?;
        let addr = settings.server.listen;
        let bind_error = |source| StartupError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let port = listener.local_addr().map_err(bind_error)?.port();
        let (producer, consumer) = outbox::new_pair(store.clone(), &settings.delivery);
        let talkback = Talkback::new(store.clone(), instacart.clone(), channels.slack_api());
        let state = AppState::new(
            store,
            Arc::new(settings),
            talkback.clone(),
            producer.clone(),
        );
        let router = admin::router(state.clone());
        let dispatcher = Arc::new(Dispatcher::new(
            state.store.clone(),
            channels,
            talkback,
            state.settings.delivery.clone(),
            consumer,
        ));
        let poller = Arc::new(Poller::new(
            state.store.clone(),
            instacart,
            state.settings.poller.clone(),
            state.poller_wake.clone(),
            producer,
        ));
        Ok(Self {
            port,
            listener,
            router,
            state,
            poller,
            dispatcher,
            templates,
            background_tasks: true,
        })
    }

    /// Serves only the HTTP API: polling and delivery happen when the caller invokes
    /// [`Poller::poll_once`] and [`Dispatcher::deliver_next`] (tests step through them so).
    pub fn without_background_tasks(mut self) -> Self {
        self.background_tasks = false;
        self
    }

    pub fn poller(&self) -> Arc<Poller> {
        self.poller.clone()
    }

    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        self.dispatcher.clone()
    }

    /// The e-mail and Slack templates, loaded and checked at build.
    pub fn templates(&self) -> &Templates {
        &self.templates
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The store, settings and wake-ups the admin API shares with the background tasks.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `cancel` fires, then lets in-flight work finish. Every long-running part is
    /// one task in `tasks`, stopped through `cancel`; if one fails, the others are stopped too
    /// and the first failure is returned once all have ended.
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> Result<(), RunError> {
        let mut tasks: JoinSet<Result<(), RunError>> = JoinSet::new();
        tasks.spawn(serve(self.listener, self.router, cancel.clone()));
        if self.background_tasks {
            let poller = self.poller.run(cancel.clone());
            let dispatcher = self.dispatcher.run(cancel.clone());
            tasks.spawn(async move {
                poller.await;
                Ok(())
            });
            tasks.spawn(async move {
                dispatcher.await;
                Ok(())
            });
        }

        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            if let Err(error) = joined.map_err(RunError::from).and_then(|ended| ended) {
                tracing::error!(error = %error_chain(&error), "task failed; shutting down");
                cancel.cancel();
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

async fn serve(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> Result<(), RunError> {
    axum::serve(listener, router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
        .map_err(RunError::Server)
}

/// A token cancelled on SIGINT (Ctrl-C) or SIGTERM. Must be called inside the Tokio runtime.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    token
}

async fn wait_for_signal() {
    // A signal that cannot be listened for must not look like one that arrived.
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    () = ctrl_c => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for SIGTERM");
                ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
