//! Providers create and destroy the hosts a lab runs on. `ssh` hosts exist
//! already (nothing to create); `netns` makes them on this machine.

pub mod netns;
