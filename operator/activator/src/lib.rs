//! appenv-activator: the HTTP component on the traffic path of environments that can sleep.
//!
//! A request is routed by its `Host` to the AppEnvironment whose `status.url` has that host,
//! and forwarded to a Ready web Pod of that environment (in `status.namespace`, its container
//! port named `http`), found from a watch of Pods, not Endpoints. The request is the
//! environment's activity: the activator records it in the annotation
//! [`LAST_REQUEST_ANNOTATION`], at most once per interval per environment, and at once when
//! the environment sleeps (a wake: the controller wakes an environment whose last request is
//! at or after `status.sleep.since`). While no web Pod is Ready the request is held, within
//! bounds, and answered once one is; past a bound or a wait it gets a `503` with
//! `Retry-After` (a browser: a page that reloads itself).
//!
//! Layers: `host`, `decide` and `table` are pure (the host rules, whether to write, the
//! routing table fed by watch events); `watch` feeds the table from the API, `writes` is the
//! only API write, `proxy` and `server` the HTTP, `health` the probes and metrics. Replicas
//! share nothing but the API server: any number run side by side, without leader election.
#![forbid(unsafe_code)]
#![warn(clippy::too_many_lines)]

mod answer;
mod config;
pub mod decide;
mod health;
pub mod host;
mod metrics;
pub mod proxy;
pub mod rbac;
mod server;
mod state;
pub mod table;
mod watches;
mod writes;

pub use answer::{PAGE_RETRY_SECONDS, RETRY_AFTER_SECONDS, WAKING_PAGE};
pub use config::Config;
pub use health::Readiness;
pub use metrics::{Metrics, Outcome, WriteResult};
pub use watches::web_pod_selector;

use crate::server::Context;
use crate::state::{Holds, States};
use crate::table::Table;
use crate::writes::Writer;
use kube::{Api, Client};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The annotation of an AppEnvironment with the time of the last request to it (RFC 3339,
/// UTC, whole seconds).
pub const LAST_REQUEST_ANNOTATION: &str = appenv_api::names::request::LAST_REQUEST;
/// The field manager of the activator's writes.
pub const FIELD_MANAGER: &str = "appenv-activator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listening on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving /healthz, /readyz and /metrics")]
    Health(#[source] std::io::Error),
    #[error("{0} stopped")]
    Stopped(&'static str),
    #[error("a task of the activator failed")]
    Task(#[from] tokio::task::JoinError),
}

/// A running activator; its tasks stop when it is dropped.
#[derive(Debug)]
pub struct Activator {
    addr: SocketAddr,
    health_addr: SocketAddr,
    metrics: Arc<Metrics>,
    held: watch::Receiver<usize>,
    readiness: watch::Sender<Readiness>,
    tasks: JoinSet<Result<(), Error>>,
}

async fn listen(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

fn local_addr(listener: &TcpListener, asked: SocketAddr) -> Result<SocketAddr, Error> {
    listener.local_addr().map_err(|source| Error::Listen {
        addr: asked,
        source,
    })
}

impl Activator {
    /// Listen on both ports and start serving and watching (on the current runtime).
    pub async fn start(config: Config, client: Client) -> Result<Self, Error> {
        let traffic = listen(config.listen).await?;
        let health = listen(config.health_listen).await?;
        let addr = local_addr(&traffic, config.listen)?;
        let health_addr = local_addr(&health, config.health_listen)?;
        let metrics = Arc::new(Metrics::default());
        let configured = jiff::SignedDuration::try_from(config.activity_interval)
            .unwrap_or(jiff::SignedDuration::MAX);
        // Drawn once per replica; without randomness, every replica is due at once (and they
        // only meet more 409s).
        let fraction = getrandom::u32().map_or(0.0, |n| f64::from(n) / f64::from(u32::MAX));
        let interval = decide::replica_interval(configured, fraction);
        let ctx = Arc::new(Context {
            holds: Holds::new(config.hold_per_environment, config.hold_total),
            config,
            table: RwLock::new(Table::default()),
            states: States::default(),
            metrics: metrics.clone(),
            writer: Writer {
                api: Api::all(client.clone()),
                interval,
                metrics: metrics.clone(),
            },
            pods: proxy::backends(),
        });
        let held = ctx.holds.count();
        let readiness = watch::Sender::new(Readiness::default());
        let mut tasks = JoinSet::new();
        tasks.spawn({
            let ctx = ctx.clone();
            async move {
                server::serve(traffic, ctx).await;
                Err(Error::Stopped("the traffic server"))
            }
        });
        tasks.spawn({
            let (metrics, receiver) = (metrics.clone(), readiness.subscribe());
            async move {
                health::serve(health, metrics, receiver)
                    .await
                    .map_err(Error::Health)?;
                Err(Error::Stopped("the health server"))
            }
        });
        tasks.spawn({
            let (client, ctx, readiness) = (client.clone(), ctx.clone(), readiness.clone());
            async move {
                watches::environments(client, ctx, readiness).await;
                Err(Error::Stopped("the AppEnvironment watch"))
            }
        });
        tasks.spawn({
            let (ctx, readiness) = (ctx.clone(), readiness.clone());
            async move {
                watches::pods(client, ctx, readiness).await;
                Err(Error::Stopped("the Pod watch"))
            }
        });
        tasks.spawn({
            let (mut held, metrics) = (held.clone(), metrics.clone());
            async move {
                while held.changed().await.is_ok() {
                    let now = *held.borrow_and_update();
                    metrics.set_held(now);
                }
                Err(Error::Stopped("the held-requests gauge"))
            }
        });
        tracing::info!(%addr, %health_addr, "activator serving");
        Ok(Self {
            addr,
            health_addr,
            metrics,
            held,
            readiness,
            tasks,
        })
    }

    /// The traffic port's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The health port's address.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The number of requests held now, as it changes.
    pub fn held(&self) -> watch::Receiver<usize> {
        self.held.clone()
    }

    /// Wait until both watches have listed (from then on `/readyz` answers 200).
    pub async fn ready(&self) {
        let mut readiness = self.readiness.subscribe();
        let _ = readiness.wait_for(|r| r.listed()).await;
    }

    /// Answer 503 on `/readyz` from now on, and go on serving: before the process stops, so
    /// that the Ingress controller stops sending it requests first.
    pub fn drain(&self) {
        self.readiness.send_modify(|r| r.draining = true);
    }

    /// Run until a part of the activator stops (which it never does on its own).
    pub async fn wait(&mut self) -> Result<(), Error> {
        match self.tasks.join_next().await {
            Some(ended) => ended?,
            None => Ok(()),
        }
    }
}

/// Run an activator with `config` against the cluster of `client` until it fails.
pub async fn run(config: Config, client: Client) -> Result<(), Error> {
    let mut activator = Activator::start(config, client).await?;
    activator.wait().await
}
