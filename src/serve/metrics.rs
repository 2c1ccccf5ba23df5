//! `/metrics` in Prometheus' text format: requests by kind and status,
//! composes and how long they took, the queue, the state and the store,
//! and the prebuild's progress.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::State;

#[derive(Default)]
pub(super) struct Metrics {
    /// Requests answered, by kind ([`kind`]), method and status.
    pub(super) requests: Mutex<HashMap<(&'static str, String, u16), u64>>,
    pub(super) bytes: AtomicU64,
    pub(super) composes: AtomicU64,
    pub(super) hits: AtomicU64,
    /// New layers of composes taken from the store, and built.
    pub(super) layers_reused: AtomicU64,
    pub(super) layers_built: AtomicU64,
    /// Manifest requests refused because too many selections were pending.
    pub(super) refused: AtomicU64,
    /// How long composes took.
    pub(super) compose_seconds: Mutex<Histogram>,
    /// The store's bytes and bound, as last measured (after each compose
    /// and prebuilt part).
    pub(super) store_bytes: AtomicU64,
    pub(super) store_max_bytes: AtomicU64,
}

/// What a request asked for: `manifest`, `blob`, `tags` (lists), `base`
/// (`/v2/`), `page`, `metrics` or `other`.
pub(super) fn kind(path: &str) -> &'static str {
    if path == "/" || path.starts_with("/tags/") {
        "page"
    } else if path == "/metrics" {
        "metrics"
    } else if path == "/v2" || path == "/v2/" {
        "base"
    } else if !path.starts_with("/v2/") {
        "other"
    } else if path.contains("/manifests/") {
        "manifest"
    } else if path.contains("/blobs/") {
        "blob"
    } else if path.ends_with("/tags/list") {
        "tags"
    } else {
        "other"
    }
}

/// A Prometheus histogram of seconds.
#[derive(Default)]
pub(super) struct Histogram {
    /// Counts at or under each of [`Histogram::BOUNDS`].
    buckets: [u64; 6],
    sum: f64,
    count: u64,
}

impl Histogram {
    const BOUNDS: [f64; 6] = [1.0, 5.0, 15.0, 60.0, 300.0, 1800.0];

    pub(super) fn observe(&mut self, seconds: f64) {
        for (bucket, bound) in self.buckets.iter_mut().zip(Self::BOUNDS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn render(&self, name: &str, help: &str) -> String {
        let mut out = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        for (bound, count) in Self::BOUNDS.iter().zip(self.buckets) {
            out.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {count}\n"));
        }
        out.push_str(&format!(
            "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}\n",
            self.count, self.sum, self.count
        ));
        out
    }
}

/// The counters in Prometheus' text format.
pub(super) fn render(state: &State) -> String {
    let m = &state.metrics;
    let mut out = String::from(
        "# HELP triton_compose_requests_total HTTP requests answered, by what they asked for.\n\
         # TYPE triton_compose_requests_total counter\n",
    );
    let mut requests: Vec<((&str, String, u16), u64)> = m
        .requests
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    requests.sort();
    for ((kind, method, status), count) in requests {
        out.push_str(&format!(
            "triton_compose_requests_total{{kind=\"{kind}\",method=\"{method}\",status=\"{status}\"}} {count}\n"
        ));
    }
    for (name, kind, help, value) in series(state) {
        single(&mut out, name, kind, help, value);
    }
    out.push_str(&prebuild_series(state));
    out.push_str(
        &m.compose_seconds
            .lock()
            .expect("not poisoned")
            .render("triton_compose_compose_seconds", "How long composes took."),
    );
    out
}

/// The prebuild of the pair served: its parts by state, its layers.
fn prebuild_series(state: &State) -> String {
    let Some(generation) = state.current.read().expect("not poisoned").clone() else {
        return String::new();
    };
    let prebuild = &generation.prebuild;
    let mut by_state = [
        ("waiting", 0),
        ("prebuilt", 0),
        ("skipped", 0),
        ("failed", 0),
    ];
    for part in prebuild.parts() {
        let index = match part.status {
            super::prebuild::Status::Waiting => 0,
            super::prebuild::Status::Prebuilt(_) => 1,
            super::prebuild::Status::Skipped(_) => 2,
            super::prebuild::Status::Failed(_) => 3,
        };
        by_state[index].1 += 1;
    }
    let mut out = String::from(
        "# HELP triton_compose_prebuild_parts Parts (the core, each component alone) by prebuild state.\n\
         # TYPE triton_compose_prebuild_parts gauge\n",
    );
    for (name, count) in by_state {
        out.push_str(&format!(
            "triton_compose_prebuild_parts{{state=\"{name}\"}} {count}\n"
        ));
    }
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    for (name, kind, help, value) in [
        (
            "triton_compose_prebuild_finished",
            "gauge",
            "1 once the prebuild is done (or off).",
            u64::from(prebuild.finished()),
        ),
        (
            "triton_compose_prebuild_layers_built_total",
            "counter",
            "Layers the prebuild wrote.",
            count(&prebuild.layers_built),
        ),
        (
            "triton_compose_prebuild_layers_found_total",
            "counter",
            "Layers the prebuild found in the store.",
            count(&prebuild.layers_found),
        ),
        (
            "triton_compose_prebuild_gave_way_total",
            "counter",
            "Times the prebuild stopped to let a pull go first.",
            count(&prebuild.gave_way),
        ),
    ] {
        single(&mut out, name, kind, help, value);
    }
    out
}

/// A series of one value, with its help and type.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    out.push_str(&format!(
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    ));
}

/// The single-valued counters and gauges: name, type, help, value.
fn series(state: &State) -> [(&'static str, &'static str, &'static str, u64); 12] {
    let m = &state.metrics;
    let count = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let pending = state.pending.lock().expect("not poisoned").len() as u64;
    [
        (
            "triton_compose_sent_bytes_total",
            "counter",
            "Body bytes sent.",
            count(&m.bytes),
        ),
        (
            "triton_compose_composes_total",
            "counter",
            "Selections composed.",
            count(&m.composes),
        ),
        (
            "triton_compose_store_hits_total",
            "counter",
            "Manifests served without composing (composed before).",
            count(&m.hits),
        ),
        (
            "triton_compose_store_layer_hits_total",
            "counter",
            "New layers of composes taken from the store.",
            count(&m.layers_reused),
        ),
        (
            "triton_compose_layers_built_total",
            "counter",
            "New layers of composes built.",
            count(&m.layers_built),
        ),
        (
            "triton_compose_refused_total",
            "counter",
            "Manifest requests refused with 429 (too many selections pending).",
            count(&m.refused),
        ),
        (
            "triton_compose_evictions_total",
            "counter",
            "Tags evicted to keep the state under --state-max-size.",
            state.bound.evictions(),
        ),
        (
            "triton_compose_pending_selections",
            "gauge",
            "New selections waiting to be composed or composing.",
            pending,
        ),
        (
            "triton_compose_state_bytes",
            "gauge",
            "Bytes of the composed images kept, as last measured.",
            state.bound.size(),
        ),
        (
            "triton_compose_store_bytes",
            "gauge",
            "Bytes of the store (layers and indexes), as last measured.",
            count(&m.store_bytes),
        ),
        (
            "triton_compose_store_max_bytes",
            "gauge",
            "The store's bound (--store-max-size).",
            count(&m.store_max_bytes),
        ),
        (
            "triton_compose_state_max_bytes",
            "gauge",
            "The bound on them (--state-max-size).",
            state.bound.max(),
        ),
    ]
}
