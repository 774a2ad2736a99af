//! The netns provider: every lab host is a network namespace *and* a mount
//! namespace on this machine, held open by a long-lived process and
//! registered as `/run/netns/lvslab-<lab>-<host>` (so `ip netns exec` works);
//! every lab network is a bridge, every interface a veth pair.
//!
//! Each object is recorded in the lab state before it is created, and `down`
//! removes exactly the recorded objects (never anything found by name), so an
//! interrupted `up` is cleaned up too and a user's own `lvslab…` interface
//! survives.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::exec::transport::HostConn;
use crate::exec::transport::{LocalTransport, Transport};
use crate::local;
use crate::model::{Mode, Topology};
use crate::process::Proc;
use crate::state::LabState;
pub use crate::state::{Infra, PRIVATE_DIRS};

/// Records an object in the lab state (and saves it) before it is created.
type Record<'a> = &'a dyn Fn(&mut LabState, Infra) -> Result<(), NetnsError>;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("the netns provider needs root: run it with sudo")]
    NotRoot,
    #[error("`{program}` is missing: install the `{package}` package")]
    Missing { program: String, package: String },
    #[error(
        "this kernel cannot load {module} ({detail}); it cannot run {what} here. Run the lab with `--provider vm`, which boots a distribution kernel that has it"
    )]
    Kernel {
        module: String,
        what: String,
        detail: String,
    },
    #[error(transparent)]
    Command(#[from] local::CommandError),
    /// A refusal or a failure with nothing underneath it.
    #[error("{0}")]
    Failed(String),
    /// `what` failed; the cause is the error's source (printed after it).
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot save the lab state")]
    State(#[from] crate::state::StateError),
}

/// `.map_err(io(what))`: `what` failed, caused by the I/O error mapped.
fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> NetnsError {
    let what = what.to_string();
    move |source| NetnsError::Io { what, source }
}

pub fn netns_name(lab: &str, host: &str) -> String {
    format!("lvslab-{lab}-{host}")
}

fn short(prefix: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    format!("{prefix}{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
}

/// Bridge name of a lab network (≤ 15 characters, unique per lab and network).
pub fn bridge_name(lab: &str, net: &str) -> String {
    short("lvb", &[lab, net])
}

/// Root-side and namespace-side temporary names of an interface's veth pair.
pub fn veth_names(lab: &str, host: &str, iface: &str) -> (String, String) {
    (short("lvv", &[lab, host, iface]), short("lvp", &[lab, host, iface]))
}

/// The MAC address of a lab interface: locally administered, derived from
/// its lab, host and name, so an interface made again (after an interrupted
/// `up`, or deleted by hand) has the MAC its neighbours remember.
pub fn mac_address(lab: &str, host: &str, iface: &str) -> String {
    let mut h = Sha256::new();
    for p in [lab, host, iface] {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", d[0], d[1], d[2], d[3], d[4])
}

fn run(argv: &[&str]) -> Result<String, NetnsError> {
    Ok(local::run(argv)?)
}

/// Delete a link (in a namespace, or here), if it is there. Gone already
/// counts as done: a veth's peer goes with it, and a deleted namespace's
/// links go a moment later, in the kernel's own time.
fn del_link(ns: Option<&str>, name: &str) -> Result<(), NetnsError> {
    let exists = || match ns {
        Some(ns) => run(&["ip", "-n", ns, "-o", "link", "show", "dev", name]).is_ok(),
        None => link_exists(name),
    };
    if !exists() {
        return Ok(());
    }
    let r = match ns {
        Some(ns) => run(&["ip", "-n", ns, "link", "del", name]),
        None => run(&["ip", "link", "del", name]),
    };
    match r {
        Err(_) if !exists() => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Everything the provider needs on this machine, checked before anything is created.
pub fn preflight(topo: &Topology) -> Result<(), NetnsError> {
    if !local::is_root() {
        return Err(NetnsError::NotRoot);
    }
    programs(topo)?;
    if let Some(m) = &topo.mgmt {
        // The management network lives in this machine's root namespace: it must
        // not meet a route this machine already has.
        let ours = mgmt_bridge(&topo.lab);
        for line in run(&["ip", "-4", "-o", "route", "show"])?.lines() {
            let mut t = line.split_whitespace();
            let Some(dest) = t.next().and_then(|d| d.parse::<ipnetwork::Ipv4Network>().ok()) else {
                continue;
            };
            let dev = line.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or("");
            if dest.overlaps(m.cidr) && dev != ours {
                return Err(NetnsError::Failed(format!(
                    "the management network {} meets this machine's route `{}`: choose another `mgmt.cidr`",
                    m.cidr,
                    line.trim()
                )));
            }
        }
    }
    kernel(topo)
}

/// Whether this machine can run the lab as namespaces: root, and a kernel
/// that loads what the lab's modes need (ip_vs; ipip for LVS-TUN).
pub fn can_run_here(topo: &Topology) -> Result<(), NetnsError> {
    if !local::is_root() {
        return Err(NetnsError::NotRoot);
    }
    kernel(topo)
}

fn kernel(topo: &Topology) -> Result<(), NetnsError> {
    if !topo.services.is_empty() {
        modprobe("ip_vs", "LVS (IPVS)")?;
    }
    if topo.services.iter().any(|s| s.mode == Mode::Tun) {
        modprobe("ipip", "LVS-TUN")?;
    }
    Ok(())
}

/// The programs the lab's hosts run (this machine's, in namespaces or in the
/// vm provider's VM), each missing one named with its package.
pub fn programs(topo: &Topology) -> Result<(), NetnsError> {
    for (program, package) in [
        ("ip", "iproute2"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("modprobe", "kmod"),
    ] {
        if !local::have(program) {
            return Err(NetnsError::Missing {
                program: program.into(),
                package: package.into(),
            });
        }
    }
    if topo.mgmt.is_some() {
        for (program, package) in [("/usr/sbin/sshd", "openssh-server"), ("ssh-keygen", "openssh-client")] {
            if !local::have(program) {
                return Err(NetnsError::Missing {
                    program: program.into(),
                    package: package.into(),
                });
            }
        }
    }
    if !topo.services.is_empty() {
        for (prog, pkg) in [("ipvsadm", "ipvsadm"), ("busybox", "busybox-static")] {
            if !local::have(prog) {
                return Err(NetnsError::Missing {
                    program: prog.into(),
                    package: pkg.into(),
                });
            }
        }
    }
    // What some labs need: firewall marks, UDP responders, HTTPS, shared storage.
    use crate::model::{ServiceKey, SyncMode};
    let udp = topo.services.iter().any(|s| matches!(s.key, ServiceKey::Udp(_)));
    let marks = topo.services.iter().any(|s| matches!(s.key, ServiceKey::Fwmark(_)));
    let https = topo.services.iter().any(|s| {
        s.mark_ports.contains(&443)
            || (matches!(s.key, ServiceKey::Tcp(_)) && s.real_servers.iter().any(|r| r.port == 443))
    });
    let sync = topo.storage.as_ref().map(|s| s.sync);
    let needs: [(bool, &str, &str); 6] = [
        (marks, "iptables", "iptables"),
        (udp, "socat", "socat"),
        (https, "openssl", "openssl"),
        (sync == Some(SyncMode::Nfs), "rpc.nfsd", "nfs-kernel-server"),
        (sync == Some(SyncMode::Nfs), "mount.nfs", "nfs-common"),
        (sync == Some(SyncMode::Rsync), "rsync", "rsync"),
    ];
    for (needed, program, package) in needs {
        if needed && !local::have(program) {
            return Err(NetnsError::Missing {
                program: program.into(),
                package: package.into(),
            });
        }
    }
    if topo.ha.is_some() && !local::have("keepalived") {
        return Err(NetnsError::Missing {
            program: "keepalived".into(),
            package: "keepalived".into(),
        });
    }
    Ok(())
}

/// The management bridge of a lab (in the root namespace, with this machine's address).
pub fn mgmt_bridge(lab: &str) -> String {
    short("lvm", &[lab])
}

/// Write `content` to `path` in a host's mount namespace (`nsenter … sh -c`
/// with the path and mode as arguments, never in the command line).
fn ns_write(pid: u32, path: &str, content: &[u8], mode: &str) -> Result<(), NetnsError> {
    use std::io::Write;
    let mut child = Command::new("nsenter")
        .args([
            "-t",
            &pid.to_string(),
            "-m",
            "--",
            "sh",
            "-c",
            "cat > \"$1\" && chmod \"$2\" \"$1\"",
            "sh",
            path,
            mode,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("nsenter"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(content)
            .map_err(|e| NetnsError::Failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetnsError::Failed(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Failed(format!(
            "writing {path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn keygen(path: &Path) -> Result<(), NetnsError> {
    Ok(local::keygen(path)?)
}

fn modprobe(module: &str, what: &str) -> Result<(), NetnsError> {
    if Path::new(&format!("/sys/module/{module}")).exists() {
        return Ok(());
    }
    run(&["modprobe", module]).map(|_| ()).map_err(|e| NetnsError::Kernel {
        module: module.into(),
        what: what.into(),
        detail: e.to_string(),
    })
}

/// Whether the recorded holder runs: the very process (pid and start time),
/// and in a network namespace of its own (a record naming a process of this
/// machine's namespace never gets it signalled).
fn holder_alive(pid: u32, start: u64) -> bool {
    Proc { pid, start }.alive() && !in_own_netns(pid)
}

/// Whether a process shares this process's network namespace.
fn in_own_netns(pid: u32) -> bool {
    let me = std::fs::read_link("/proc/self/ns/net").ok();
    me.is_none() || std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == me
}

fn link_exists(name: &str) -> bool {
    Path::new(&format!("/sys/class/net/{name}")).exists()
}

/// The netns provider for one lab.
pub struct Netns<'a> {
    pub topo: &'a Topology,
    /// Where the lab's SSH keys for the management network live (in its state directory).
    pub ssh_dir: std::path::PathBuf,
}

impl Netns<'_> {
    fn holder(&self, state: &LabState, host: &str) -> Option<(u32, u64)> {
        state.infra.iter().rev().find_map(|i| match i {
            Infra::Holder { host: h, pid, start } if h == host && holder_alive(*pid, *start) => Some((*pid, *start)),
            _ => None,
        })
    }

    /// Bring this machine's part of the lab to the topology, whatever it
    /// finds: after a clean run, an interrupted one (`kill -9` half way), or
    /// an edit of the file. Creates what is missing (hosts, bridges, veths,
    /// addresses, private mounts, sshds), repairs what is half made, and
    /// removes the hosts, networks and interfaces the topology no longer has.
    /// Each object is recorded in `state` (and saved) before it is created.
    /// Returns the names of the hosts it removed.
    pub fn ensure(
        &self,
        state: &mut LabState,
        save: &dyn Fn(&LabState) -> Result<(), crate::state::StateError>,
    ) -> Result<Vec<String>, NetnsError> {
        state.provider = Some(crate::spec::Provider::Netns);
        let record = &|state: &mut LabState, obj: Infra| -> Result<(), NetnsError> {
            if !state.infra.contains(&obj) {
                state.infra.push(obj);
                save(state)?;
            }
            Ok(())
        };
        let removed = self.remove_undeclared(state, save)?;
        self.ensure_bridges(state, record)?;
        for (hi, host) in self.topo.hosts.iter().enumerate() {
            self.ensure_host(state, record, save, hi, host)?;
        }
        if self.topo.mgmt.is_some() {
            self.write_known_hosts()?;
        }
        Ok(removed)
    }

    /// The lab networks' bridges (and the management bridge with this
    /// machine's address on it), the private directories' mount points.
    fn ensure_bridges(&self, state: &mut LabState, record: Record<'_>) -> Result<(), NetnsError> {
        let lab = &self.topo.lab;
        for net in &self.topo.networks {
            let br = bridge_name(lab, &net.name);
            if !link_exists(&br) {
                record(state, Infra::Bridge { name: br.clone() })?;
                run(&["ip", "link", "add", &br, "type", "bridge"])?;
            }
            run(&["ip", "link", "set", &br, "up"])?;
        }
        if let Some(m) = &self.topo.mgmt {
            let br = mgmt_bridge(lab);
            if !link_exists(&br) {
                record(state, Infra::Bridge { name: br.clone() })?;
                run(&["ip", "link", "add", &br, "type", "bridge"])?;
            }
            let own = format!("{}/{}", m.gateway, m.cidr.prefix());
            if !run(&["ip", "-o", "-4", "addr", "show", "dev", &br])?.contains(&format!("inet {own} ")) {
                run(&["ip", "addr", "add", &own, "dev", &br])?;
            }
            run(&["ip", "link", "set", &br, "up"])?;
            keygen(&self.ssh_dir.join("lab_key"))?;
        }
        for dir in PRIVATE_DIRS {
            if !Path::new(dir).exists() {
                record(state, Infra::Dir { path: dir.into() })?;
                std::fs::create_dir_all(dir).map_err(io(format!("mkdir {dir}")))?;
            }
        }
        Ok(())
    }

    /// One host: its namespaces' holder, private mounts, interfaces with
    /// their addresses, its sshd on the management network; interfaces it
    /// no longer has go.
    fn ensure_host(
        &self,
        state: &mut LabState,
        record: Record<'_>,
        save: &dyn Fn(&LabState) -> Result<(), crate::state::StateError>,
        hi: usize,
        host: &crate::model::Host,
    ) -> Result<(), NetnsError> {
        let lab = &self.topo.lab;
        let ns = netns_name(lab, &host.name);
        let pid = match self.holder(state, &host.name) {
            Some((pid, _)) if Path::new(&format!("/run/netns/{ns}")).exists() => pid,
            _ => self.new_holder(state, record, &host.name, &ns)?,
        };
        self.private_mounts(pid, &host.name)?;
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        let links = crate::iproute::links(&run(&["ip", "-n", &ns, "-o", "link"])?);
        let addrs = crate::iproute::addresses(&run(&["ip", "-n", &ns, "-o", "-4", "addr"])?);
        let mut wanted = Vec::new();
        for iface in &host.interfaces {
            let (outer, _) = veth_names(lab, &host.name, &iface.name);
            wanted.push(outer.clone());
            record(
                state,
                Infra::Veth {
                    name: outer.clone(),
                    host: Some(host.name.clone()),
                },
            )?;
            let present = links.iter().any(|l| l.name == iface.name);
            self.ensure_interface(&ns, &host.name, iface, present, &addrs)?;
        }
        if let Some(m) = &self.topo.mgmt {
            wanted.push(veth_names(lab, &host.name, "mgmt0").0);
            if !self.sshd_runs(pid) || !links.iter().any(|l| l.name == "mgmt0") {
                self.start_sshd(state, record, &ns, pid, &host.name, m.addresses[hi], m)?;
            }
        }
        // Interfaces the host had and no longer has.
        let stale: Vec<String> = state
            .infra
            .iter()
            .filter_map(|i| match i {
                Infra::Veth { name, host: Some(h) } if *h == host.name && !wanted.contains(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        for name in stale {
            del_link(None, &name)?;
            state
                .infra
                .retain(|i| !matches!(i, Infra::Veth { name: n, .. } if *n == name));
            save(state)?;
        }
        Ok(())
    }

    /// One interface: its veth pair (made anew when missing or half made),
    /// on its network's bridge, with the declared address (an address it had
    /// before, the topology changed it, goes; VIPs (/32) are the steps' business).
    fn ensure_interface(
        &self,
        ns: &str,
        host: &str,
        iface: &crate::model::Interface,
        present: bool,
        addrs: &[(String, std::net::Ipv4Addr, u8)],
    ) -> Result<(), NetnsError> {
        let lab = &self.topo.lab;
        let (outer, inner) = veth_names(lab, host, &iface.name);
        let br = bridge_name(lab, &self.topo.network(iface.network).name);
        if !present {
            // Missing, or half made by an interrupted run: made anew.
            del_link(None, &outer)?;
            del_link(Some(ns), &inner)?;
            let mac = mac_address(lab, host, &iface.name);
            run(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner, "address", &mac,
            ])?;
            run(&["ip", "link", "set", &inner, "netns", ns])?;
            run(&["ip", "-n", ns, "link", "set", &inner, "name", &iface.name])?;
        }
        run(&["ip", "link", "set", &outer, "master", &br, "up"])?;
        let own: Vec<&(String, std::net::Ipv4Addr, u8)> =
            addrs.iter().filter(|(dev, _, _)| *dev == iface.name).collect();
        for (_, a, p) in &own {
            if *p == iface.prefix && *a != iface.address {
                run(&["ip", "-n", ns, "addr", "del", &format!("{a}/{p}"), "dev", &iface.name])?;
            }
        }
        if !own.iter().any(|(_, a, p)| *a == iface.address && *p == iface.prefix) {
            let a = format!("{}/{}", iface.address, iface.prefix);
            run(&["ip", "-n", ns, "addr", "add", &a, "dev", &iface.name])?;
        }
        run(&["ip", "-n", ns, "link", "set", &iface.name, "up"])?;
        Ok(())
    }

    /// A long-lived process in a new network and mount namespace for a
    /// host, registered as its netns. Returns its pid.
    fn new_holder(
        &self,
        state: &mut LabState,
        record: &dyn Fn(&mut LabState, Infra) -> Result<(), NetnsError>,
        host: &str,
        ns: &str,
    ) -> Result<u32, NetnsError> {
        let child = Command::new("unshare")
            .args([
                "--net",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sleep",
                "infinity",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(io("unshare"))?;
        let pid = child.id();
        let me = std::fs::read_link("/proc/self/ns/net").ok();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == me {
            if Instant::now() > deadline {
                return Err(NetnsError::Failed(format!("{host}: the namespace did not appear")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let start =
            crate::process::start_time(pid).ok_or_else(|| NetnsError::Failed(format!("{host}: holder exited")))?;
        record(
            state,
            Infra::Holder {
                host: host.to_string(),
                pid,
                start,
            },
        )?;
        record(state, Infra::Netns { name: ns.to_string() })?;
        if Path::new(&format!("/run/netns/{ns}")).exists() {
            run(&["ip", "netns", "delete", ns])?;
        }
        run(&["ip", "netns", "attach", ns, &pid.to_string()])?;
        Ok(pid)
    }

    /// The host's private directories (tmpfs in its own mount namespace), each
    /// mounted unless it already is.
    fn private_mounts(&self, pid: u32, host: &str) -> Result<(), NetnsError> {
        let pid = pid.to_string();
        let source = format!("lvslab-{host}");
        let mounted = run(&[
            "nsenter",
            "-t",
            &pid,
            "-m",
            "--",
            "findmnt",
            "-rn",
            "-o",
            "SOURCE,TARGET",
        ])?;
        for dir in PRIVATE_DIRS {
            if !mounted.lines().any(|l| l == format!("{source} {dir}")) {
                run(&[
                    "nsenter",
                    "-t",
                    &pid,
                    "-m",
                    "--",
                    "mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    "mode=0755",
                    &source,
                    dir,
                ])?;
            }
        }
        Ok(())
    }

    /// Whether the host's own sshd (management network) runs.
    fn sshd_runs(&self, pid: u32) -> bool {
        run(&[
            "nsenter",
            "-t",
            &pid.to_string(),
            "-m",
            "--",
            "cat",
            "/run/lvslab-ssh/sshd.pid",
        ])
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .and_then(Proc::find)
        .is_some()
    }

    /// Remove what the lab has and the topology no longer declares: hosts
    /// (every process in their namespace, the namespace, and with it their
    /// interfaces) and networks' bridges. Only recorded objects. Returns the
    /// hosts removed.
    fn remove_undeclared(
        &self,
        state: &mut LabState,
        save: &dyn Fn(&LabState) -> Result<(), crate::state::StateError>,
    ) -> Result<Vec<String>, NetnsError> {
        let lab = &self.topo.lab;
        let declared: Vec<&str> = self.topo.hosts.iter().map(|h| h.name.as_str()).collect();
        let mut gone: Vec<String> = Vec::new();
        for i in &state.infra {
            if let Infra::Holder { host, .. } = i
                && !declared.contains(&host.as_str())
                && !gone.contains(host)
            {
                gone.push(host.clone());
            }
        }
        for host in &gone {
            let ns = netns_name(lab, host);
            let mut procs: Vec<Proc> = pids_in(&ns).into_iter().filter_map(Proc::find).collect();
            procs.extend(state.infra.iter().filter_map(|i| match i {
                Infra::Holder { host: h, pid, start } if h == host => Some(Proc {
                    pid: *pid,
                    start: *start,
                }),
                _ => None,
            }));
            if let Some(p) = crate::process::stop_all(&procs, Duration::from_secs(3)).first() {
                return Err(NetnsError::Failed(format!(
                    "removing host {host}: process {} does not stop",
                    p.pid
                )));
            }
            if Path::new(&format!("/run/netns/{ns}")).exists() {
                run(&["ip", "netns", "delete", &ns])?;
            }
            // Its veths went with its namespace (a veth's ends go together).
            let mut veths = Vec::new();
            state.infra.retain(|i| match i {
                Infra::Holder { host: h, .. } => h != host,
                Infra::Netns { name } => *name != ns,
                Infra::Veth { name, host: Some(h) } if h == host => {
                    veths.push(name.clone());
                    false
                }
                _ => true,
            });
            for v in &veths {
                del_link(None, v)?;
            }
            save(state)?;
        }
        let mut bridges: Vec<String> = self.topo.networks.iter().map(|n| bridge_name(lab, &n.name)).collect();
        bridges.push(mgmt_bridge(lab));
        let stale: Vec<String> = state
            .infra
            .iter()
            .filter_map(|i| match i {
                Infra::Bridge { name } if !bridges.contains(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        for br in stale {
            del_link(None, &br)?;
            state
                .infra
                .retain(|i| !matches!(i, Infra::Bridge { name } if *name == br));
            save(state)?;
        }
        Ok(gone)
    }

    /// A management interface and an sshd of its own for one host.
    #[allow(clippy::too_many_arguments)]
    fn start_sshd(
        &self,
        state: &mut LabState,
        record: &dyn Fn(&mut LabState, Infra) -> Result<(), NetnsError>,
        ns: &str,
        pid: u32,
        host: &str,
        addr: std::net::Ipv4Addr,
        m: &crate::model::Mgmt,
    ) -> Result<(), NetnsError> {
        let lab = &self.topo.lab;
        let (outer, inner) = veth_names(lab, host, "mgmt0");
        record(
            state,
            Infra::Veth {
                name: outer.clone(),
                host: Some(host.to_string()),
            },
        )?;
        del_link(None, &outer)?;
        del_link(Some(ns), "mgmt0")?;
        let own = format!("{addr}/{}", m.cidr.prefix());
        run(&["ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner])?;
        run(&["ip", "link", "set", &inner, "netns", ns])?;
        run(&["ip", "link", "set", &outer, "master", &mgmt_bridge(lab), "up"])?;
        run(&["ip", "-n", ns, "link", "set", &inner, "name", "mgmt0"])?;
        run(&["ip", "-n", ns, "addr", "add", &own, "dev", "mgmt0"])?;
        run(&["ip", "-n", ns, "link", "set", "mgmt0", "up"])?;
        let host_key = self.ssh_dir.join(format!("host_{host}"));
        keygen(&host_key)?;
        let read = |p: &Path| std::fs::read(p).map_err(io(p.display()));
        let pid_s = pid.to_string();
        run(&[
            "nsenter",
            "-t",
            &pid_s,
            "-m",
            "--",
            "mkdir",
            "-p",
            "/run/sshd",
            "/run/lvslab-ssh",
        ])?;
        ns_write(pid, "/run/lvslab-ssh/host_key", &read(&host_key)?, "600")?;
        ns_write(
            pid,
            "/run/lvslab-ssh/authorized_keys",
            &read(&self.ssh_dir.join("lab_key.pub"))?,
            "600",
        )?;
        let config = format!(
            "ListenAddress {addr}\nPort 22\nHostKey /run/lvslab-ssh/host_key\nAuthorizedKeysFile /run/lvslab-ssh/authorized_keys\n\
             PidFile /run/lvslab-ssh/sshd.pid\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nPermitRootLogin prohibit-password\nPrintMotd no\nMaxSessions 50\n"
        );
        ns_write(pid, "/run/lvslab-ssh/sshd_config", config.as_bytes(), "600")?;
        run(&[
            "nsenter",
            "-t",
            &pid_s,
            "-n",
            "-m",
            "--",
            "/usr/sbin/sshd",
            "-f",
            "/run/lvslab-ssh/sshd_config",
        ])?;
        Ok(())
    }

    fn write_known_hosts(&self) -> Result<(), NetnsError> {
        let Some(m) = &self.topo.mgmt else { return Ok(()) };
        let mut text = String::new();
        for (h, addr) in self.topo.hosts.iter().zip(&m.addresses) {
            let p = self.ssh_dir.join(format!("host_{}.pub", h.name));
            let key = std::fs::read_to_string(&p).map_err(io(p.display()))?;
            let key: Vec<&str> = key.split_whitespace().take(2).collect();
            text.push_str(&format!("{addr} {}\n", key.join(" ")));
        }
        let path = self.ssh_dir.join("known_hosts");
        std::fs::write(&path, text).map_err(io(path.display()))
    }

    /// How to reach each host over the management network (SSH transport).
    pub fn mgmt_reach(&self) -> Option<BTreeMap<String, crate::exec::connect::Reach>> {
        let m = self.topo.mgmt.as_ref()?;
        Some(
            self.topo
                .hosts
                .iter()
                .zip(&m.addresses)
                .map(|(h, a)| {
                    (
                        h.name.clone(),
                        crate::exec::connect::Reach {
                            address: a.to_string(),
                            port: 22,
                            user: "root".into(),
                            key: Some(self.ssh_dir.join("lab_key")),
                            passphrase_env: None,
                            known_hosts: vec![self.ssh_dir.join("known_hosts")],
                            jump: None,
                            become_root: false,
                            connect_timeout_secs: 10,
                        },
                    )
                })
                .collect(),
        )
    }

    /// A transport per host that enters its namespaces.
    pub fn connections(&self, state: &LabState, hosts: &[String]) -> Vec<HostConn> {
        hosts
            .iter()
            .map(|h| HostConn {
                host: h.clone(),
                transport: match self.holder(state, h) {
                    Some((pid, _)) => Ok(Arc::new(LocalTransport::with_prefix(
                        h.clone(),
                        ["nsenter", "-t", &pid.to_string(), "-n", "-m", "--"]
                            .map(String::from)
                            .to_vec(),
                    )) as Arc<dyn Transport>),
                    None => Err(format!("{h}: its namespace is gone (run `lvslab up` again)")),
                },
            })
            .collect()
    }
}

/// The live holder process of a host, if the lab is up.
pub fn holder_pid(state: &LabState, host: &str) -> Option<u32> {
    state.infra.iter().rev().find_map(|i| match i {
        Infra::Holder { host: h, pid, start } if h == host && holder_alive(*pid, *start) => Some(*pid),
        _ => None,
    })
}

/// Transports for the hosts of a lab from its state alone (for `down LAB`).
pub fn connections_from_state(state: &LabState) -> Vec<HostConn> {
    let mut out = Vec::new();
    let mut seen = BTreeMap::new();
    for i in state.infra.iter().rev() {
        if let Infra::Holder { host, pid, start } = i
            && !seen.contains_key(host)
        {
            seen.insert(host.clone(), ());
            out.push(HostConn {
                host: host.clone(),
                transport: if holder_alive(*pid, *start) {
                    Ok(Arc::new(LocalTransport::with_prefix(
                        host.clone(),
                        ["nsenter", "-t", &pid.to_string(), "-n", "-m", "--"]
                            .map(String::from)
                            .to_vec(),
                    )) as Arc<dyn Transport>)
                } else {
                    Err(format!("{host}: its namespace is already gone"))
                },
            });
        }
    }
    out
}

/// Processes whose network namespace is the one registered as `ns`.
fn pids_in(ns: &str) -> Vec<u32> {
    let Ok(target) = std::fs::metadata(format!("/run/netns/{ns}")) else {
        return Vec::new();
    };
    use std::os::unix::fs::MetadataExt;
    let ino = target.ino();
    // Never this machine's own namespace, whatever a record names.
    if std::fs::metadata("/proc/self/ns/net").is_ok_and(|m| m.ino() == ino) {
        return Vec::new();
    }
    let mut pids = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == ino) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Remove every recorded object, last created first. Returns what could not be removed.
pub fn destroy(state: &mut LabState) -> Vec<String> {
    let mut problems = Vec::new();
    // Stop every process in the lab's namespaces (daemons, holders): TERM,
    // then KILL what is left, and only go on once they are gone.
    let namespaces: Vec<String> = state
        .infra
        .iter()
        .filter_map(|i| match i {
            Infra::Netns { name } => Some(name.clone()),
            _ => None,
        })
        .collect();
    let procs: Vec<Proc> = namespaces
        .iter()
        .flat_map(|ns| pids_in(ns))
        .filter_map(Proc::find)
        .collect();
    for p in crate::process::stop_all(&procs, Duration::from_secs(3)) {
        problems.push(format!("process {} does not stop", p.pid));
    }
    for i in state.infra.iter().rev() {
        match i {
            Infra::Holder { pid, start, .. } => {
                crate::process::stop_all(
                    &[Proc {
                        pid: *pid,
                        start: *start,
                    }],
                    Duration::from_secs(3),
                );
            }
            Infra::Netns { name } => {
                if Path::new(&format!("/run/netns/{name}")).exists()
                    && let Err(e) = run(&["ip", "netns", "delete", name])
                {
                    problems.push(e.to_string());
                }
            }
            Infra::Veth { name, .. } | Infra::Bridge { name } => {
                if let Err(e) = del_link(None, name) {
                    problems.push(e.to_string());
                }
            }
            Infra::Dir { path } => {
                if Path::new(path).exists() && std::fs::remove_dir(path).is_err() {
                    problems.push(format!("{path} is not empty; left in place"));
                }
            }
        }
    }
    if problems.is_empty() {
        state.infra.clear();
    }
    problems
}

/// What of the recorded objects still exists (empty after a complete `down`).
pub fn leftovers(state: &LabState) -> Vec<String> {
    state
        .infra
        .iter()
        .filter_map(|i| match i {
            Infra::Holder { pid, start, host } if holder_alive(*pid, *start) => Some(format!("process {pid} ({host})")),
            Infra::Netns { name } if Path::new(&format!("/run/netns/{name}")).exists() => Some(format!("netns {name}")),
            Infra::Veth { name, .. } | Infra::Bridge { name } if link_exists(name) => Some(format!("link {name}")),
            Infra::Dir { path } if Path::new(path).exists() => Some(format!("directory {path}")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_limits_and_differ_per_lab() {
        let b = bridge_name("a-very-long-lab-name-indeed", "private");
        assert!(b.len() <= 15 && b.starts_with("lvb"));
        assert_ne!(bridge_name("nat", "public"), bridge_name("nat2", "public"));
        let (o, i) = veth_names("nat", "director", "eth1");
        assert!(o.len() <= 15 && i.len() <= 15 && o != i);
        assert_eq!(netns_name("nat", "client"), "lvslab-nat-client");
    }

    #[test]
    fn interfaces_keep_their_mac_when_made_again() {
        let m = mac_address("nat", "web2", "eth0");
        assert_eq!(m, mac_address("nat", "web2", "eth0"));
        assert_ne!(m, mac_address("nat", "web1", "eth0"));
        assert!(m.starts_with("02:"), "locally administered, unicast: {m}");
        assert_eq!(m.len(), 17);
    }
}
