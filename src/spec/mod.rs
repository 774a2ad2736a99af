//! `spec`: the topology file as written, with a position for every value.
//!
//! These types are deliberately loose (strings and wide integers): addresses,
//! ranges and cross-references are checked by [`crate::model`], which reports
//! every problem at once. Only the *shape* (mapping vs list, unknown keys) is
//! checked here. Nothing after `model` sees these types.

pub mod de;
pub mod yaml;

use std::sync::Arc;

use indexmap::IndexMap;
use serde::Deserialize;

pub use de::Spanned;

use crate::diag::{Diagnostic, SourceFile};

pub type Name = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(rename = "the topology")]
pub struct TopologySpec {
    pub lab: Name,
    #[serde(default)]
    pub description: Option<String>,
    /// The LVS forwarding mode; needed when the lab has services.
    #[serde(default)]
    pub mode: Option<Spanned<Mode>>,
    #[serde(default)]
    pub provider: Option<Spanned<Provider>>,
    #[serde(default)]
    pub defaults: DefaultsSpec,
    /// Left out when no host is on a lab network (plain hosts taking steps).
    #[serde(default)]
    pub networks: IndexMap<Name, NetworkSpec>,
    pub hosts: IndexMap<Name, HostSpec>,
    #[serde(default)]
    pub services: Vec<Spanned<ServiceSpec>>,
    #[serde(default)]
    pub web: WebSpec,
    #[serde(default)]
    pub ha: Option<Spanned<HaSpec>>,
    #[serde(default)]
    pub storage: Option<Spanned<StorageSpec>>,
    #[serde(default)]
    pub verify: VerifySpec,
    /// netns labs: a management network in this machine's root namespace on
    /// which every host runs its own sshd (`lvslab up --via ssh`).
    #[serde(default)]
    pub mgmt: Option<Spanned<MgmtSpec>>,
    /// The topology's own checks, run by `lvslab verify` after the built-in ones.
    #[serde(default)]
    pub checks: Vec<Spanned<CheckSpec>>,
    /// Variables for the templates of every host's steps (a group's and a
    /// host's own override them).
    #[serde(default)]
    pub vars: IndexMap<Name, serde_yaml::Value>,
    /// Named groups of hosts, each with variables for its hosts' steps.
    #[serde(default)]
    pub groups: IndexMap<Name, GroupSpec>,
}

/// A group of hosts and the variables their steps' templates see.
#[derive(Debug, Deserialize)]
#[serde(rename = "group")]
pub struct GroupSpec {
    pub hosts: Vec<Name>,
    #[serde(default)]
    pub vars: IndexMap<Name, serde_yaml::Value>,
}

/// A check written in the topology: a command on a host, its expected exit
/// status and/or an output pattern, optionally retried until a timeout.
#[derive(Debug, Deserialize)]
#[serde(rename = "check")]
pub struct CheckSpec {
    pub name: Spanned<String>,
    /// Shown with the result, on pass and on fail.
    #[serde(default)]
    pub description: Option<String>,
    pub host: Name,
    /// A shell command (run with `sh`).
    pub run: Spanned<String>,
    /// Expected exit status (default 0).
    #[serde(default)]
    pub status: Option<Spanned<i64>>,
    /// A regular expression the output (stdout and stderr) must match.
    #[serde(default)]
    pub output: Option<Spanned<String>>,
    /// Retry until this many seconds have passed (default 0: one try).
    #[serde(default)]
    pub timeout: Option<Spanned<i64>>,
    /// Seconds between tries (default 1).
    #[serde(default)]
    pub interval: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "mgmt")]
pub struct MgmtSpec {
    pub cidr: Spanned<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Nat,
    Dr,
    Tun,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Nat => "nat",
            Mode::Dr => "dr",
            Mode::Tun => "tun",
        }
    }
}

/// Where a lab runs: the one provider kind, used alike by the topology's
/// `provider:`, the `--provider` flag and the lab's record (same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Hosts that exist already, reached over SSH.
    Ssh,
    /// Each host a network namespace (and mount namespace) on this machine.
    Netns,
    /// A disposable VM with a distribution kernel, the hosts namespaces inside it.
    Vm,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Ssh => "ssh",
            Provider::Netns => "netns",
            Provider::Vm => "vm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Client,
    Director,
    RealServer,
    Storage,
    Router,
    /// No lab role: the host takes only the steps the topology gives it (a
    /// plain inventory host). The default when `role:` is left out.
    Host,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Director => "director",
            Role::RealServer => "real_server",
            Role::Storage => "storage",
            Role::Router => "router",
            Role::Host => "host",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    Systemd,
    Daemon,
}

/// The operating-system family of a host: it decides package names (apt or
/// dnf) and the web server's unit and document root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OsFamily {
    #[serde(alias = "ubuntu")]
    Debian,
    #[serde(alias = "centos", alias = "rocky", alias = "almalinux", alias = "fedora")]
    Rhel,
}

impl OsFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            OsFamily::Debian => "debian",
            OsFamily::Rhel => "rhel",
        }
    }

    /// The family named by /etc/os-release (`ID_LIKE` words, then `ID`).
    pub fn from_os_release(words: &str) -> Option<OsFamily> {
        words.split_whitespace().find_map(|w| match w {
            "debian" | "ubuntu" => Some(OsFamily::Debian),
            "rhel" | "centos" | "fedora" | "rocky" | "almalinux" => Some(OsFamily::Rhel),
            _ => None,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename = "defaults")]
pub struct DefaultsSpec {
    #[serde(default)]
    pub ssh: Option<SshSpec>,
    #[serde(default)]
    pub init: Option<Spanned<Init>>,
    /// debian or rhel; detected from the host when not given.
    #[serde(default)]
    pub os: Option<Spanned<OsFamily>>,
    /// Install the packages the host's role needs when missing (default: on
    /// for `provider: ssh`, whose hosts are machines of their own).
    #[serde(default)]
    pub packages: Option<Spanned<bool>>,
    /// Make the lab survive a reboot (sysctl drop-in, boot unit, saved IPVS
    /// table, units enabled); default: on for `provider: ssh` hosts on systemd.
    #[serde(default)]
    pub persist: Option<Spanned<bool>>,
    /// lvslab brings up the host's interfaces and puts the lab's addresses on
    /// them (and `down` removes them); default: on for `provider: ssh`. Off:
    /// the addresses are already there (set by the host's own network
    /// configuration) and lvslab leaves them alone.
    #[serde(default)]
    pub own_addresses: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "network")]
pub struct NetworkSpec {
    pub cidr: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "host")]
pub struct HostSpec {
    /// Left out: a plain host that takes only its `steps`.
    #[serde(default)]
    pub role: Option<Spanned<Role>>,
    #[serde(default)]
    pub interfaces: Vec<Spanned<InterfaceSpec>>,
    /// Default route. For NAT real servers it is set to the director's address when omitted.
    #[serde(default)]
    pub gateway: Option<Spanned<String>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteSpec>>,
    #[serde(default)]
    pub ssh: Option<SshSpec>,
    #[serde(default)]
    pub init: Option<Spanned<Init>>,
    /// debian or rhel; detected from the host when not given.
    #[serde(default)]
    pub os: Option<Spanned<OsFamily>>,
    /// Install the packages the host's role needs when missing (default: on
    /// for `provider: ssh`, whose hosts are machines of their own).
    #[serde(default)]
    pub packages: Option<Spanned<bool>>,
    /// Make the lab survive a reboot (sysctl drop-in, boot unit, saved IPVS
    /// table, units enabled); default: on for `provider: ssh` hosts on systemd.
    #[serde(default)]
    pub persist: Option<Spanned<bool>>,
    /// lvslab brings up the host's interfaces and puts the lab's addresses on
    /// them (and `down` removes them); default: on for `provider: ssh`. Off:
    /// the addresses are already there (set by the host's own network
    /// configuration) and lvslab leaves them alone.
    #[serde(default)]
    pub own_addresses: Option<Spanned<bool>>,
    /// Web page template for this real server (overrides `web.page`).
    #[serde(default)]
    pub page: Option<Spanned<String>>,
    /// Extra steps for this host, in the playbook step format (plus `phase`,
    /// default `services`), applied after the role's own steps of that phase.
    #[serde(default)]
    pub steps: Vec<Spanned<serde_yaml::Value>>,
    /// Variables for this host's steps' templates (over its groups' and the lab's).
    #[serde(default)]
    pub vars: IndexMap<Name, serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "interface")]
pub struct InterfaceSpec {
    #[serde(default)]
    pub name: Option<Name>,
    pub network: Name,
    #[serde(default)]
    pub address: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "route")]
pub struct RouteSpec {
    pub to: Spanned<String>,
    pub via: Spanned<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename = "ssh")]
pub struct SshSpec {
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    #[serde(default)]
    pub user: Option<Spanned<String>>,
    #[serde(default)]
    pub port: Option<Spanned<i64>>,
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// Name of an environment variable holding the key's passphrase (never the passphrase).
    #[serde(default)]
    pub passphrase_env: Option<Spanned<String>>,
    #[serde(default)]
    pub known_hosts: Option<Spanned<String>>,
    #[serde(default)]
    pub jump: Option<Spanned<String>>,
    #[serde(default, rename = "become")]
    pub become_root: Option<bool>,
    #[serde(default)]
    pub connect_timeout: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    Rr,
    Wrr,
    Lc,
    Wlc,
    Lblc,
    Lblcr,
    Dh,
    Sh,
    Sed,
    Nq,
    Fo,
    Ovf,
    Mh,
}

impl Scheduler {
    pub const ALL: [Scheduler; 13] = [
        Self::Rr,
        Self::Wrr,
        Self::Lc,
        Self::Wlc,
        Self::Lblc,
        Self::Lblcr,
        Self::Dh,
        Self::Sh,
        Self::Sed,
        Self::Nq,
        Self::Fo,
        Self::Ovf,
        Self::Mh,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Lblc => "lblc",
            Self::Lblcr => "lblcr",
            Self::Dh => "dh",
            Self::Sh => "sh",
            Self::Sed => "sed",
            Self::Nq => "nq",
            Self::Fo => "fo",
            Self::Ovf => "ovf",
            Self::Mh => "mh",
        }
    }

    /// The `-b` flags this scheduler accepts.
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Self::Sh => &["sh-fallback", "sh-port"],
            Self::Mh => &["mh-fallback", "mh-port"],
            _ => &[],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename = "service")]
pub struct ServiceSpec {
    #[serde(default)]
    pub name: Option<Name>,
    pub vip: Spanned<String>,
    #[serde(default)]
    pub port: Option<Spanned<i64>>,
    #[serde(default)]
    pub protocol: Option<Spanned<Protocol>>,
    /// Firewall-mark service: packets to `vip` on `ports` get this mark.
    #[serde(default)]
    pub fwmark: Option<Spanned<i64>>,
    #[serde(default)]
    pub ports: Vec<Spanned<i64>>,
    #[serde(default)]
    pub scheduler: Option<Spanned<Scheduler>>,
    #[serde(default)]
    pub sched_flags: Vec<Spanned<String>>,
    /// Persistence timeout in seconds (`ipvsadm -p`).
    #[serde(default)]
    pub persistence: Option<Spanned<i64>>,
    /// Persistence granularity (`ipvsadm -M`).
    #[serde(default)]
    pub persistence_netmask: Option<Spanned<String>>,
    /// UDP one-packet scheduling (`ipvsadm -o`).
    #[serde(default)]
    pub one_packet: Option<Spanned<bool>>,
    #[serde(default)]
    pub mode: Option<Spanned<Mode>>,
    #[serde(default)]
    pub directors: Option<Vec<Name>>,
    pub real_servers: Spanned<Vec<RealServerSpec>>,
    #[serde(default)]
    pub health_check: Option<Spanned<HealthCheckSpec>>,
    #[serde(default)]
    pub sorry_server: Option<Spanned<SorryServerSpec>>,
    #[serde(default)]
    pub delay_loop: Option<Spanned<i64>>,
    #[serde(default)]
    pub quorum: Option<Spanned<i64>>,
    #[serde(default)]
    pub inhibit_on_failure: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "real server")]
pub struct RealServerSpec {
    pub host: Name,
    #[serde(default)]
    pub weight: Option<Spanned<i64>>,
    #[serde(default)]
    pub port: Option<Spanned<i64>>,
    /// Which of the host's addresses to balance to (default: the one on a network the director shares).
    #[serde(default)]
    pub address: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    #[serde(alias = "HTTP_GET", alias = "http_get")]
    Http,
    #[serde(alias = "TCP_CHECK", alias = "tcp_check")]
    Tcp,
    #[serde(alias = "MISC_CHECK", alias = "misc_check")]
    Misc,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "health_check")]
pub struct HealthCheckSpec {
    #[serde(rename = "type")]
    pub kind: Spanned<CheckKind>,
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub status_code: Option<Spanned<i64>>,
    #[serde(default)]
    pub digest: Option<Spanned<String>>,
    #[serde(default)]
    pub script: Option<Spanned<String>>,
    #[serde(default)]
    pub connect_timeout: Option<Spanned<i64>>,
    #[serde(default)]
    pub retry: Option<Spanned<i64>>,
    #[serde(default)]
    pub delay_before_retry: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "sorry_server")]
pub struct SorryServerSpec {
    #[serde(default)]
    pub host: Option<Name>,
    #[serde(default)]
    pub address: Option<Spanned<String>>,
    #[serde(default)]
    pub port: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebServer {
    Busybox,
    Apache2,
    Httpd,
    Nginx,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename = "web")]
pub struct WebSpec {
    #[serde(default)]
    pub server: Option<Spanned<WebServer>>,
    #[serde(default)]
    pub docroot: Option<Spanned<String>>,
    /// minijinja template of each real server's page; sees `host.name` and `host.address`.
    #[serde(default)]
    pub page: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "ha")]
pub struct HaSpec {
    pub instances: Vec<Spanned<VrrpInstanceSpec>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum VrrpState {
    #[serde(alias = "master")]
    Master,
    #[serde(alias = "backup")]
    Backup,
}

impl VrrpState {
    pub fn as_str(self) -> &'static str {
        match self {
            VrrpState::Master => "MASTER",
            VrrpState::Backup => "BACKUP",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename = "vrrp instance")]
pub struct VrrpInstanceSpec {
    pub name: Name,
    pub virtual_router_id: Spanned<i64>,
    #[serde(default)]
    pub advert_int: Option<Spanned<i64>>,
    #[serde(default)]
    pub auth_pass: Option<Spanned<String>>,
    /// The name of an environment variable holding `auth_pass` (so the lab
    /// file can be committed without the password).
    #[serde(default)]
    pub auth_pass_env: Option<Spanned<String>>,
    pub vips: Vec<Spanned<String>>,
    #[serde(default)]
    pub nopreempt: Option<Spanned<bool>>,
    #[serde(default)]
    pub preempt_delay: Option<Spanned<i64>>,
    /// Send adverts to the peers' addresses instead of multicast 224.0.0.18.
    #[serde(default)]
    pub unicast: Option<bool>,
    /// A command keepalived runs every `interval` s (`vrrp_script`); while it
    /// fails, the member's priority drops by `weight` (or it goes to FAULT).
    #[serde(default)]
    pub track_script: Option<Spanned<TrackScriptSpec>>,
    pub members: Vec<Spanned<VrrpMemberSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "track_script")]
pub struct TrackScriptSpec {
    pub run: Spanned<String>,
    #[serde(default)]
    pub interval: Option<Spanned<i64>>,
    #[serde(default)]
    pub weight: Option<Spanned<i64>>,
    #[serde(default)]
    pub fall: Option<Spanned<i64>>,
    #[serde(default)]
    pub rise: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "vrrp member")]
pub struct VrrpMemberSpec {
    pub host: Name,
    pub state: Spanned<VrrpState>,
    pub priority: Spanned<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Nfs,
    Rsync,
}

#[derive(Debug, Deserialize)]
#[serde(rename = "storage")]
pub struct StorageSpec {
    pub host: Name,
    /// Directory exported by the storage host.
    pub export: Spanned<String>,
    /// Where each real server mounts it.
    pub mount: Spanned<String>,
    #[serde(default)]
    pub sync: Option<Spanned<SyncMode>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename = "verify")]
pub struct VerifySpec {
    #[serde(default)]
    pub client: Option<Name>,
    #[serde(default)]
    pub requests: Option<Spanned<i64>>,
    /// Allowed deviation of each real server's share, as a fraction (0.1 = ±10%).
    #[serde(default)]
    pub tolerance: Option<Spanned<f64>>,
}

/// Read a topology file's text into spec types, with every shape problem found.
pub fn parse(file: &Arc<SourceFile>) -> (Option<TopologySpec>, Vec<Diagnostic>) {
    match yaml::parse(file) {
        Ok(node) => de::from_node(&node, file),
        Err(d) => (None, vec![d]),
    }
}
