//! Progress: a bar per blob transferred, layer read or layer written when
//! stderr is a terminal (bytes and rate), and one log line per transfer
//! otherwise (CI logs stay short; reads and writes log their own line).
//! `-q` turns both off.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

static BARS: AtomicBool = AtomicBool::new(false);
static QUIET: AtomicBool = AtomicBool::new(false);

/// Called once by the CLI: bars only on a terminal, nothing when quiet.
pub fn configure(terminal: bool, quiet: bool) {
    BARS.store(terminal && !quiet, Ordering::Relaxed);
    QUIET.store(quiet, Ordering::Relaxed);
}

fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(MultiProgress::new)
}

/// A bar for `len` bytes, on a terminal only.
pub(crate) fn bar(len: u64, label: String) -> Option<ProgressBar> {
    if !BARS.load(Ordering::Relaxed) {
        return None;
    }
    let bar = multi().add(ProgressBar::new(len));
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:40!} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
        )
        .expect("valid template"),
    );
    bar.set_message(label);
    Some(bar)
}

/// Wraps a transfer of `len` bytes described by `label` ("pulling sha256:…").
pub(crate) fn track<R: Read>(inner: R, len: u64, label: String) -> Tracked<R> {
    if !BARS.load(Ordering::Relaxed) && !QUIET.load(Ordering::Relaxed) {
        tracing::info!("{label} ({})", human_size(len));
    }
    Tracked {
        inner,
        bar: bar(len, label),
    }
}

/// Like [`track`] for reads that log their own line: a bar on a terminal,
/// nothing otherwise.
pub(crate) fn track_quietly<R: Read>(inner: R, len: u64, label: String) -> Tracked<R> {
    Tracked {
        inner,
        bar: bar(len, label),
    }
}

pub(crate) struct Tracked<R> {
    inner: R,
    bar: Option<ProgressBar>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(bar) = &self.bar {
            if n == 0 {
                bar.finish_and_clear();
            } else {
                bar.inc(n as u64);
            }
        }
        Ok(n)
    }
}

impl<R> Drop for Tracked<R> {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A size for people: `512 B`, `1.5 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Times one phase of a run (scan, plan, re-read, write, sink) and logs
/// `phase NAME: S s` when dropped, at debug level (`-v`, or the bench
/// with `TRITON_COMPOSE_LOG=triton_compose::progress=debug`),
/// showing where a compose's time goes.
pub(crate) struct Phase {
    name: &'static str,
    started: std::time::Instant,
}

pub(crate) fn phase(name: &'static str) -> Phase {
    Phase {
        name,
        started: std::time::Instant::now(),
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        tracing::debug!(
            "phase {}: {:.2} s",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }
}
