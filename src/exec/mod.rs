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
