//! Scratch files and directories, and what happens to them when a run is
//! interrupted.
//!
//! Every scratch name starts with `.triton-compose-KIND-PID.START-`: the
//! process that owns it and that process's start time (so a reused pid is
//! not mistaken for the owner). A run sweeps the leftovers of runs that are
//! gone (killed with SIGKILL, say) from the directories it writes in, and
//! never touches a live run's. SIGINT and SIGTERM set a flag that the long
//! loops check ([`check`], [`Interruptible`]): the run stops with an error,
//! and its scratch, staging and partial blobs go away as it unwinds.

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

const MARK: &str = ".triton-compose-";

static INTERRUPTED: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Makes SIGINT and SIGTERM stop the run at its next check instead of
/// killing it outright.
pub fn install_signal_handlers() -> Result<()> {
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal ends the process at once (exit 130): first the
        // check of the flag the first one set, then the flag.
        signal_hook::flag::register_conditional_shutdown(signal, 130, flag().clone())
            .and_then(|_| signal_hook::flag::register(signal, flag().clone()))
            .map_err(|e| Error::new("cannot install signal handlers").with_source(e))?;
    }
    Ok(())
}

pub fn interrupted() -> bool {
    flag().load(Ordering::Relaxed)
}

/// The error of an interrupted run.
pub fn interruption() -> Error {
    Error::new(
        "interrupted (SIGINT or SIGTERM); nothing was written, and scratch files were removed",
    )
}

/// Fails once the run has been interrupted.
pub(crate) fn check() -> Result<()> {
    if interrupted() {
        return Err(interruption());
    }
    Ok(())
}

/// A reader that fails once the run has been interrupted.
pub(crate) struct Interruptible<R>(pub R);

impl<R: Read> Read for Interruptible<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if interrupted() {
            return Err(io::Error::other(interruption()));
        }
        self.0.read(buf)
    }
}

/// A check a job makes besides the interruption flag: true when it is to
/// stop now (a `serve` prebuild giving way to a pull).
pub(crate) type Stop<'a> = &'a (dyn Fn() -> bool + Sync);

/// A reader that fails once `stop` says so.
pub(crate) struct Stoppable<'a, R> {
    pub inner: R,
    pub stop: Option<Stop<'a>>,
}

impl<R: Read> Read for Stoppable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.is_some_and(|stop| stop()) {
            return Err(io::Error::other("stopped to give way"));
        }
        self.inner.read(buf)
    }
}

/// The start time of a process (clock ticks since boot), from /proc.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn owner() -> String {
    let pid = std::process::id();
    format!("{pid}.{}", start_time(pid).unwrap_or(0))
}

/// The prefix for a scratch name of this run.
pub(crate) fn prefix(kind: &str) -> String {
    format!("{MARK}{kind}-{}-", owner())
}

/// The owner a scratch name records, if it is one of ours.
fn owner_of(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix(MARK)?;
    let owner = rest.split('-').nth(1)?;
    let (pid, start) = owner.split_once('.')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// Removes from `dir` the scratch that runs which are gone left behind.
/// Returns how many entries were removed.
pub(crate) fn sweep(dir: &Path) -> usize {
    let removed = remove_scratch(dir, |pid, start| start_time(pid) != Some(start));
    for path in &removed {
        tracing::info!("removed {}, left by a run that is gone", path.display());
    }
    removed.len()
}

/// Removes from `dir` the scratch of this run, as it ends: what a task it
/// abandoned (a compose stopped by a signal) may still hold.
pub(crate) fn remove_own(dir: &Path) -> usize {
    let me = std::process::id();
    let started = start_time(me);
    let removed = remove_scratch(dir, |pid, start| pid == me && started == Some(start));
    for path in &removed {
        tracing::debug!("removed {}, this run's", path.display());
    }
    removed.len()
}

/// Removes the scratch entries of `dir` whose owner `remove(pid, start)`
/// says; returns their paths.
fn remove_scratch(dir: &Path, remove: impl Fn(u32, u64) -> bool) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some((pid, start)) = name.to_str().and_then(owner_of) else {
            continue;
        };
        if !remove(pid, start) {
            continue;
        }
        let path = entry.path();
        let gone = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
        if gone.is_ok() {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_owner_and_only_dead_owners_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join(format!("{}x", prefix("scratch")));
        std::fs::create_dir(&mine).unwrap();
        // pid 1's start time is not 424242 ticks: a run that is gone.
        let dead = dir.path().join(".triton-compose-scratch-1.424242-abc");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("blob"), b"x").unwrap();
        let other = dir.path().join("unrelated");
        std::fs::write(&other, b"x").unwrap();
        assert_eq!(owner_of(".triton-compose-oci-12.34-xyz"), Some((12, 34)));
        assert_eq!(sweep(dir.path()), 1);
        assert!(mine.exists() && other.exists() && !dead.exists());
    }
}
