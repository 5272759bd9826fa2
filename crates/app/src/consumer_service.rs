//! What the trend and recommendation services share: a consumer group applying events to a
//! store, and an HTTP API answering from that store, started together and stopped together.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bookstore_consumer::ConsumerStats;
use bookstore_domain::EventHandler;
use bookstore_http::{Probe, Surface};
use tokio_util::sync::CancellationToken;

use crate::bus::{Consumer, EventBus};
use crate::config::{Config, OpsListen};
use crate::lifecycle::{Listeners, drained};

/// How one consumer service is made: what it is called, its store, its group and topics, and
/// where it listens.
pub(crate) struct ConsumerSpec<'a> {
    /// `trend` or `recommend`: the `service` label of its metrics and log spans.
    pub service: &'static str,
    /// The service for a person (`trend`, `recommendation`), in its log and error messages.
    pub name: &'static str,
    /// The OpenAPI document's title and description.
    pub title: &'static str,
    pub description: &'static str,
    /// The store's name in `/readyz` (such as `redis`), and its probe.
    pub store: &'static str,
    pub store_probe: Arc<dyn Probe>,
    /// The store as the handler its consumer group applies events to.
    pub handler: Arc<dyn EventHandler>,
    /// Events per batch at most, when the service sets its own (else `events.batch_size`).
    pub batch_size: Option<usize>,
    pub group: &'a str,
    pub topics: Vec<String>,
    pub listen: SocketAddr,
    /// Where its operational endpoints are served.
    pub ops_listen: OpsListen,
    /// The configuration keys of `listen` and `ops_listen`, for the error when one cannot be
    /// bound.
    pub listen_key: &'static str,
    pub ops_listen_key: &'static str,
}

impl ConsumerSpec<'_> {
    /// Joins the consumer group, binds the listener, and builds the router `api` makes of the
    /// shared surface: the store and the event log in `/readyz`, the group's counters in
    /// `/metrics`.
    pub async fn build(
        self,
        config: &Config,
        api: impl FnOnce(Surface) -> bookstore_http::Routers,
    ) -> anyhow::Result<ConsumerApp> {
        let bus = EventBus::open(config).await?;
        let stop = CancellationToken::new();
        let mut events = config.events.clone();
        if let Some(batch_size) = self.batch_size {
            events.batch_size = batch_size;
        }
        let consumer = bus
            .consumer(&events, self.group, self.topics, self.handler, stop.clone())
            .await?;
        let listeners = Listeners::bind(
            self.service,
            (self.listen, self.listen_key),
            (self.ops_listen, self.ops_listen_key),
        )
        .await?;
        let (broker, broker_probe) = crate::ops::broker_probe(&bus, &config.events.topic)?;
        let surface = Surface {
            // The trend and recommendation services' ports serve the web service (internal).
            continue_traces: true,
            service: self.service,
            title: self.title,
            description: self.description,
            readiness: bookstore_http::Readiness::new()
                .with("store", self.store, self.store_probe)
                .with("broker", broker, broker_probe),
            collectors: vec![crate::ops::consumer_collector(
                self.service,
                self.group.to_owned(),
                consumer.stats(),
            )],
            request_timeout: config.http.limits().request_timeout,
            ops: self.ops_listen.routes(),
        };
        Ok(ConsumerApp {
            name: self.name,
            listeners,
            routers: api(surface),
            limits: config.http.limits(),
            consumer,
            stop,
        })
    }
}

/// A consumer service (`bookstore trend`, `bookstore recommend`), bound and ready to run.
pub struct ConsumerApp {
    name: &'static str,
    listeners: Listeners,
    routers: bookstore_http::Routers,
    limits: bookstore_http::Limits,
    consumer: Consumer,
    stop: CancellationToken,
}

impl ConsumerApp {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listeners.local_addr()
    }

    /// The address of the operations port (`None`: its `ops_listen` is `same`).
    pub fn ops_addr(&self) -> std::io::Result<Option<SocketAddr>> {
        self.listeners.ops_addr()
    }

    pub fn consumer_stats(&self) -> Arc<ConsumerStats> {
        self.consumer.stats()
    }

    /// Consumes and serves until `shutdown` completes or either of them fails; then the server
    /// finishes its requests and the consumer the batch in flight, and leaves the group.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            name,
            listeners,
            routers,
            limits,
            consumer,
            stop,
        } = self;
        // Dropped before it ends (its task aborted, the runtime shutting down after a panic), it
        // still stops the consumer: a Kafka consumer's thread would otherwise poll for ever and
        // hold up the runtime's shutdown.
        let _stop_when_dropped = stop.clone().drop_guard();
        listeners.log(&format!("{name} service"));
        let mut consumer = tokio::spawn(consumer.run());
        let served = drained(listeners, routers, limits, {
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    () = stop.cancelled() => {}
                }
            }
        });
        let served = tokio::select! {
            served = served => served.with_context(|| format!("the {name} HTTP server failed")),
            consumed = &mut consumer => {
                // The consumer only ends by itself on a fatal error.
                stop.cancel();
                return consumed.with_context(|| format!("the {name} consumer task failed"))?;
            }
        };
        stop.cancel();
        consumer
            .await
            .with_context(|| format!("the {name} consumer task failed"))??;
        served
    }
}
