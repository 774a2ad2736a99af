//! Processes on this machine, named by pid *and* start time (a pid alone may
//! be reused by an unrelated process): identity, liveness and signals.
//! The only place lvslab signals a process.

use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// A process as recorded: its pid and its start time (clock ticks since boot,
/// field 22 of `/proc/PID/stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub start: u64,
}

/// State letter and start time of a pid, if it exists (zombies included).
fn stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The start time of a running process (`None` if there is none, or it has
/// finished and only waits to be reaped).
pub fn start_time(pid: u32) -> Option<u64> {
    let (state, start) = stat(pid)?;
    // A zombie thread-group leader whose other threads still run (qemu
    // shutting down, say) is still running.
    if state == 'Z' && threads(pid) <= 1 {
        return None;
    }
    Some(start)
}

impl Proc {
    /// The running process with this pid, as it is now.
    pub fn find(pid: u32) -> Option<Proc> {
        start_time(pid).map(|start| Proc { pid, start })
    }

    /// Whether this very process still runs (not a later one with its pid).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }

    /// Send a signal if it is still this process. `false` if it is gone.
    pub fn signal(&self, sig: Signal) -> bool {
        let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) else {
            return false;
        };
        self.alive() && kill_process(pid, sig).is_ok()
    }
}

/// Stop processes: TERM, up to `grace` for them to go, then KILL and up to
/// `grace` again. Returns those still running (normally none). Returns only
/// when every process that could stop has stopped.
pub fn stop_all(procs: &[Proc], grace: Duration) -> Vec<Proc> {
    for p in procs {
        p.signal(Signal::TERM);
    }
    if wait_gone(procs, grace) {
        return Vec::new();
    }
    for p in procs {
        p.signal(Signal::KILL);
    }
    wait_gone(procs, grace);
    procs.iter().copied().filter(Proc::alive).collect()
}

/// Wait until none of `procs` runs, at most `limit`. `true` if none runs.
pub fn wait_gone(procs: &[Proc], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !procs.iter().any(Proc::alive) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_known_by_pid_and_start_time() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let p = Proc::find(child.id()).expect("running");
        assert!(p.alive());
        let other = Proc {
            pid: p.pid,
            start: p.start + 1,
        };
        assert!(!other.alive(), "same pid, another start: another process");
        assert!(!other.signal(Signal::KILL), "never signalled");
        assert!(p.alive());
        // Stopped and not yet reaped (a zombie of ours): gone.
        assert!(stop_all(&[p], Duration::from_secs(2)).is_empty());
        assert!(!p.alive());
        child.wait().unwrap();
        assert!(Proc::find(p.pid).is_none_or(|q| q.start != p.start));
    }
}
