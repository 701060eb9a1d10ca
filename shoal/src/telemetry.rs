//! Logs and traces. Logs go to stderr, filtered by `SHOAL_LOG` (default `info`). With
//! `SHOAL_OTLP_ENDPOINT` set (`http://collector:4318`), the tracing spans are also
//! exported over OTLP/HTTP (protobuf) to `ENDPOINT/v1/traces`, batched on a thread of
//! their own, filtered by `SHOAL_OTLP_FILTER` (default: info, and debug for Shoal's
//! crates — sessions, usage flushes, admin requests; per-announce spans are `trace`).
//! Unset, no exporter exists and spans cost what `tracing` costs with no subscriber
//! interested in them.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const DEFAULT_OTLP_FILTER: &str = "info,tracker=debug,ingest=debug,node=debug,shoal=debug";

/// What must outlive the program's work: flushes the exporter when dropped.
#[derive(Debug)]
pub(crate) struct Telemetry(Option<SdkTracerProvider>);

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.0.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: flushing traces to the OTLP endpoint failed: {e}");
        }
    }
}

/// Installs the global subscriber for `service` (e.g. `shoal-tracker`).
pub(crate) fn init(service: &str) -> Telemetry {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_env("SHOAL_LOG").unwrap_or_else(|_| "info".into()));
    let endpoint = std::env::var("SHOAL_OTLP_ENDPOINT").ok().filter(|e| !e.trim().is_empty());
    let provider = endpoint.and_then(|e| match provider(&e, service) {
        Ok(p) => Some(p),
        Err(err) => {
            eprintln!("warning: SHOAL_OTLP_ENDPOINT={e}: {err:#}; traces are not exported");
            None
        }
    });
    let traces = provider.as_ref().map(|p| {
        let filter = EnvFilter::try_from_env("SHOAL_OTLP_FILTER").unwrap_or_else(|_| DEFAULT_OTLP_FILTER.into());
        tracing_opentelemetry::layer().with_tracer(p.tracer("shoal")).with_filter(filter)
    });
    tracing_subscriber::registry().with(logs).with(traces).init();
    Telemetry(provider)
}

fn provider(endpoint: &str, service: &str) -> anyhow::Result<SdkTracerProvider> {
    let base = endpoint.trim_end_matches('/');
    let url = if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .map_err(|e| anyhow::anyhow!("building the OTLP exporter: {e}"))?;
    let resource = Resource::builder().with_service_name(service.to_owned()).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}
