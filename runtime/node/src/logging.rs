//! Logs through `tracing`, as human text or JSON lines; panics go there too.
//! With telemetry on, abi's trace spans also go to the OTLP exporter.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Log filter when `RUST_LOG` is unset or unusable.
const DEFAULT_FILTER: &str = "info,openraft=warn";

/// Installs the global subscriber (`RUST_LOG` filters logs, default `info`).
///
/// The trace spans (target `abi::trace`) are turned off for the log output:
/// they are for the exporter, and printing them would prefix every log line
/// inside a request with its span. The exporter's layer has its own filter,
/// so `RUST_LOG=warn` does not stop tracing.
pub fn init(json: bool, telemetry: Option<&abi_telemetry::Telemetry>) {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_FILTER.into());
    let spec = format!("{spec},{}=off", abi_runtime::trace::TARGET);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.boxed()
    };
    // `Targets` (target=level directives) is a static filter; `EnvFilter`
    // takes a lock on every span's creation, enter and exit to track
    // span-field directives, two per request on the gateway's path. It is
    // used only when `RUST_LOG` has such directives.
    let fmt = match spec.parse::<Targets>() {
        Ok(targets) => fmt.with_filter(targets).boxed(),
        Err(_) => {
            let filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| {
                EnvFilter::new(format!(
                    "{DEFAULT_FILTER},{}=off",
                    abi_runtime::trace::TARGET
                ))
            });
            fmt.with_filter(filter).boxed()
        }
    };
    let otel = telemetry.map(|t| t.layer());
    tracing_subscriber::registry().with(otel).with(fmt).init();
    // Actor panics are caught by ractor and handled by supervisors; log them
    // as structured errors instead of raw stderr text.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        tracing::error!(%location, panic = %payload, "panic");
    }));
}
