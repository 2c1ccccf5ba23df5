//! Transfer progress: a bar per blob when stderr is a terminal, and one log
//! line per blob otherwise (CI logs stay short). `-q` turns both off.

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

/// Wraps a transfer of `len` bytes described by `label` ("pulling sha256:…").
pub fn track<R: Read>(inner: R, len: u64, label: String) -> Tracked<R> {
    let bar = if BARS.load(Ordering::Relaxed) {
        let bar = multi().add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:40!} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12}",
            )
            .expect("valid template"),
        );
        bar.set_message(label);
        Some(bar)
    } else {
        if !QUIET.load(Ordering::Relaxed) {
            tracing::info!("{label} ({})", crate::scan::human_size(len));
        }
        None
    };
    Tracked { inner, bar }
}

pub struct Tracked<R> {
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
