//! Providers create and destroy the hosts a lab runs on. `ssh` hosts exist
//! already (nothing to create); `netns` makes them on this machine; `vm` boots
//! a disposable VM with a distribution kernel and makes them inside it.

pub mod netns;
pub mod vm;
