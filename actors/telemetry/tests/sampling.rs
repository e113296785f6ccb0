//! The trace sampling ratio changed while the process runs. In a test binary of its
//! own: the ratio is process-wide, and the sink tests (threads of one process under
//! `cargo test`) need every request sampled while they run.

use abi_telemetry::{Telemetry, TelemetryConfig};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn the_sampling_ratio_changes_while_the_process_runs() {
    use abi_runtime::trace::{SamplingError, sample_new, sampling_ratio, set_sampling_ratio};
    let t = Telemetry::new(TelemetryConfig::new(format!(
        "http://127.0.0.1:{}/v1/traces",
        free_port()
    )))
    .expect("config");
    assert!(t.install_propagation(), "first hook of this process");
    assert_eq!(sampling_ratio(), Some(1.0));
    assert!((0..100).all(|_| sample_new()));
    assert_eq!(set_sampling_ratio(0.0), Ok(1.0));
    assert!((0..100).all(|_| !sample_new()));
    assert_eq!(set_sampling_ratio(1.5), Err(SamplingError::OutOfRange(1.5)));
    assert!(matches!(
        set_sampling_ratio(f64::NAN),
        Err(SamplingError::OutOfRange(_))
    ));
    assert_eq!(sampling_ratio(), Some(0.0), "refused ratios change nothing");
    assert_eq!(set_sampling_ratio(0.25), Ok(0.0));
    let sampled = (0..10_000).filter(|_| sample_new()).count();
    assert!(
        (2_000..3_000).contains(&sampled),
        "{sampled} of 10000 at 0.25"
    );
}
