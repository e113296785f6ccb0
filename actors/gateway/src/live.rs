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
