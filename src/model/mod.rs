//! `model`: the validated topology. Every address is parsed and assigned, every
//! reference resolved to a typed id, every default filled in. Built only by
//! [`build`]; the compiler and everything after it see only these types.

mod build;
pub mod names;

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::Serialize;

pub use build::build;
pub use names::{is_interface_name, is_safe_path, is_simple_name, normal_path};

pub use crate::spec::{
    CheckKind, Init, Mode, OsFamily, Protocol, Provider, Role, Scheduler, SyncMode, VrrpState, WebServer,
};

/// Phases in the order they run. A phase starts only when every host finished
/// the previous one. (Here, not in `plan`, because a topology's own steps
/// name their phase and are validated against this list.)
pub const PHASES: [&str; 5] = ["prepare", "network", "services", "balancer", "persist"];

/// How much work one template rendering may do (minijinja's fuel): a
/// topology's templates are validated with it and compiled with it.
pub const TEMPLATE_FUEL: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct HostId(pub usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct NetId(pub usize);

#[derive(Debug, Clone)]
pub struct Topology {
    pub lab: String,
    pub description: Option<String>,
    /// The lab's LVS mode; `None` for a lab with no services (plain hosts
    /// taking steps), whose playbooks see DR (see [`Topology::lvs_mode`]).
    pub mode: Option<Mode>,
    pub provider: Option<Provider>,
    pub networks: Vec<Network>,
    pub hosts: Vec<Host>,
    pub services: Vec<Service>,
    pub web: Web,
    pub ha: Option<Ha>,
    pub storage: Option<Storage>,
    pub verify: Verify,
    /// Management network (netns labs): this machine's address on it, and each host's.
    pub mgmt: Option<Mgmt>,
    /// The topology's own checks (`checks:`), run by `verify`.
    pub checks: Vec<UserCheck>,
    /// The file it was read from, for diagnostics about extra steps.
    pub source: std::sync::Arc<crate::diag::SourceFile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mgmt {
    pub cidr: Ipv4Network,
    /// This machine's address on the management bridge (the first host address).
    pub gateway: Ipv4Addr,
    /// Per host, in host order.
    pub addresses: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Network {
    pub name: String,
    pub cidr: Ipv4Network,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub id: HostId,
    pub name: String,
    pub role: Role,
    pub interfaces: Vec<Interface>,
    /// Default route.
    pub gateway: Option<Ipv4Addr>,
    pub routes: Vec<Route>,
    pub ssh: SshTarget,
    pub init: Init,
    /// Declared in the topology, or detected from the host by commands that
    /// connect (`up`, `drift`, `verify`) before they compile; `None`: assumed
    /// debian (`lvslab plan` says so).
    pub os: Option<OsFamily>,
    /// Install the packages its role needs when missing.
    pub packages: bool,
    /// Write what a reboot would lose where the host restores it at boot.
    pub persist: bool,
    /// `own_addresses` as the topology gives it (the default depends on the
    /// provider the lab runs with: see `compile::context`).
    pub own_addresses: Option<bool>,
    /// The rendered web page (real servers only).
    pub page: Option<String>,
    /// Steps the topology adds to this host (playbook step format).
    pub extra_steps: Vec<ExtraStep>,
    /// The variables its steps' templates see: the lab's, its groups' (in
    /// the order the file names them), then its own, each over the one before.
    pub vars: BTreeMap<String, serde_yaml::Value>,
}

/// A step written in the topology itself, compiled like a playbook step.
#[derive(Debug, Clone)]
pub struct ExtraStep {
    pub phase: &'static str,
    pub step: serde_yaml::Mapping,
    pub span: crate::diag::Span,
}

#[derive(Debug, Clone, Serialize)]
pub struct Interface {
    pub name: String,
    pub network: NetId,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Route {
    pub to: Ipv4Network,
    pub via: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize)]
pub struct SshTarget {
    pub host: String,
    pub user: String,
    pub port: u16,
    pub key: Option<String>,
    pub passphrase_env: Option<String>,
    pub known_hosts: Option<String>,
    pub jump: Option<String>,
    pub become_root: bool,
    pub connect_timeout_secs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum ServiceKey {
    Tcp(u16),
    Udp(u16),
    Fwmark(u32),
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub vip: Ipv4Addr,
    pub key: ServiceKey,
    /// For firewall-mark services: which protocol/ports get the mark.
    pub mark_protocol: Protocol,
    pub mark_ports: Vec<u16>,
    pub scheduler: Scheduler,
    pub sched_flags: Vec<String>,
    pub persistence: Option<u32>,
    pub persistence_netmask: Option<Ipv4Addr>,
    pub one_packet: bool,
    pub mode: Mode,
    pub directors: Vec<HostId>,
    pub real_servers: Vec<RealServer>,
    /// keepalived's `virtual_server` owns this service: no ipvsadm step manages it.
    pub keepalived: bool,
    pub health_check: Option<HealthCheck>,
    pub sorry_server: Option<(Ipv4Addr, u16)>,
    pub delay_loop: u32,
    pub quorum: Option<u32>,
    pub inhibit_on_failure: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RealServer {
    pub host: HostId,
    pub address: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub path: String,
    pub status_code: Option<u16>,
    pub digest: Option<String>,
    pub script: Option<String>,
    pub connect_timeout: u32,
    pub retry: u32,
    pub delay_before_retry: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Web {
    pub server: WebServer,
    /// As declared, or `/var/www/html`.
    pub docroot: String,
    pub docroot_declared: bool,
}

impl Web {
    /// The document root on a host of this family: as declared, else where
    /// the family's package serves from.
    pub fn docroot_for(&self, os: OsFamily) -> String {
        match (self.docroot_declared, self.server, os) {
            (false, WebServer::Nginx, OsFamily::Rhel) => "/usr/share/nginx/html".into(),
            _ => self.docroot.clone(),
        }
    }

    /// The web server's systemd unit on a host of this family.
    pub fn unit_for(&self, os: OsFamily) -> &'static str {
        match (self.server, os) {
            (WebServer::Busybox, _) => "busybox-httpd",
            (WebServer::Apache2 | WebServer::Httpd, OsFamily::Debian) => "apache2",
            (WebServer::Apache2 | WebServer::Httpd, OsFamily::Rhel) => "httpd",
            (WebServer::Nginx, _) => "nginx",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Ha {
    pub instances: Vec<VrrpInstance>,
}

/// A secret value: never printed, never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

#[derive(Debug, Clone)]
pub struct VrrpInstance {
    pub name: String,
    pub virtual_router_id: u8,
    pub advert_int: u32,
    pub auth_pass: Option<Secret>,
    pub vips: Vec<Ipv4Addr>,
    pub network: NetId,
    pub nopreempt: bool,
    pub preempt_delay: Option<u32>,
    pub unicast: bool,
    pub track_script: Option<TrackScript>,
    pub members: Vec<VrrpMember>,
}

/// keepalived's `vrrp_script`, tracked by one instance.
#[derive(Debug, Clone, Serialize)]
pub struct TrackScript {
    pub run: String,
    pub interval: u32,
    /// Priority change while the script fails (negative); 0: go to FAULT.
    pub weight: i32,
    pub fall: u32,
    pub rise: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct VrrpMember {
    pub host: HostId,
    pub state: VrrpState,
    pub priority: u8,
    /// The member's interface and address on the instance's network.
    pub interface: String,
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, Serialize)]
pub struct Storage {
    pub host: HostId,
    pub address: Ipv4Addr,
    pub export: String,
    pub mount: String,
    pub sync: SyncMode,
}

/// A check the topology declares: `run` on `host`, expecting `status` and/or
/// output matching `output`, retried every `interval_secs` until `timeout_secs`.
#[derive(Debug, Clone)]
pub struct UserCheck {
    pub name: String,
    pub description: Option<String>,
    pub host: HostId,
    pub run: String,
    pub status: i32,
    pub output: Option<regex::Regex>,
    pub timeout_secs: u32,
    pub interval_secs: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verify {
    pub client: Option<HostId>,
    pub requests: u32,
    pub tolerance: f64,
}

impl Topology {
    /// The mode the playbooks see: the declared one, DR for a lab without
    /// services (no playbook step of a plain lab depends on it).
    pub fn lvs_mode(&self) -> Mode {
        self.mode.unwrap_or(Mode::Dr)
    }

    pub fn host(&self, id: HostId) -> &Host {
        &self.hosts[id.0]
    }

    pub fn network(&self, id: NetId) -> &Network {
        &self.networks[id.0]
    }

    pub fn host_by_name(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn hosts_with_role(&self, role: Role) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(move |h| h.role == role)
    }

    /// Services that a director runs (whether through ipvsadm or keepalived).
    pub fn services_of_director(&self, id: HostId) -> impl Iterator<Item = &Service> {
        self.services.iter().filter(move |s| s.directors.contains(&id))
    }

    /// Services a real server takes part in.
    pub fn services_of_real_server(&self, id: HostId) -> impl Iterator<Item = &Service> {
        self.services
            .iter()
            .filter(move |s| s.real_servers.iter().any(|r| r.host == id))
    }
}

impl Host {
    /// Its OS family: declared, detected, or assumed debian.
    pub fn os_family(&self) -> OsFamily {
        self.os.unwrap_or(OsFamily::Debian)
    }

    pub fn interface_on(&self, net: NetId) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.network == net)
    }

    pub fn has_address(&self, addr: Ipv4Addr) -> bool {
        self.interfaces.iter().any(|i| i.address == addr)
    }

    /// The first address, used where a host is named by one address (e.g. its page).
    pub fn primary_address(&self) -> Option<Ipv4Addr> {
        self.interfaces.first().map(|i| i.address)
    }
}

impl Service {
    /// The service as ipvsadm names it: `-t 192.168.4.5:80`, `-f 8`.
    pub fn ipvsadm_target(&self) -> String {
        match self.key {
            ServiceKey::Tcp(p) => format!("-t {}:{p}", self.vip),
            ServiceKey::Udp(p) => format!("-u {}:{p}", self.vip),
            ServiceKey::Fwmark(m) => format!("-f {m}"),
        }
    }

    pub fn port(&self) -> Option<u16> {
        match self.key {
            ServiceKey::Tcp(p) | ServiceKey::Udp(p) => Some(p),
            ServiceKey::Fwmark(_) => None,
        }
    }
}
