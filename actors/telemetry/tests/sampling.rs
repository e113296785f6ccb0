//! The trace sampling ratio changed while the process runs. In a test binary of its
//! own: the ratio is process-wide, and the sink tests (threads of one process under
//! `cargo test`) need every request sampled while they run.

use abi_telemetry::{Telemetry, TelemetryConfig};

#[test]
fn the_sampling_ratio_changes_while_the_process_runs() {
    use abi_runtime::trace::{SamplingError, sample_new, sampling_ratio, set_sampling_ratio};
    // Nothing is exported here: the endpoint is only validated.
    let t = Telemetry::new(TelemetryConfig::new("http://127.0.0.1:9/v1/traces")).expect("config");
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
