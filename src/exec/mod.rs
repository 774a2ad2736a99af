//! `exec`: the only part of lvslab that touches hosts. Transports reach
//! hosts; the runner applies a plan through them.

pub mod connect;
pub mod converge;
pub mod runner;
pub mod ssh;
pub mod state;
pub mod transport;
