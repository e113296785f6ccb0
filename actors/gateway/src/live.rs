//! Rolling per-second request statistics for the dashboard's live charts.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

const WINDOW_SECS: usize = 120;
const MAX_SAMPLES: usize = 2048;

#[derive(Debug, Default)]
struct Bucket {
    second: u64,
    count: u64,
    errors: u64,
    latencies_ms: Vec<f32>,
}

/// One point of a chart.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Unix second.
    pub t: u64,
    /// Requests answered in that second.
    pub rps: u64,
    /// 5xx answers in that second.
    pub errors: u64,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: f32,
}

/// The last two minutes of requests, one bucket per second.
#[derive(Debug, Default)]
pub struct LiveStats {
    buckets: Mutex<VecDeque<Bucket>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl LiveStats {
    /// Records one answered request.
    pub fn record(&self, latency_ms: f32, server_error: bool) {
        let sec = now_secs();
        let mut b = self.buckets.lock();
        if b.back().is_none_or(|last| last.second != sec) {
            b.push_back(Bucket {
                second: sec,
                ..Default::default()
            });
            while b.len() > WINDOW_SECS {
                b.pop_front();
            }
        }
        if let Some(last) = b.back_mut() {
            last.count += 1;
            last.errors += u64::from(server_error);
            if last.latencies_ms.len() < MAX_SAMPLES {
                last.latencies_ms.push(latency_ms);
            }
        }
    }

    /// Points for the last `secs` complete seconds (missing seconds are zero).
    pub fn series(&self, secs: u64) -> Vec<Point> {
        let now = now_secs();
        let b = self.buckets.lock();
        (now.saturating_sub(secs)..now)
            .map(|t| match b.iter().find(|x| x.second == t) {
                Some(x) => {
                    let mut l = x.latencies_ms.clone();
                    l.sort_by(f32::total_cmp);
                    let p99 = if l.is_empty() {
                        0.0
                    } else {
                        l[((l.len() - 1) as f64 * 0.99).round() as usize]
                    };
                    Point {
                        t,
                        rps: x.count,
                        errors: x.errors,
                        p99_ms: p99,
                    }
                }
                None => Point {
                    t,
                    rps: 0,
                    errors: 0,
                    p99_ms: 0.0,
                },
            })
            .collect()
    }
}

/// Sum of every series of counter `name` (with its `_total` suffix) in an
/// OpenMetrics exposition; 0 when absent. Lets the dashboard chart a
/// subsystem's counter without the gateway depending on that subsystem.
pub fn counter_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counter_sum_adds_every_series_of_one_family() {
        let text = "# TYPE t counter\nt_total{model=\"a\"} 3\nt_total{model=\"b\"} 4.5\nt_totally 9\nt_created 1\n";
        assert_eq!(super::counter_sum(text, "t_total"), 7.5);
        assert_eq!(super::counter_sum(text, "u_total"), 0.0);
    }
}
