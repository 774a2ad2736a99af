//! `exec`: the only part of lvslab that touches hosts. Transports reach
//! hosts; the runner applies a plan through them.

pub mod batch;
pub mod connect;
pub mod converge;
pub mod runner;
pub mod ssh;
pub mod transport;

/// Where a long provider operation's progress goes (a VM booting): the
/// report layer draws it, the provider only says what happens. Here so that
/// neither knows the other.
pub trait Progress {
    /// What is happening now.
    fn step(&self, msg: &str);
    /// A line that stays.
    fn done(&self, msg: &str);
}

/// Run blocking work (processes, file systems, sleeps) from async code
/// without stalling the runtime's other tasks: on the multi-threaded runtime
/// (the binary's) the worker hands its tasks to others meanwhile; on a
/// current-thread runtime (some tests) it simply runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
