//! What the lab's record holds besides changes, as plain data: how each host
//! is reached, what the netns provider created on this machine, and the vm
//! provider's VM. Providers fill these in; the record only stores and checks
//! them (it knows nothing about how they are made).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How to reach a host, kept in the lab state so `down LAB` works without the
/// topology file. Holds no secret (a passphrase is only ever named).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    pub address: String,
    pub port: u16,
    pub user: String,
    pub key: Option<PathBuf>,
    pub passphrase_env: Option<String>,
    pub known_hosts: Vec<PathBuf>,
    pub jump: Option<String>,
    pub become_root: bool,
    pub connect_timeout_secs: u32,
}

/// An object the provider created on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Infra {
    /// The process holding a host's namespaces; `start` (from /proc/PID/stat)
    /// tells it apart from a later process that reuses the pid.
    Holder {
        host: String,
        pid: u32,
        start: u64,
    },
    Netns {
        name: String,
    },
    Bridge {
        name: String,
    },
    /// The root-namespace end of a veth pair, and the host it belongs to
    /// (absent in records made before lvslab noted it).
    Veth {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// A directory created in this machine's file system as a mount point.
    Dir {
        path: String,
    },
}

/// Directories each lab host gets a private (tmpfs) copy of, so the same
/// steps as on a real machine run unchanged and hosts never see each other's files.
pub const PRIVATE_DIRS: [&str; 8] = [
    "/run",
    "/tmp",
    "/etc/keepalived",
    "/etc/exports.d",
    "/var/www",
    "/srv",
    "/var/lib/nfs",
    "/var/log",
];

/// Whether `path` is in one of a host's private directories (its own
/// copy); anything else on a netns host is this machine's file system.
pub fn is_private(path: &str) -> bool {
    PRIVATE_DIRS
        .iter()
        .any(|d| path == *d || path.strip_prefix(d).is_some_and(|rest| rest.starts_with('/')))
}

/// The running VM, recorded in the lab state (before qemu starts, so an
/// interrupted `up` is still cleaned up by `down`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    /// This VM's directory on this machine.
    pub dir: PathBuf,
    /// qemu's pid and start time (from /proc/PID/stat), once started.
    pub pid: Option<u32>,
    pub start: Option<u64>,
    /// The loopback port forwarded to the VM's sshd.
    pub port: u16,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// The kernel release it boots.
    pub kernel: String,
}
