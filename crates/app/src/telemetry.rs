//! Logs through `tracing`: readable text on a terminal, or JSON lines; the level comes from
//! `RUST_LOG` (default `info`). With an OTLP endpoint configured (`telemetry.otlp_endpoint` or
//! the standard `OTEL_EXPORTER_OTLP_ENDPOINT`), the same spans are also exported as OpenTelemetry
//! traces, and the request and batch spans carry their `trace_id` into the log lines.

use bookstore_telemetry::{Tracing, TracingSettings};
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Subscriber, span};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the logger, and the trace exporter when `tracing` is enabled. Returns the exporter,
/// to be shut down (outside the async runtime) when the process ends, and the error that kept
/// tracing from starting, if any (logging then works without it).
pub fn init(
    format: LogFormat,
    tracing: &TracingSettings,
) -> (Option<Tracing>, Option<bookstore_telemetry::TelemetryError>) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let (otel, exporter, error) = match bookstore_telemetry::layer(tracing) {
        Ok(Some((layer, exporter))) => (Some(layer), Some(exporter), None),
        Ok(None) => (None, None, None),
        Err(error) => (None, None, Some(error)),
    };
    let filter = LogsOrSpans {
        logs: filter,
        spans: otel.is_some(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(fmt)
        .try_init();
    (exporter, error)
}

/// The one filter of both layers: what `RUST_LOG` enables, and, when spans are exported, every
/// span of this workspace at INFO and above whatever `RUST_LOG` says (`RUST_LOG=warn` must not
/// turn tracing off). Log lines stay as `RUST_LOG` says: a span only adds context to them.
///
/// One global filter rather than one per layer: a library that asks whether a `log` record is
/// enabled and then logs nothing leaves a per-layer filter's verdict behind on its thread, and the
/// next span made there was dropped by mistake (seen with the MySQL driver).
struct LogsOrSpans {
    logs: EnvFilter,
    spans: bool,
}

impl LogsOrSpans {
    fn exported(&self, metadata: &Metadata<'_>) -> bool {
        self.spans
            && metadata.is_span()
            && *metadata.level() <= Level::INFO
            && metadata.target().starts_with("bookstore")
    }
}

impl<S> Layer<S> for LogsOrSpans
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.exported(metadata) {
            Interest::always()
        } else {
            <EnvFilter as Layer<S>>::register_callsite(&self.logs, metadata)
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: LayerContext<'_, S>) -> bool {
        self.exported(metadata) || <EnvFilter as Layer<S>>::enabled(&self.logs, metadata, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // No hint from the log filter (span-field directives) stays no hint.
        let logs = <EnvFilter as Layer<S>>::max_level_hint(&self.logs)?;
        Some(if self.spans {
            logs.max(LevelFilter::INFO)
        } else {
            logs
        })
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: LayerContext<'_, S>) {
        <EnvFilter as Layer<S>>::on_new_span(&self.logs, attrs, id, ctx);
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: LayerContext<'_, S>) {
        <EnvFilter as Layer<S>>::on_record(&self.logs, id, values, ctx);
    }

    fn on_enter(&self, id: &span::Id, ctx: LayerContext<'_, S>) {
        <EnvFilter as Layer<S>>::on_enter(&self.logs, id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: LayerContext<'_, S>) {
        <EnvFilter as Layer<S>>::on_exit(&self.logs, id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: LayerContext<'_, S>) {
        <EnvFilter as Layer<S>>::on_close(&self.logs, id, ctx);
    }
}
