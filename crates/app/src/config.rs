//! Configuration: defaults for every key, then a YAML file (`--config`), then environment
//! variables `BOOKSTORE_<SECTION>__<KEY>` (for example `BOOKSTORE_WEB__LISTEN=127.0.0.1:18000`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bookstore_domain::events::WireFormat;
use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the embedded backends keep their files.
    pub data_dir: PathBuf,
    pub web: WebConfig,
    pub db: DbConfig,
    pub events: EventsConfig,
    pub trend: TrendConfig,
    pub recommend: RecommendConfig,
    /// The bounds of every HTTP listener of every service.
    pub http: HttpConfig,
    /// Distributed tracing (off unless an OTLP endpoint is set).
    pub telemetry: TelemetryConfig,
    /// How long a service may take to stop after SIGINT or SIGTERM (finish requests, flush the
    /// producer and the outbox relay, finish the batch in flight, leave the group); past it the
    /// process exits with an error.
    pub shutdown_timeout_ms: u64,
}

/// The bounds of every HTTP listener (section `http`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// How long a request's head (request line and headers) may take to arrive in full, from the
    /// connection's opening or from the request's first byte on a kept-alive connection.
    pub header_read_timeout_ms: u64,
    /// How long a kept-alive connection may wait for its next request.
    pub idle_timeout_ms: u64,
    /// How long a handler may take (408 after it).
    pub request_timeout_ms: u64,
    /// Connections served at once per listener; past it a client gets a 503.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let limits = bookstore_http::Limits::default();
        Self {
            header_read_timeout_ms: millis(limits.header_read_timeout),
            idle_timeout_ms: millis(limits.idle_timeout),
            request_timeout_ms: millis(limits.request_timeout),
            max_connections: limits.max_connections,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl HttpConfig {
    pub fn limits(&self) -> bookstore_http::Limits {
        bookstore_http::Limits {
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_connections: self.max_connections,
        }
    }
}

/// Where a service serves its operational endpoints (`/metrics`, and the recommendation
/// service's `/interests` and `/stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpsListen {
    /// An address of their own, for the internal network (default loopback).
    Addr(SocketAddr),
    /// `same`: on the service's own `listen` address, beside its API, as before there were
    /// operations ports.
    Same,
}

impl OpsListen {
    /// The routes' placement this gives.
    pub fn routes(self) -> bookstore_http::OpsRoutes {
        match self {
            Self::Addr(_) => bookstore_http::OpsRoutes::Separate,
            Self::Same => bookstore_http::OpsRoutes::OnPublicPort,
        }
    }
}

impl std::fmt::Display for OpsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Addr(addr) => addr.fmt(f),
            Self::Same => f.write_str("same"),
        }
    }
}

impl<'de> Deserialize<'de> for OpsListen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = OpsListen;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a host:port address, or `same` (the service's own listen address)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OpsListen, E> {
                if v.trim().eq_ignore_ascii_case("same") {
                    return Ok(OpsListen::Same);
                }
                v.trim()
                    .parse()
                    .map(OpsListen::Addr)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecommendConfig {
    /// Address of the recommendation service's HTTP API.
    pub listen: SocketAddr,
    /// Address of its operational endpoints (`/metrics`, `/interests`, `/stats`), or `same`.
    pub ops_listen: OpsListen,
    /// Its consumer group.
    pub group_id: String,
    /// `sqlite://FILE` or `mysql://user:password@host:port/database`; unset means
    /// `sqlite://<data_dir>/recommend.db`.
    pub db_url: Option<Secret>,
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// Seconds for a search's weight in a profile to halve.
    pub half_life: u64,
    /// Results of one search event that count.
    pub results_per_event: usize,
    /// A reader's strongest queries that a query new to them is related to.
    pub history_per_event: usize,
    /// Books kept per query record.
    pub books_per_query: usize,
    /// Related queries kept per query record.
    pub related_per_query: usize,
    /// Books kept in each partition's popularity list.
    pub popular_books: usize,
    /// Books, authors and queries kept per reader, and books remembered as shown to them.
    pub profile_books: usize,
    pub profile_authors: usize,
    pub profile_queries: usize,
    pub profile_shown: usize,
    /// Books remembered as viewed per reader (never recommended to them).
    pub profile_viewed: usize,
    /// Co-viewed books kept per book ("readers who looked at this also looked at").
    pub similar_per_book: usize,
    /// Seconds within which two views by one reader count as viewed together (one visit).
    pub coview_window: u64,
    /// Seconds without a search or a view after which a reader's profile is deleted.
    pub profile_ttl: u64,
    /// Events per batch at most for its consumer (it reads and writes each record a batch
    /// touches once, so larger batches catch up faster).
    pub batch_size: usize,
}

impl Default for RecommendConfig {
    fn default() -> Self {
        let rules = bookstore_domain::recommend::RecommendSettings::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8002)),
            ops_listen: OpsListen::Addr(SocketAddr::from(([127, 0, 0, 1], 9002))),
            group_id: "rec-svr".to_owned(),
            db_url: None,
            max_connections: 4,
            half_life: rules.half_life.as_secs(),
            results_per_event: rules.results_per_event,
            history_per_event: rules.history_per_event,
            books_per_query: rules.books_per_query,
            related_per_query: rules.related_per_query,
            popular_books: rules.popular_books,
            profile_books: rules.profile_books,
            profile_authors: rules.profile_authors,
            profile_queries: rules.profile_queries,
            profile_shown: rules.profile_shown,
            profile_viewed: rules.profile_viewed,
            similar_per_book: rules.similar_per_book,
            coview_window: rules.coview_window.as_secs(),
            profile_ttl: rules.profile_ttl.as_secs(),
            batch_size: 5_000,
        }
    }
}

impl RecommendConfig {
    pub fn settings(&self) -> bookstore_domain::recommend::RecommendSettings {
        bookstore_domain::recommend::RecommendSettings {
            half_life: Duration::from_secs(self.half_life),
            results_per_event: self.results_per_event,
            history_per_event: self.history_per_event,
            books_per_query: self.books_per_query,
            related_per_query: self.related_per_query,
            popular_books: self.popular_books,
            profile_books: self.profile_books,
            profile_authors: self.profile_authors,
            profile_queries: self.profile_queries,
            profile_shown: self.profile_shown,
            profile_viewed: self.profile_viewed,
            similar_per_book: self.similar_per_book,
            coview_window: Duration::from_secs(self.coview_window),
            profile_ttl: Duration::from_secs(self.profile_ttl),
        }
    }
}

/// Where the trend service keeps its trends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrendStoreKind {
    /// A SQLite file in the data dir (`trends.db`).
    Embedded,
    /// Redis at `trend.redis_url`.
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrendConfig {
    /// Address of the trend service's HTTP API.
    pub listen: SocketAddr,
    /// Address of its operational endpoints (`/metrics`), or `same`.
    pub ops_listen: OpsListen,
    /// Its consumer group.
    pub group_id: String,
    pub store: TrendStoreKind,
    pub redis_url: Secret,
    /// Prefix of every Redis key the trend store writes.
    pub redis_prefix: String,
    /// Seconds for a search's weight in the score to halve.
    pub half_life: u64,
    /// Searches per reader (user, else client) and query that add to the score within a window of
    /// `user_window` seconds…
    pub user_cap: u32,
    /// …and per origin (client network, else user): what one network adds however many visitor
    /// ids it shows.
    pub client_cap: u32,
    pub user_window: u64,
    /// Trends whose decayed score falls below this are pruned…
    pub min_score: f64,
    /// …and at most this many are kept.
    pub max_trends: usize,
    /// Distinct readers who must have searched a query before the page shows it under Trends.
    pub min_readers: u32,
    /// Open `GET /trends/stream` streams at most (its subscribers are the web instances).
    pub max_streams: usize,
}

impl Default for TrendConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8001)),
            ops_listen: OpsListen::Addr(SocketAddr::from(([127, 0, 0, 1], 9001))),
            group_id: "trend-svr".to_owned(),
            store: TrendStoreKind::Embedded,
            redis_url: Secret(SecretString::from("redis://127.0.0.1:6379")),
            redis_prefix: "bookstore:trends:".to_owned(),
            half_life: 3600,
            user_cap: 3,
            client_cap: 10,
            user_window: 3600,
            min_score: 0.01,
            max_trends: 10_000,
            min_readers: 3,
            max_streams: 64,
        }
    }
}

impl TrendConfig {
    pub fn settings(&self) -> bookstore_domain::trends::TrendSettings {
        bookstore_domain::trends::TrendSettings {
            half_life: Duration::from_secs(self.half_life),
            user_cap: self.user_cap,
            client_cap: self.client_cap,
            user_window: Duration::from_secs(self.user_window),
            min_score: self.min_score,
            max_trends: self.max_trends,
            min_readers: self.min_readers,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Address the web service listens on.
    pub listen: SocketAddr,
    /// Address of its operational endpoints (`/metrics`), or `same`.
    pub ops_listen: OpsListen,
    /// Books per page, and the API's default `limit`.
    pub page_size: u32,
    /// Bearer token for `POST /api/books`; unset disables the write API.
    pub admin_token: Option<Secret>,
    /// The trend service's base URL [default: http://<trend.listen>]; "" leaves the Trends
    /// section out.
    pub trend_url: Option<String>,
    /// The recommendation service's base URL [default: http://<recommend.listen>]; "" leaves
    /// the Recommended section out.
    pub recommend_url: Option<String>,
    /// How long the page waits for the trend and recommendation services, and caches their
    /// answers.
    pub remote_timeout_ms: u64,
    pub remote_cache_ms: u64,
    /// Visitor streams of the live Trends panel (`GET /live/trends`) open at once; past it a 503.
    /// At most half of `http.max_connections` (a larger value is lowered to that), so that the
    /// streams never take every connection of the port.
    pub live_streams: usize,
    /// How often the live panel's lists are fetched again even when the trend service's stream
    /// says nothing (it may be down).
    pub live_refresh_ms: u64,
    /// The key that signs visitor ids (`uid` cookies), at least 32 characters; unset or empty: a random
    /// one generated into `<data_dir>/cookie_secret`. Web instances behind one address must share
    /// it.
    pub cookie_secret: Option<Secret>,
    /// The address readers use, e.g. `https://books.example`; `https` makes the cookie `Secure`.
    pub public_url: Option<String>,
    /// Sets or clears the cookie's `Secure` attribute whatever `public_url` says.
    pub cookie_secure: Option<bool>,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the client; a list, or
    /// one string separated by commas.
    #[serde(deserialize_with = "list_or_commas")]
    pub trusted_proxies: Vec<String>,
}

/// Which event log carries the events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventsBackend {
    /// The embedded log: a SQLite file in the data dir, shared by the processes of one machine.
    Embedded,
    /// Apache Kafka.
    Kafka,
}

/// What a publisher writes to: its topic, the wire format, and how long an event may wait for
/// the log before it counts as failed (Kafka's `message.timeout.ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub topic: String,
    pub format: WireFormat,
    pub message_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    pub backend: EventsBackend,
    /// Kafka bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// The topic of search events.
    pub topic: String,
    /// The topic of catalog events (`book.created`, `book.updated`, `book.deleted`), fed by the web
    /// service's outbox relay.
    pub catalog_topic: String,
    /// How the web service writes the search topic: `v1` (this project's events, see
    /// `docs/events.md`), or `tutorial`: the tutorial's messages (key `<query>:<uid>`, or
    /// `<query>:` without a user; value the JSON array of the result books; no type or version
    /// header), for the
    /// tutorial's trend and recommendation consumers while a migration replaces them. In
    /// `tutorial`, searches lose their client pseudonym and offset, and views (`book.viewed`) and
    /// requests to be forgotten (`reader.forgotten`: the form answers 503) are not published,
    /// only counted (`bookstore_events_omitted_total`). The catalog topic is always `v1`.
    pub format: WireFormat,
    /// Partitions and replication factor of topics the services create.
    pub partitions: u32,
    pub replication_factor: u32,
    /// Events the publisher holds while the log is unreachable; past it they are dropped.
    pub queue_capacity: usize,
    /// Bytes of events the publisher holds while the log is unreachable; past it they are
    /// dropped. At least `max_message_bytes`.
    pub queue_max_bytes: usize,
    /// The largest event the publisher sends (Kafka's producer `message.max.bytes`, checked by
    /// the embedded log too); a larger one is refused and counted as failed.
    pub max_message_bytes: usize,
    /// Kafka producer batching: `linger.ms` and `compression.type`.
    pub linger_ms: u64,
    pub compression: String,
    /// How long Kafka may take to accept an event before it counts as failed.
    pub message_timeout_ms: u64,
    /// How long shutdown waits for queued events to be delivered.
    pub flush_timeout_ms: u64,
    /// How long a service waits at start for a topic's metadata.
    pub topic_timeout_ms: u64,
    /// How long the outbox keeps a row after its event was sent, in hours; 0 keeps them all.
    pub outbox_retention_hours: u64,
    /// How many times the log may refuse an outbox row (or the relay fail to decode it) before
    /// the row goes to the dead letters; every attempt after the first is made with the row
    /// alone.
    pub outbox_max_attempts: u32,
    /// How long the log keeps a message of the search topic (and of every topic but the catalog
    /// topic, which is compacted by key instead), in hours; 0 keeps them whatever their age.
    /// The embedded log trims by it; topics the services create on Kafka get `retention.ms`.
    pub retention_hours: u64,
    /// The most bytes of message keys and values one partition of those topics keeps, the
    /// oldest messages going first; 0: no bound. Kafka: `retention.bytes` (also per partition).
    pub retention_bytes: u64,
    /// Consumer batches: at most this many events, waiting at most this long.
    pub batch_size: usize,
    pub batch_wait_ms: u64,
    /// How long a silent consumer keeps its partitions before its group reassigns them.
    pub session_timeout_ms: u64,
    /// librdkafka properties passed through as they are (security.protocol, sasl.*, ssl.*, ...).
    /// Set through the environment, `_` stands for `.`:
    /// `BOOKSTORE_EVENTS__PROPERTIES__SECURITY_PROTOCOL=SASL_SSL`.
    pub properties: BTreeMap<String, String>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            backend: EventsBackend::Embedded,
            brokers: "127.0.0.1:9092".to_owned(),
            topic: "lr-book-searches".to_owned(),
            catalog_topic: "lr-book-catalog".to_owned(),
            format: WireFormat::V1,
            partitions: 3,
            replication_factor: 1,
            queue_capacity: 100_000,
            queue_max_bytes: 32 * 1024 * 1024,
            max_message_bytes: 1_000_000,
            linger_ms: 5,
            compression: "lz4".to_owned(),
            message_timeout_ms: 300_000,
            flush_timeout_ms: 5_000,
            topic_timeout_ms: 30_000,
            outbox_retention_hours: 168,
            outbox_max_attempts: 5,
            retention_hours: 168,
            retention_bytes: 256 * 1024 * 1024,
            batch_size: 1_000,
            batch_wait_ms: 100,
            session_timeout_ms: 10_000,
            properties: BTreeMap::new(),
        }
    }
}

impl EventsConfig {
    pub fn broker_list(&self) -> Vec<String> {
        self.brokers
            .split(',')
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The pass-through properties with librdkafka's names (`security_protocol` from the
    /// environment becomes `security.protocol`).
    pub fn librdkafka_properties(&self) -> BTreeMap<String, String> {
        self.properties
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase().replace('_', "."), v.clone()))
            .collect()
    }

    /// Where the embedded log lives.
    pub fn log_path(&self, data_dir: &Path) -> PathBuf {
        data_dir.join("events.db")
    }

    /// Where the web service's search events go: `events.topic`, in `events.format`.
    pub fn searches(&self) -> Destination {
        self.destination(&self.topic)
    }

    /// Where catalog events go: `events.catalog_topic`, always in version 1 (the tutorial's
    /// services have no catalog events).
    pub fn catalog(&self) -> Destination {
        self.destination(&self.catalog_topic)
    }

    /// A publisher's destination on `topic`: version 1 on the catalog topic, `events.format`
    /// anywhere else.
    pub fn destination(&self, topic: &str) -> Destination {
        let format = if topic == self.catalog_topic {
            WireFormat::V1
        } else {
            self.format
        };
        Destination {
            topic: topic.to_owned(),
            format,
            message_timeout: Duration::from_millis(self.message_timeout_ms),
        }
    }

    pub fn flush_timeout(&self) -> Duration {
        Duration::from_millis(self.flush_timeout_ms)
    }

    /// How long messages of the trimmed topics are kept; `None`: whatever their age.
    pub fn retention_age(&self) -> Option<Duration> {
        (self.retention_hours > 0)
            .then(|| Duration::from_secs(self.retention_hours.saturating_mul(3600)))
    }

    /// The most bytes a partition of the trimmed topics keeps; `None`: no bound.
    pub fn retention_size(&self) -> Option<u64> {
        (self.retention_bytes > 0).then_some(self.retention_bytes)
    }

    /// What the embedded log keeps: the search topic and every other topic trimmed by age and
    /// size, the catalog topic compacted by key.
    pub fn retention(&self) -> bookstore_eventlog::Retention {
        bookstore_eventlog::Retention::new(
            self.retention_age(),
            self.retention_size(),
            [self.catalog_topic.clone()],
        )
    }

    /// The Kafka settings of a topic the services create: the catalog topic compacted by key
    /// (it is the recommendation service's only source of the catalog), every other topic
    /// deleting by `retention_hours` and `retention_bytes`. Kafka deletes whole segments, the
    /// active one never, so the segments are made a quarter of either bound: the bounds then
    /// hold within a quarter.
    pub fn kafka_topic_configs(&self, topic: &str) -> Vec<(String, String)> {
        if topic == self.catalog_topic {
            return vec![("cleanup.policy".to_owned(), "compact".to_owned())];
        }
        const MIB: u64 = 1024 * 1024;
        const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;
        let mut configs = vec![("cleanup.policy".to_owned(), "delete".to_owned())];
        match self.retention_age() {
            Some(age) => {
                let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                configs.push(("retention.ms".to_owned(), ms.to_string()));
                let segment = (ms / 4).clamp(60_000, WEEK_MS);
                configs.push(("segment.ms".to_owned(), segment.to_string()));
            }
            None => configs.push(("retention.ms".to_owned(), "-1".to_owned())),
        }
        match self.retention_size() {
            Some(bytes) => {
                configs.push(("retention.bytes".to_owned(), bytes.to_string()));
                let segment = (bytes / 4).clamp(MIB, 1024 * MIB);
                configs.push(("segment.bytes".to_owned(), segment.to_string()));
            }
            None => configs.push(("retention.bytes".to_owned(), "-1".to_owned())),
        }
        configs
    }

    /// How long sent outbox rows are kept; `None`: for ever.
    pub fn outbox_retention(&self) -> Option<Duration> {
        (self.outbox_retention_hours > 0)
            .then(|| Duration::from_secs(self.outbox_retention_hours.saturating_mul(3600)))
    }
}

/// Distributed tracing (section `telemetry`): spans exported over OTLP/HTTP to a collector or a
/// trace backend (Jaeger, Tempo, ...). The standard `OTEL_*` variables work too
/// (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER[_ARG]`,
/// `OTEL_SDK_DISABLED`); the keys here win over them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP base URL, such as `http://127.0.0.1:4318`; spans go to
    /// `<otlp_endpoint>/v1/traces`. Unset (and no `OTEL_EXPORTER_OTLP_ENDPOINT`): tracing is off.
    pub otlp_endpoint: Option<String>,
    /// The share of new traces recorded, from 0 to 1 (a trace started by a caller keeps the
    /// caller's decision). Unset: `OTEL_TRACES_SAMPLER`, else every trace.
    pub sampling_ratio: Option<f64>,
    /// Whether the web service's public port continues the trace a request's `traceparent` names
    /// (set it behind a proxy or gateway that starts traces). Off: any client could otherwise
    /// choose to be recorded, whatever the sampling ratio. The trend and recommendation services
    /// always continue the web service's traces.
    pub web_continues_traces: bool,
}

impl TelemetryConfig {
    /// The settings of the tracer of one process, whose spans are named `service`.
    pub fn settings(&self, service: &str) -> bookstore_telemetry::TracingSettings {
        bookstore_telemetry::TracingSettings {
            otlp_endpoint: self.otlp_endpoint.clone(),
            sampling_ratio: self.sampling_ratio,
            service_name: service.to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbConfig {
    /// `sqlite://FILE` or `mysql://user:password@host:port/database`; unset means
    /// `sqlite://<data_dir>/bookstore.db`.
    pub url: Option<Secret>,
    /// Largest number of pooled connections.
    pub max_connections: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("bookstore-data"),
            web: WebConfig::default(),
            db: DbConfig::default(),
            events: EventsConfig::default(),
            trend: TrendConfig::default(),
            recommend: RecommendConfig::default(),
            http: HttpConfig::default(),
            telemetry: TelemetryConfig::default(),
            shutdown_timeout_ms: 10_000,
        }
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            ops_listen: OpsListen::Addr(SocketAddr::from(([127, 0, 0, 1], 9000))),
            page_size: 5,
            admin_token: None,
            trend_url: None,
            recommend_url: None,
            remote_timeout_ms: 300,
            remote_cache_ms: 2_000,
            live_streams: 256,
            live_refresh_ms: 5_000,
            cookie_secret: None,
            public_url: None,
            cookie_secure: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// A list of strings, or one string of comma-separated items (handier in the environment).
fn list_or_commas<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCommas {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match ListOrCommas::deserialize(deserializer)? {
        ListOrCommas::List(items) => items,
        ListOrCommas::Commas(text) => text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Keys whose values are text whatever they look like: from the environment they are taken
/// verbatim (`BOOKSTORE_WEB__ADMIN_TOKEN=00123` is the token `00123`, not the number 123), as are
/// all of `events.properties` (SASL passwords).
const TEXT_KEYS: &[&str] = &[
    "data_dir",
    "web.admin_token",
    "web.cookie_secret",
    "web.public_url",
    "web.trend_url",
    "web.recommend_url",
    "db.url",
    "events.brokers",
    "events.topic",
    "events.catalog_topic",
    "events.compression",
    "trend.group_id",
    "trend.redis_url",
    "trend.redis_prefix",
    "recommend.group_id",
    "recommend.db_url",
];

/// Whether `BOOKSTORE_<key>` is configuration: a key of a section (`WEB__LISTEN`), or one of
/// the top-level keys [`TOP_LEVEL_KEYS`]. Other variables with the prefix (`BOOKSTORE_CONFIG`,
/// which names the file, `BOOKSTORE_LOG_FORMAT`, which is `--log-format`, and any tool's own)
/// are not; a misspelt section (`WEBB__LISTEN`) still is, and is refused as unknown.
fn is_config_variable(key: &str) -> bool {
    key.contains("__")
        || TOP_LEVEL_KEYS
            .iter()
            .any(|top| key.eq_ignore_ascii_case(top))
}

/// The keys of [`Config`] that are not sections.
const TOP_LEVEL_KEYS: &[&str] = &["data_dir", "shutdown_timeout_ms"];

/// The `BOOKSTORE_*` variables of [`TEXT_KEYS`] and `events.properties`, as they are.
fn verbatim_text_from_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.to_str()?;
            let rest = name
                .get(..10)
                .filter(|p| p.eq_ignore_ascii_case("BOOKSTORE_"))?;
            let key = name[rest.len()..]
                .split("__")
                .map(str::to_ascii_lowercase)
                .collect::<Vec<_>>()
                .join(".");
            let text = TEXT_KEYS.contains(&key.as_str()) || key.starts_with("events.properties.");
            Some((key, value.into_string().ok()?)).filter(|_| text)
        })
        .collect()
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: 10,
        }
    }
}

/// A configured secret (token, URL with a password): never printed, and read from a file or an
/// environment variable whatever it looks like (`12345` is a string here, not a number).
#[derive(Debug, Clone)]
pub struct Secret(pub SecretString);

impl Secret {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(SecretString::from(value))
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(SecretString::from(value))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::from(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::from(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::from(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret::from(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret::from(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Which kind of database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    MySql,
}

impl DbKind {
    /// `sqlite` or `mysql`, as logs, metrics and benchmark tables name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::MySql => "mysql",
        }
    }
}

/// A database the configuration names: its kind, read from the URL's scheme once, here, and
/// the URL.
#[derive(Debug, Clone)]
pub struct Database {
    pub kind: DbKind,
    pub url: SecretString,
}

impl Database {
    /// `url`, the value of the configuration key `key`.
    fn resolve(key: &str, url: SecretString) -> anyhow::Result<Self> {
        let kind = db_kind(url.expose_secret()).map_err(|scheme| {
            anyhow::anyhow!(
                "invalid configuration: {key} must start with sqlite:// or mysql://, got scheme {scheme:?}"
            )
        })?;
        Ok(Self { kind, url })
    }
}

impl Config {
    /// Loads the configuration: defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.is_file() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Yaml::file_exact(file));
        }
        figment = figment.merge(
            Env::prefixed("BOOKSTORE_")
                .filter(|key| is_config_variable(key.as_str()))
                .split("__"),
        );
        // figment reads environment values as YAML-like data (`00123` is a number); text keys
        // are put back as they were written.
        for (key, value) in verbatim_text_from_env() {
            figment = figment.merge(figment::providers::Serialized::default(&key, value));
        }
        let config: Config = figment.extract().map_err(|err| {
            // One line per problem, each naming its key and where the value came from.
            let lines: Vec<String> = err.into_iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("invalid configuration: {}", lines.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=100).contains(&self.web.page_size) {
            bail!(
                "invalid configuration: web.page_size must be between 1 and 100, got {}",
                self.web.page_size
            );
        }
        if self.db.max_connections == 0 {
            bail!("invalid configuration: db.max_connections must be at least 1");
        }
        self.catalog_db()?;
        if let Some(ratio) = self.telemetry.sampling_ratio
            && !(0.0..=1.0).contains(&ratio)
        {
            bail!(
                "invalid configuration: telemetry.sampling_ratio must be between 0 and 1, got {ratio}"
            );
        }
        if let Some(endpoint) = &self.telemetry.otlp_endpoint
            && !endpoint.is_empty()
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            bail!(
                "invalid configuration: telemetry.otlp_endpoint must be an http:// or https:// URL, got {endpoint:?}"
            );
        }
        let events = &self.events;
        if events.topic.trim().is_empty() || events.catalog_topic.trim().is_empty() {
            bail!("invalid configuration: events.topic and events.catalog_topic must not be empty");
        }
        if events.topic == events.catalog_topic {
            // The catalog topic is compacted by key: searches on it would be lost.
            bail!("invalid configuration: events.catalog_topic must differ from events.topic");
        }
        if events.partitions == 0 || events.replication_factor == 0 {
            bail!(
                "invalid configuration: events.partitions and events.replication_factor must be at least 1"
            );
        }
        if events.queue_capacity == 0 || events.batch_size == 0 {
            bail!(
                "invalid configuration: events.queue_capacity and events.batch_size must be at least 1"
            );
        }
        if !(1_000..=1_000_000_000).contains(&events.max_message_bytes) {
            bail!(
                "invalid configuration: events.max_message_bytes must be between 1000 and 1000000000, got {}",
                events.max_message_bytes
            );
        }
        if events.queue_max_bytes < events.max_message_bytes {
            bail!(
                "invalid configuration: events.queue_max_bytes ({}) must be at least events.max_message_bytes ({})",
                events.queue_max_bytes,
                events.max_message_bytes
            );
        }
        if events.outbox_max_attempts == 0 {
            bail!("invalid configuration: events.outbox_max_attempts must be at least 1");
        }
        if events.backend == EventsBackend::Kafka && events.broker_list().is_empty() {
            bail!(
                "invalid configuration: events.brokers must name at least one host:port when events.backend is kafka"
            );
        }
        let trend = &self.trend;
        if trend.half_life == 0 || trend.user_window == 0 {
            bail!(
                "invalid configuration: trend.half_life and trend.user_window must be at least 1 second"
            );
        }
        if trend.user_cap == 0 || trend.client_cap == 0 || trend.max_trends == 0 {
            bail!(
                "invalid configuration: trend.user_cap, trend.client_cap and trend.max_trends must be at least 1"
            );
        }
        if !(trend.min_score.is_finite() && trend.min_score > 0.0) {
            bail!("invalid configuration: trend.min_score must be a positive number");
        }
        if trend.group_id.trim().is_empty() {
            bail!("invalid configuration: trend.group_id must not be empty");
        }
        let recommend = &self.recommend;
        if recommend.half_life == 0 {
            bail!("invalid configuration: recommend.half_life must be at least 1 second");
        }
        if recommend.results_per_event == 0
            || recommend.history_per_event == 0
            || recommend.books_per_query == 0
            || recommend.related_per_query == 0
            || recommend.popular_books == 0
            || recommend.profile_books == 0
            || recommend.profile_authors == 0
            || recommend.profile_queries == 0
            || recommend.profile_shown == 0
            || recommend.profile_viewed == 0
            || recommend.similar_per_book == 0
            || recommend.coview_window == 0
            || recommend.profile_ttl == 0
            || recommend.batch_size == 0
            || recommend.max_connections == 0
        {
            bail!(
                "invalid configuration: recommend.results_per_event, recommend.history_per_event, recommend.books_per_query, recommend.related_per_query, recommend.popular_books, recommend.profile_* (profile_ttl too), recommend.similar_per_book, recommend.coview_window, recommend.batch_size and recommend.max_connections must be at least 1"
            );
        }
        if recommend.group_id.trim().is_empty() {
            bail!("invalid configuration: recommend.group_id must not be empty");
        }
        self.recommend_db()?;
        if self.web.remote_timeout_ms == 0 {
            bail!("invalid configuration: web.remote_timeout_ms must be at least 1");
        }
        if self.web.live_refresh_ms < 100 {
            bail!(
                "invalid configuration: web.live_refresh_ms must be at least 100, got {}",
                self.web.live_refresh_ms
            );
        }
        if let Some(secret) = self.configured_cookie_secret() {
            if secret.expose().chars().count() < 32 {
                bail!(
                    "invalid configuration: web.cookie_secret must be at least 32 characters (for example `openssl rand -hex 32`)"
                );
            }
        }
        if let Some(url) = self.web.public_url.as_deref().filter(|u| !u.is_empty()) {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!(
                    "invalid configuration: web.public_url must start with http:// or https://, got {url:?}"
                );
            }
        }
        self.trusted_proxies()?;
        let http = &self.http;
        if http.header_read_timeout_ms == 0
            || http.idle_timeout_ms == 0
            || http.request_timeout_ms == 0
            || http.max_connections == 0
        {
            bail!(
                "invalid configuration: http.header_read_timeout_ms, http.idle_timeout_ms, http.request_timeout_ms and http.max_connections must be at least 1"
            );
        }
        for (service, listen, ops) in [
            ("web", self.web.listen, self.web.ops_listen),
            ("trend", self.trend.listen, self.trend.ops_listen),
            (
                "recommend",
                self.recommend.listen,
                self.recommend.ops_listen,
            ),
        ] {
            if ops == OpsListen::Addr(listen) && listen.port() != 0 {
                bail!(
                    "invalid configuration: {service}.ops_listen must differ from {service}.listen ({listen}); `same` serves the operational endpoints on {service}.listen"
                );
            }
        }
        Ok(())
    }

    /// `web.trusted_proxies`, parsed: an address is a block of one.
    pub fn trusted_proxies(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.web
            .trusted_proxies
            .iter()
            .map(|item| {
                item.parse::<ipnet::IpNet>()
                    .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "invalid configuration: web.trusted_proxies: {item:?} is neither an IP address nor a CIDR block"
                        )
                    })
            })
            .collect()
    }

    /// Whether the visitor cookie is `Secure`: `web.cookie_secure`, else whether
    /// `web.public_url` is https.
    pub fn cookie_secure(&self) -> bool {
        self.web.cookie_secure.unwrap_or_else(|| {
            self.web
                .public_url
                .as_deref()
                .is_some_and(|url| url.starts_with("https://"))
        })
    }

    /// The key that signs visitor ids: `web.cookie_secret`, else the one in
    /// `<data_dir>/cookie_secret`, made (random, readable by the owner only) on first use.
    pub fn cookie_secret(&self) -> anyhow::Result<SecretString> {
        if let Some(secret) = self.configured_cookie_secret() {
            return Ok(secret.0.clone());
        }
        self.ensure_data_dir()?;
        let path = self.data_dir.join("cookie_secret");
        if !path.exists() {
            let secret = random_secret();
            match write_new_secret(&self.data_dir, &path, &secret) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "made a new secret for visitor cookies");
                    return Ok(SecretString::from(secret));
                }
                // Another process made it first: use theirs, below.
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!("cannot create the cookie secret {}", path.display())
                    });
                }
            }
        }
        // A process that made the file a moment ago may still be writing it (on a file system
        // without hard links): give it a second.
        let mut waited = Duration::ZERO;
        loop {
            let secret = std::fs::read_to_string(&path)
                .map(|text| text.trim().to_owned())
                .with_context(|| format!("cannot read the cookie secret {}", path.display()))?;
            if secret.chars().count() >= 32 {
                return Ok(SecretString::from(secret));
            }
            if waited >= Duration::from_secs(1) {
                bail!(
                    "the cookie secret {} is shorter than 32 characters; delete it to have a new one made",
                    path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
            waited += Duration::from_millis(50);
        }
    }

    /// `web.cookie_secret` unless unset or empty.
    fn configured_cookie_secret(&self) -> Option<&Secret> {
        self.web
            .cookie_secret
            .as_ref()
            .filter(|s| !s.expose().is_empty())
    }

    /// The trend service the page calls, if any.
    pub fn trend_url(&self) -> Option<String> {
        match &self.web.trend_url {
            Some(url) if url.trim().is_empty() => None,
            Some(url) => Some(url.clone()),
            None => Some(format!("http://{}", self.trend.listen)),
        }
    }

    /// The recommendation service the page calls, if any.
    pub fn recommend_url(&self) -> Option<String> {
        match &self.web.recommend_url {
            Some(url) if url.trim().is_empty() => None,
            Some(url) => Some(url.clone()),
            None => Some(format!("http://{}", self.recommend.listen)),
        }
    }

    /// The recommendation store's URL, defaulting to a SQLite file in the data dir.
    pub fn recommend_db_url(&self) -> SecretString {
        match &self.recommend.db_url {
            Some(url) => url.0.clone(),
            None => SecretString::from(format!(
                "sqlite://{}",
                self.data_dir.join("recommend.db").display()
            )),
        }
    }

    /// The catalog database's URL, defaulting to a SQLite file in the data dir.
    pub fn db_url(&self) -> SecretString {
        match &self.db.url {
            Some(url) => url.0.clone(),
            None => SecretString::from(format!(
                "sqlite://{}",
                self.data_dir.join("bookstore.db").display()
            )),
        }
    }

    /// The catalog database (`db.url`).
    pub fn catalog_db(&self) -> anyhow::Result<Database> {
        Database::resolve("db.url", self.db_url())
    }

    /// The recommendation store's database (`recommend.db_url`).
    pub fn recommend_db(&self) -> anyhow::Result<Database> {
        Database::resolve("recommend.db_url", self.recommend_db_url())
    }

    /// Creates the data dir if the configuration uses it.
    pub fn ensure_data_dir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.data_dir).with_context(|| {
            format!(
                "cannot create the data dir {} (data_dir)",
                self.data_dir.display()
            )
        })
    }
}

/// Writes `secret` to `path`, readable by its owner only, unless `path` exists
/// (`AlreadyExists`). It is written whole to a draft beside it, then linked into place, so that a
/// process starting at the same moment sees no secret or the whole one; where the file system
/// has no hard links, it is created in place. Drafts a crash left behind are removed.
fn write_new_secret(dir: &Path, path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let create = |target: &Path| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(target)?;
        file.write_all(secret.as_bytes())?;
        file.sync_all()
    };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".cookie_secret.")
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let draft = dir.join(format!(".cookie_secret.{}", uuid::Uuid::new_v4().simple()));
    let linked = create(&draft).and_then(|()| std::fs::hard_link(&draft, path));
    let _ = std::fs::remove_file(&draft);
    match linked {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => create(path),
        done => done,
    }
}

/// 32 random bytes (rand's thread generator: ChaCha seeded by the operating system), as 64
/// hexadecimal digits.
fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The kind of database a URL names, from its scheme (the scheme when it names none): the one
/// place a URL is read for it ([`Config::catalog_db`], [`Config::recommend_db`]).
pub fn db_kind(url: &str) -> Result<DbKind, String> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    match scheme {
        "sqlite" => Ok(DbKind::Sqlite),
        "mysql" | "mariadb" => Ok(DbKind::MySql),
        _ => Err(scheme.to_owned()),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment's large error.
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_default() {
        let config: Config = Figment::new().extract().unwrap();
        assert_eq!(config.web.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(config.web.page_size, 5);
        assert!(config.web.admin_token.is_none());
        assert_eq!(config.catalog_db().unwrap().kind, DbKind::Sqlite);
        assert_eq!(config.events.backend, EventsBackend::Embedded);
        assert_eq!(config.events.topic, "lr-book-searches");
        assert_eq!(config.events.partitions, 3);
        assert_eq!(config.events.replication_factor, 1);
        assert_eq!(config.web.ops_listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.trend.ops_listen.to_string(), "127.0.0.1:9001");
        assert_eq!(config.recommend.ops_listen.to_string(), "127.0.0.1:9002");
        assert_eq!(config.http.limits(), bookstore_http::Limits::default());
        assert!(
            config
                .db_url()
                .expose_secret()
                .ends_with("bookstore-data/bookstore.db")
        );
    }

    #[test]
    fn files_and_environment_override_defaults_and_name_bad_keys() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "bookstore.yaml",
                "web:\n  page_size: 7\n  admin_token: from-file\ndb:\n  url: mysql://u:p@127.0.0.1:3306/b\n",
            )?;
            jail.set_env("BOOKSTORE_WEB__LISTEN", "127.0.0.1:18000");
            jail.set_env("BOOKSTORE_WEB__ADMIN_TOKEN", "12345");
            // A tool's own variables share the prefix but are not config.
            jail.set_env("BOOKSTORE_TEST_KAFKA_BROKERS", "not config");
            jail.set_env("BOOKSTORE_SERVICES_DIR", "not config either");
            jail.set_env("BOOKSTORE_SHUTDOWN_TIMEOUT_MS", "1234");
            jail.set_env("BOOKSTORE_CONFIG", "bookstore.yaml");
            let config = Config::load(Some(Path::new("bookstore.yaml"))).unwrap();
            assert_eq!(config.web.page_size, 7);
            assert_eq!(config.shutdown_timeout_ms, 1234);
            assert_eq!(config.web.listen.port(), 18000);
            assert_eq!(config.web.admin_token.as_ref().unwrap().expose(), "12345");
            assert_eq!(config.catalog_db().unwrap().kind, DbKind::MySql);

            jail.set_env("BOOKSTORE_RECOMMEND__OPS_LISTEN", "same");
            jail.set_env("BOOKSTORE_TREND__OPS_LISTEN", "0.0.0.0:9101");
            jail.set_env("BOOKSTORE_HTTP__MAX_CONNECTIONS", "64");
            jail.set_env("BOOKSTORE_HTTP__IDLE_TIMEOUT_MS", "1500");
            let config = Config::load(None).unwrap();
            assert_eq!(config.recommend.ops_listen, OpsListen::Same);
            assert_eq!(config.trend.ops_listen.to_string(), "0.0.0.0:9101");
            assert_eq!(config.http.limits().max_connections, 64);
            assert_eq!(
                config.http.limits().idle_timeout,
                Duration::from_millis(1500)
            );

            jail.set_env("BOOKSTORE_EVENTS__BACKEND", "kafka");
            jail.set_env("BOOKSTORE_EVENTS__BROKERS", "a:9092, b:9093");
            jail.set_env(
                "BOOKSTORE_EVENTS__PROPERTIES__SECURITY_PROTOCOL",
                "SASL_SSL",
            );
            let config = Config::load(Some(Path::new("bookstore.yaml"))).unwrap();
            assert_eq!(config.events.backend, EventsBackend::Kafka);
            assert_eq!(config.events.broker_list(), ["a:9092", "b:9093"]);
            assert_eq!(
                config
                    .events
                    .librdkafka_properties()
                    .get("security.protocol")
                    .map(String::as_str),
                Some("SASL_SSL")
            );

            jail.set_env("BOOKSTORE_EVENTS__BACKEND", "carrier-pigeon");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.to_ascii_lowercase().contains("events.backend"), "{err}");
            jail.set_env("BOOKSTORE_EVENTS__BACKEND", "embedded");

            assert_eq!(Config::load(None).unwrap().events.format, WireFormat::V1);
            jail.set_env("BOOKSTORE_EVENTS__FORMAT", "tutorial");
            assert_eq!(
                Config::load(None).unwrap().events.format,
                WireFormat::Tutorial
            );
            jail.set_env("BOOKSTORE_EVENTS__FORMAT", "v0");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.to_ascii_lowercase().contains("events.format"), "{err}");
            assert!(err.contains("`v1` or `tutorial`"), "{err}");
            jail.set_env("BOOKSTORE_EVENTS__FORMAT", "v1");
            assert_eq!(Config::load(None).unwrap().events.format, WireFormat::V1);

            jail.set_env("BOOKSTORE_WEB__PAGE_SIZE", "many");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("page_size"), "{err}");
            assert!(!err.contains('\n'), "{err}");
            Ok(())
        });
    }

    #[test]
    fn text_from_the_environment_is_taken_as_written() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BOOKSTORE_WEB__ADMIN_TOKEN", "00123");
            jail.set_env("BOOKSTORE_TREND__GROUP_ID", "007");
            jail.set_env("BOOKSTORE_EVENTS__TOPIC", "1e3");
            jail.set_env("BOOKSTORE_EVENTS__PROPERTIES__SASL_PASSWORD", " 0042 ");
            jail.set_env("BOOKSTORE_WEB__COOKIE_SECRET", "0".repeat(40));
            jail.set_env("BOOKSTORE_WEB__PAGE_SIZE", "7");
            let config = Config::load(None).unwrap();
            assert_eq!(config.web.admin_token.as_ref().unwrap().expose(), "00123");
            assert_eq!(config.trend.group_id, "007");
            assert_eq!(config.events.topic, "1e3");
            assert_eq!(
                config.events.librdkafka_properties()["sasl.password"],
                " 0042 "
            );
            assert_eq!(
                config.web.cookie_secret.as_ref().unwrap().expose(),
                "0".repeat(40)
            );
            assert_eq!(config.web.page_size, 7, "numbers are still numbers");
            Ok(())
        });
    }

    #[test]
    fn visitor_cookie_settings() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(None).unwrap();
            assert!(!config.cookie_secure());
            assert!(config.trusted_proxies().unwrap().is_empty());
            jail.set_env("BOOKSTORE_WEB__PUBLIC_URL", "https://books.example");
            jail.set_env(
                "BOOKSTORE_WEB__TRUSTED_PROXIES",
                "10.0.0.0/8, 192.0.2.1,::1",
            );
            let config = Config::load(None).unwrap();
            assert!(config.cookie_secure());
            let proxies = config.trusted_proxies().unwrap();
            assert_eq!(proxies.len(), 3);
            assert!(proxies[1].contains(&"192.0.2.1".parse::<std::net::IpAddr>().unwrap()));
            jail.set_env("BOOKSTORE_WEB__COOKIE_SECURE", "false");
            assert!(!Config::load(None).unwrap().cookie_secure());
            jail.set_env(
                "BOOKSTORE_WEB__TRUSTED_PROXIES",
                "10.0.0.0/8,not-an-address",
            );
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("web.trusted_proxies"), "{err}");
            jail.set_env("BOOKSTORE_WEB__TRUSTED_PROXIES", "");
            jail.set_env("BOOKSTORE_WEB__COOKIE_SECRET", "short");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("web.cookie_secret"), "{err}");
            jail.set_env("BOOKSTORE_WEB__COOKIE_SECRET", "");
            jail.set_env("BOOKSTORE_WEB__PUBLIC_URL", "books.example");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("web.public_url"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_cookie_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        // Processes starting together agree on one secret.
        let made: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| config.cookie_secret().unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().expose_secret().to_owned())
                .collect()
        });
        assert!(made.iter().all(|s| *s == made[0]), "{made:?}");
        let first = config.cookie_secret().unwrap();
        assert_eq!(first.expose_secret(), made[0]);
        assert_eq!(first.expose_secret().len(), 64);
        let files: Vec<_> = std::fs::read_dir(dir.path().join("data"))
            .unwrap()
            .collect();
        assert_eq!(files.len(), 1, "no draft left behind");
        let again = config.cookie_secret().unwrap();
        assert_eq!(first.expose_secret(), again.expose_secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("data/cookie_secret"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "readable by its owner only: {mode:o}");
        }
        let other_dir = tempfile::tempdir().unwrap();
        let other = Config {
            data_dir: other_dir.path().to_owned(),
            ..Config::default()
        };
        assert_ne!(
            other.cookie_secret().unwrap().expose_secret(),
            first.expose_secret()
        );
        let configured = Config {
            web: WebConfig {
                cookie_secret: Some(Secret::from("s".repeat(32))),
                ..WebConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(
            configured.cookie_secret().unwrap().expose_secret(),
            "s".repeat(32)
        );
    }

    #[test]
    fn retention_applies_to_every_topic_but_the_compacted_catalog() {
        let events = EventsConfig::default();
        assert_eq!(
            events.retention_age(),
            Some(Duration::from_secs(168 * 3600))
        );
        assert_eq!(events.retention_size(), Some(256 * 1024 * 1024));
        let retention = events.retention();
        assert_eq!(retention.max_age, events.retention_age());
        assert_eq!(retention.max_bytes, Some(256 * 1024 * 1024));
        assert!(retention.compacted.contains("lr-book-catalog"));
        assert!(!retention.compacted.contains("lr-book-searches"));
        let settings = |topic: &str| -> BTreeMap<String, String> {
            events.kafka_topic_configs(topic).into_iter().collect()
        };
        let catalog = settings("lr-book-catalog");
        assert_eq!(catalog["cleanup.policy"], "compact");
        assert!(!catalog.contains_key("retention.ms"));
        let searches = settings("lr-book-searches");
        assert_eq!(searches["cleanup.policy"], "delete");
        assert_eq!(searches["retention.ms"], "604800000");
        assert_eq!(searches["retention.bytes"], "268435456");
        // Segments of a quarter of each bound, so that Kafka can delete within a quarter.
        assert_eq!(searches["segment.ms"], "151200000");
        assert_eq!(searches["segment.bytes"], "67108864");
        assert_eq!(settings("lr-book-searches.dlq"), searches);
        // 0 keeps everything.
        let unbounded = EventsConfig {
            retention_hours: 0,
            retention_bytes: 0,
            ..EventsConfig::default()
        };
        assert_eq!(unbounded.retention().max_age, None);
        assert_eq!(unbounded.retention().max_bytes, None);
        let configs: BTreeMap<String, String> = unbounded
            .kafka_topic_configs("lr-book-searches")
            .into_iter()
            .collect();
        assert_eq!(configs["retention.ms"], "-1");
        assert_eq!(configs["retention.bytes"], "-1");
        assert!(!configs.contains_key("segment.ms"));
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/production.example.yaml");
        let config: Config = Figment::new()
            .merge(Yaml::file_exact(&path))
            .extract()
            .unwrap();
        config.validate().unwrap();
        assert_eq!(config.catalog_db().unwrap().kind, DbKind::MySql);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.yaml", "web:\n  lisen: 127.0.0.1:1\n")?;
            let err = Config::load(Some(Path::new("typo.yaml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("lisen"), "{err}");
            // A misspelt section in the environment is refused too.
            jail.set_env("BOOKSTORE_WEBB__LISTEN", "127.0.0.1:1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("webb"), "{err}");
            jail.clear_env();
            jail.create_file("bad.yaml", "db:\n  url: postgres://x\n")?;
            let err = Config::load(Some(Path::new("bad.yaml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("db.url"), "{err}");
            jail.create_file("ops.yaml", "web:\n  ops_listen: somewhere\n")?;
            let err = Config::load(Some(Path::new("ops.yaml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("ops_listen"), "{err}");
            jail.create_file(
                "clash.yaml",
                "trend:\n  listen: 127.0.0.1:8001\n  ops_listen: 127.0.0.1:8001\n",
            )?;
            let err = Config::load(Some(Path::new("clash.yaml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("trend.ops_listen"), "{err}");
            jail.create_file("slow.yaml", "http:\n  header_read_timeout_ms: 0\n")?;
            let err = Config::load(Some(Path::new("slow.yaml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("http.header_read_timeout_ms"), "{err}");
            jail.create_file(
                "same.yaml",
                "events:\n  topic: books\n  catalog_topic: books\n",
            )?;
            let err = Config::load(Some(Path::new("same.yaml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("events.catalog_topic"), "{err}");
            jail.create_file("zero.yaml", "web:\n  page_size: 0\n")?;
            let err = Config::load(Some(Path::new("zero.yaml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("web.page_size"), "{err}");
            jail.create_file("refresh.yaml", "web:\n  live_refresh_ms: 5\n")?;
            let err = Config::load(Some(Path::new("refresh.yaml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("web.live_refresh_ms"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_publisher_and_outbox_bounds_are_checked() {
        let config: Config = Figment::new().extract().unwrap();
        assert_eq!(config.events.queue_max_bytes, 32 * 1024 * 1024);
        assert_eq!(config.events.max_message_bytes, 1_000_000);
        assert_eq!(config.events.outbox_max_attempts, 5);
        figment::Jail::expect_with(|jail| {
            for (yaml, key) in [
                (
                    "events:\n  queue_max_bytes: 999999\n",
                    "events.queue_max_bytes",
                ),
                (
                    "events:\n  max_message_bytes: 999\n",
                    "events.max_message_bytes",
                ),
                (
                    "events:\n  outbox_max_attempts: 0\n",
                    "events.outbox_max_attempts",
                ),
            ] {
                jail.create_file("bounds.yaml", yaml)?;
                let err = Config::load(Some(Path::new("bounds.yaml")))
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(key), "{err}");
            }
            jail.create_file(
                "bounds.yaml",
                "events:\n  queue_max_bytes: 2000\n  max_message_bytes: 2000\n",
            )?;
            let config = Config::load(Some(Path::new("bounds.yaml"))).unwrap();
            assert_eq!(config.events.queue_max_bytes, 2_000);
            Ok(())
        });
    }
}
