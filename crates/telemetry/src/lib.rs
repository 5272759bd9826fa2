//! Distributed tracing: `tracing` spans exported as OpenTelemetry spans over OTLP (HTTP and
//! protobuf), and the W3C trace context (`traceparent`) carried from process to process: in the
//! headers of HTTP requests and in the headers of events (on Kafka and on the embedded log).
//!
//! Off unless an OTLP endpoint is configured. When off, no OpenTelemetry layer is installed:
//! [`current_traceparent`] answers `None` after one relaxed atomic load, and the helpers that set
//! parents or links do nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Link, SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SamplingResult, SdkTracerProvider,
    ShouldSample,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The W3C trace context header, in HTTP requests and in events.
pub const TRACEPARENT: &str = "traceparent";

/// The longest `traceparent` value taken from outside (a version-00 value is 55 bytes; later
/// versions may append fields).
const MAX_TRACEPARENT: usize = 256;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// What tracing exports, and where.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TracingSettings {
    /// The OTLP/HTTP base URL (`http://host:4318`); traces go to `<endpoint>/v1/traces`. `None`:
    /// the standard `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`, and
    /// tracing is off when neither is set.
    pub otlp_endpoint: Option<String>,
    /// The share of new traces recorded (parent-based: a trace started upstream keeps its
    /// caller's decision). `None`: the standard `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`,
    /// else every trace.
    pub sampling_ratio: Option<f64>,
    /// `service.name` of the spans, unless `OTEL_SERVICE_NAME` says otherwise.
    pub service_name: String,
}

impl TracingSettings {
    /// Whether spans are exported: an endpoint is configured here or in the standard variables,
    /// and neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` turns it off.
    pub fn enabled(&self) -> bool {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let endpoint = self.otlp_endpoint.as_deref().is_some_and(|e| !e.is_empty())
            || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        endpoint && !disabled
    }
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.sampling_ratio must be between 0 and 1, got {0}")]
    Ratio(f64),
    #[error("cannot create the OTLP exporter: {0}")]
    Exporter(String),
}

/// The running exporter. [`Tracing::shutdown`] exports what is still queued; call it outside
/// the async runtime (the exporter's HTTP client blocks).
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Exports the spans still queued, waiting at most `within`, then stops.
    pub fn shutdown(self, within: std::time::Duration) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(error) = self.provider.shutdown_with_timeout(within) {
            eprintln!("warning: tracing: the last spans were not exported: {error}");
        }
    }
}

/// The layer that turns `tracing` spans into OpenTelemetry spans and exports them, or `None`
/// when tracing is off. Spans are batched and exported from a thread of their own; when the
/// exporter cannot keep up, spans past its queue (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048) are dropped,
/// never waited for.
#[allow(clippy::type_complexity)]
pub fn layer<S>(
    settings: &TracingSettings,
) -> Result<Option<(Box<dyn Layer<S> + Send + Sync>, Tracing)>, TelemetryError>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    if !settings.enabled() {
        return Ok(None);
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
    if let Some(endpoint) = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        exporter = exporter.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
    }
    let exporter = exporter
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let service_name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| settings.service_name.clone());
    let resource = Resource::builder()
        .with_service_name(service_name)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let ratio = settings.sampling_ratio.unwrap_or_else(ratio_from_env);
    if !(0.0..=1.0).contains(&ratio) {
        return Err(TelemetryError::Ratio(ratio));
    }
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .with_sampler(FollowLinks(Sampler::ParentBased(Box::new(
            Sampler::TraceIdRatioBased(ratio),
        ))))
        .build();
    let tracer = provider.tracer("bookstore");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    ENABLED.store(true, Ordering::Relaxed);
    // A span's parent is the `tracing` span it was created in (or the one set from a
    // `traceparent`), never a context left attached to the thread: with context activation, a
    // task resumed on a thread where another task's span was entered could take that one's.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_context_activation(false)
        .with_error_records_to_exceptions(true);
    Ok(Some((Box::new(layer), Tracing { provider })))
}

/// The share of new traces the standard variables ask for: `OTEL_TRACES_SAMPLER` set to
/// `traceidratio` or `parentbased_traceidratio` with `OTEL_TRACES_SAMPLER_ARG`, or an
/// `always_off`; every trace otherwise.
fn ratio_from_env() -> f64 {
    let sampler = std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default();
    match sampler.trim() {
        "traceidratio" | "parentbased_traceidratio" => std::env::var("OTEL_TRACES_SAMPLER_ARG")
            .ok()
            .and_then(|arg| arg.trim().parse::<f64>().ok())
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .unwrap_or(1.0),
        "always_off" | "parentbased_always_off" => 0.0,
        _ => 1.0,
    }
}

/// The sampler: parent-based with a ratio for new traces, except that a new trace whose span
/// links to a recorded span is recorded too. A consumer's batch span is such a span: it links to
/// the spans that published its events, and must be there when one of theirs is followed.
#[derive(Debug, Clone)]
struct FollowLinks(Sampler);

impl ShouldSample for FollowLinks {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let has_parent = parent_context.is_some_and(|cx| cx.span().span_context().is_valid());
        if !has_parent && links.iter().any(|link| link.span_context.is_sampled()) {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: TraceState::default(),
            };
        }
        self.0
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// Whether spans are being exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The `traceparent` of the current span, for an event published from it; `None` when tracing is
/// off or the span is not recorded.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&Span::current().context())
}

fn traceparent_of(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::with_capacity(2);
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The remote span a `traceparent` value names, if it is a valid one.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    if value.len() > MAX_TRACEPARENT {
        return None;
    }
    let carrier = OneHeader(value);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Makes `span` a child of the span `traceparent` names (an event's producer). Call it before the
/// span is entered. Does nothing when tracing is off or the value is not a valid one.
pub fn set_parent(span: &Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(remote) = traceparent.and_then(parse_traceparent) {
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
}

/// Links `span` to the span `traceparent` names (one event of a batch).
pub fn add_link(span: &Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(remote) = traceparent.and_then(parse_traceparent) {
        span.add_link(remote);
    }
}

/// Links `span` to `to` (an event's span to the batch that applied it).
pub fn link_to(span: &Span, to: &Span) {
    if !enabled() {
        return;
    }
    let cx = to.context();
    let target = cx.span().span_context().clone();
    if target.is_valid() {
        span.add_link(target);
    }
}

/// Makes `span` (an incoming request's) a child of the caller's span named in the request's
/// `traceparent` header, if any.
pub fn set_parent_from_http(span: &Span, headers: &http::HeaderMap) {
    if !enabled() {
        return;
    }
    let traceparent = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok());
    set_parent(span, traceparent);
}

/// Adds the current span's `traceparent` to an outgoing request's headers; outside any recorded
/// span (a background call), one that asks the callee not to record the call, which would
/// otherwise start a trace of its own there.
pub fn inject_http(headers: &mut http::HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    } else {
        inject_unsampled(headers);
    }
}

/// Adds a `traceparent` that asks the callee not to record the call.
fn inject_unsampled(headers: &mut http::HeaderMap) {
    if !enabled() {
        return;
    }
    let ids = RandomIdGenerator::default();
    let span = SpanContext::new(
        ids.new_trace_id(),
        ids.new_span_id(),
        TraceFlags::default(),
        true,
        TraceState::default(),
    );
    let cx = Context::new().with_remote_span_context(span);
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// The trace id of `span` in hex, for logs; `None` when tracing is off or the span is not
/// recorded.
pub fn trace_id(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// Records `span`'s trace id in its `trace_id` field (declared `tracing::field::Empty`), so that
/// every log line inside it names the trace.
pub fn record_trace_id(span: &Span) {
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id.as_str());
    }
}

struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_names_its_span() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = parse_traceparent(value).expect("valid");
        assert_eq!(
            span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(span.span_id().to_string(), "00f067aa0ba902b7");
        assert!(span.is_sampled());
        assert!(span.is_remote());
        let back = traceparent_of(&Context::new().with_remote_span_context(span));
        assert_eq!(back.as_deref(), Some(value));
    }

    #[test]
    fn a_new_trace_linked_to_a_recorded_span_is_recorded_whatever_the_ratio() {
        let never = FollowLinks(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            0.0,
        ))));
        let recorded = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        let unrecorded =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .expect("valid");
        let decide = |links: Vec<Link>| {
            never
                .should_sample(
                    None,
                    TraceId::from(7_u128),
                    "batch",
                    &SpanKind::Internal,
                    &[],
                    &links,
                )
                .decision
        };
        assert_eq!(
            decide(vec![Link::with_context(recorded.clone())]),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(
            decide(vec![Link::with_context(unrecorded)]),
            SamplingDecision::Drop
        );
        assert_eq!(decide(Vec::new()), SamplingDecision::Drop);
        // A span with a parent follows its parent, not its links.
        let parent = Context::new().with_remote_span_context(
            parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")
                .expect("valid"),
        );
        let child = never.should_sample(
            Some(&parent),
            TraceId::from(7_u128),
            "process",
            &SpanKind::Consumer,
            &[],
            &[Link::with_context(recorded)],
        );
        assert_eq!(child.decision, SamplingDecision::Drop);
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for value in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "not a traceparent",
        ] {
            assert!(parse_traceparent(value).is_none(), "{value:?}");
        }
        let long = format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-{}",
            "a".repeat(300)
        );
        assert!(parse_traceparent(&long).is_none());
    }

    #[test]
    fn off_without_an_endpoint() {
        let settings = TracingSettings {
            otlp_endpoint: None,
            sampling_ratio: None,
            service_name: "test".to_owned(),
        };
        // The test environment sets none of the OTEL_EXPORTER_OTLP_* variables.
        if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
            && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        {
            assert!(!settings.enabled());
        }
        let with = TracingSettings {
            otlp_endpoint: Some("http://127.0.0.1:4318".to_owned()),
            ..settings
        };
        if std::env::var_os("OTEL_SDK_DISABLED").is_none()
            && std::env::var_os("OTEL_TRACES_EXPORTER").is_none()
        {
            assert!(with.enabled());
        }
        assert!(current_traceparent().is_none());
    }
}
