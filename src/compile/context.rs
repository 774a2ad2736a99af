//! The template context: the model seen from one host, flattened into plain
//! data for playbooks and templates. Derived facts ("this real server serves
//! these VIPs in DR mode") are computed here in Rust, so playbooks stay
//! declarative: they say *what* to do, in what order, and *why*.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::model::{CheckKind, Host, Mode, Protocol, Role, ServiceKey, Topology, VrrpState, WebServer};
use crate::plan::ipvs::KeepalivedService;
use crate::plan::{IpvsDest, IpvsService, secret_placeholder};

#[derive(Debug, Serialize)]
pub struct Context {
    pub lab: String,
    pub mode: Mode,
    pub host: HostCtx,
    pub web: WebCtx,
    pub storage: Option<StorageCtx>,
}

#[derive(Debug, Serialize)]
pub struct WebCtx {
    pub server: WebServer,
    /// This host's document root and web server unit (they differ per OS family).
    pub docroot: String,
    pub unit: String,
}

#[derive(Debug, Serialize)]
pub struct StorageCtx {
    pub host: String,
    pub address: Ipv4Addr,
    pub export: String,
    pub mount: String,
    /// The networks allowed to mount the export (or to fetch it with rsync).
    pub clients: Vec<String>,
    /// `nfs` (one shared directory) or `rsync` (copies fetched from the storage host).
    pub sync: &'static str,
}

#[derive(Debug, Serialize)]
pub struct HostCtx {
    pub name: String,
    pub role: Role,
    pub init: crate::model::Init,
    /// `debian` or `rhel`: declared, detected, or assumed (`os_assumed`).
    pub os: &'static str,
    pub os_assumed: bool,
    /// Install the packages the role needs when missing.
    pub packages: bool,
    /// The plan brings up the host's interfaces and puts the lab's addresses
    /// on them (`provider: ssh`: the machines are the user's; the netns and
    /// vm providers make the interfaces with their addresses themselves).
    pub owns_addresses: bool,
    /// The client that verify sends requests from.
    pub verify_client: bool,
    /// Some service is UDP (the client needs socat to send datagrams).
    pub udp_services: bool,
    pub address: Option<Ipv4Addr>,
    pub interfaces: Vec<IfaceCtx>,
    pub gateway: Option<Ipv4Addr>,
    pub routes: Vec<RouteCtx>,
    /// Director: runs at least one NAT service (must forward).
    pub nat: bool,
    /// Director: VIPs it puts on its own interfaces (services without keepalived).
    pub vips: Vec<VipCtx>,
    /// Director: has services managed with ipvsadm.
    pub ipvs: bool,
    /// Director: firewall-mark rules.
    pub fwmarks: Vec<FwmarkCtx>,
    /// Director: runs keepalived.
    pub keepalived: Option<KeepalivedCtx>,
    /// Real server: VIPs served in DR mode (on `lo`) and TUN mode (on `tunl0`).
    pub dr_vips: Vec<Ipv4Addr>,
    pub tun_vips: Vec<Ipv4Addr>,
    /// Real server: TCP ports its web server listens on.
    pub web_ports: Vec<u16>,
    /// Real server: UDP responders (each answers every datagram with the host's name).
    pub udp_responders: Vec<UdpCtx>,
    pub page: Option<String>,
    /// Real server: mounts the shared storage.
    pub mounts_storage: bool,
}

#[derive(Debug, Serialize)]
pub struct IfaceCtx {
    pub name: String,
    pub network: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Debug, Serialize)]
pub struct RouteCtx {
    pub to: String,
    pub via: Ipv4Addr,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct VipCtx {
    pub address: Ipv4Addr,
    pub dev: String,
}

#[derive(Debug, Serialize)]
pub struct UdpCtx {
    /// `53` or `53-192-168-4-214`: part of the service's name.
    pub name: String,
    pub port: u16,
    /// DR/TUN: the VIP (replies must come from it); NAT: none (the director rewrites them).
    pub bind: Option<Ipv4Addr>,
}

#[derive(Debug, Serialize)]
pub struct FwmarkCtx {
    pub vip: Ipv4Addr,
    pub mark: u32,
    pub protocol: Protocol,
    pub ports: String,
}

#[derive(Debug, Serialize)]
pub struct KeepalivedCtx {
    pub router_id: String,
    pub instances: Vec<VrrpCtx>,
    pub virtual_servers: Vec<VirtualServerCtx>,
    pub needs_script_security: bool,
    /// NAT: instances that must fail over together (the VIP outside and the
    /// real servers' gateway inside), as one `vrrp_sync_group`.
    pub sync_group: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct VrrpCtx {
    pub name: String,
    pub state: VrrpState,
    pub interface: String,
    pub virtual_router_id: u8,
    pub priority: u8,
    pub advert_int: u32,
    /// A placeholder: the secret is filled in only when the file is written.
    pub auth_pass: Option<String>,
    pub vips: Vec<String>,
    pub nopreempt: bool,
    pub preempt_delay: Option<u32>,
    pub unicast_src: Option<Ipv4Addr>,
    pub unicast_peers: Vec<Ipv4Addr>,
    /// `vrrp_script` tracked by this instance (named `chk_<instance>`).
    pub track_script: Option<crate::model::TrackScript>,
}

#[derive(Debug, Serialize)]
pub struct VirtualServerCtx {
    /// `192.168.4.253 80` or `fwmark 8`.
    pub target: String,
    /// `TCP` or `UDP`; none for a firewall-mark service (keepalived refuses
    /// a protocol there: the mark already says which packets belong).
    pub protocol: Option<&'static str>,
    pub lb_algo: String,
    pub lb_kind: &'static str,
    pub sched_flags: Vec<String>,
    pub persistence_timeout: Option<u32>,
    pub persistence_granularity: Option<Ipv4Addr>,
    pub one_packet: bool,
    pub delay_loop: u32,
    pub quorum: Option<u32>,
    pub inhibit_on_failure: bool,
    pub sorry_server: Option<String>,
    pub real_servers: Vec<KaRealServerCtx>,
}

#[derive(Debug, Serialize)]
pub struct KaRealServerCtx {
    pub address: Ipv4Addr,
    /// None for a firewall-mark service: the packet keeps its destination port.
    pub port: Option<u16>,
    pub weight: u32,
    pub check: Option<CheckCtx>,
}

#[derive(Debug, Serialize)]
pub struct CheckCtx {
    pub kind: &'static str,
    pub path: String,
    pub status_code: Option<u16>,
    pub digest: Option<String>,
    pub script: Option<String>,
    pub port: u16,
    pub connect_timeout: u32,
    pub retry: u32,
    pub delay_before_retry: u32,
}

pub fn secret_name_vrrp(instance: &str) -> String {
    format!("vrrp-{instance}")
}

pub fn build(topo: &Topology, host: &Host) -> Context {
    let director = DirectorFacts::of(topo, host);
    let served = Served::of(topo, host);
    Context {
        lab: topo.lab.clone(),
        mode: topo.lvs_mode(),
        web: WebCtx {
            server: topo.web.server,
            docroot: topo.web.docroot_for(host.os_family()),
            unit: topo.web.unit_for(host.os_family()).into(),
        },
        storage: storage(topo),
        host: HostCtx {
            name: host.name.clone(),
            role: host.role,
            init: host.init,
            os: host.os_family().as_str(),
            os_assumed: host.os.is_none(),
            packages: host.packages,
            owns_addresses: host
                .own_addresses
                .unwrap_or(topo.provider == Some(crate::model::Provider::Ssh)),
            verify_client: topo.verify.client == Some(host.id),
            udp_services: topo
                .services
                .iter()
                .any(|s| matches!(s.key, crate::model::ServiceKey::Udp(_))),
            address: host.primary_address(),
            interfaces: interfaces(topo, host),
            gateway: host.gateway,
            routes: host
                .routes
                .iter()
                .map(|r| RouteCtx {
                    to: r.to.to_string(),
                    via: r.via,
                })
                .collect(),
            nat: director.nat,
            vips: director.vips,
            ipvs: director.ipvs,
            fwmarks: fwmarks(topo, host),
            keepalived: keepalived(topo, host),
            dr_vips: served.dr_vips,
            tun_vips: served.tun_vips,
            web_ports: served.web_ports,
            udp_responders: served.udp_responders,
            page: served.page,
            mounts_storage: host.role == Role::RealServer && topo.storage.is_some(),
        },
    }
}

/// What a director does with its services outside keepalived.
struct DirectorFacts {
    /// Runs at least one NAT service (keepalived's or not).
    nat: bool,
    /// Has services managed with ipvsadm.
    ipvs: bool,
    /// VIPs of ipvsadm services it must put on its own interfaces.
    vips: Vec<VipCtx>,
}

impl DirectorFacts {
    /// Whether this host forwards NAT traffic and runs ipvsadm services, and
    /// the VIPs of those services it does not already own, each on the
    /// interface whose network contains it (in service order, no repeats).
    fn of(topo: &Topology, host: &Host) -> Self {
        let mut facts = DirectorFacts {
            nat: false,
            ipvs: false,
            vips: Vec::new(),
        };
        for s in topo.services_of_director(host.id) {
            facts.nat |= s.mode == Mode::Nat;
            if s.keepalived {
                continue;
            }
            facts.ipvs = true;
            if !host.has_address(s.vip)
                && let Some(i) = host
                    .interfaces
                    .iter()
                    .find(|i| topo.network(i.network).cidr.contains(s.vip))
            {
                let v = VipCtx {
                    address: s.vip,
                    dev: i.name.clone(),
                };
                if !facts.vips.contains(&v) {
                    facts.vips.push(v);
                }
            }
        }
        facts
    }
}

/// The firewall-mark rules of a director's mark services. Packets are marked
/// whoever owns the IPVS service (ipvsadm or keepalived).
fn fwmarks(topo: &Topology, host: &Host) -> Vec<FwmarkCtx> {
    topo.services_of_director(host.id)
        .filter_map(|s| match s.key {
            ServiceKey::Fwmark(mark) => Some(FwmarkCtx {
                vip: s.vip,
                mark,
                protocol: s.mark_protocol,
                ports: s.mark_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
            }),
            _ => None,
        })
        .collect()
}

/// What a host serves as a real server or a sorry server: the VIPs it must
/// hold locally, the ports its web server and UDP responders answer on, and its page.
struct Served {
    dr_vips: Vec<Ipv4Addr>,
    tun_vips: Vec<Ipv4Addr>,
    web_ports: Vec<u16>,
    udp_responders: Vec<UdpCtx>,
    page: Option<String>,
}

impl Served {
    /// Everything the host serves: its real-server services first, then the
    /// services it is the sorry server of; web ports sorted at the end.
    fn of(topo: &Topology, host: &Host) -> Self {
        let mut served = Served {
            dr_vips: Vec::new(),
            tun_vips: Vec::new(),
            web_ports: Vec::new(),
            udp_responders: Vec::new(),
            page: host.page.clone(),
        };
        for s in topo.services_of_real_server(host.id) {
            served.real_server_of(s, host);
        }
        // Port 0 (persistent all-ports) services and health checks reach port 80.
        if host.role == Role::RealServer && served.web_ports.is_empty() {
            served.web_ports.push(80);
        }
        for s in &topo.services {
            served.sorry_server_of(s, topo, host);
        }
        served.web_ports.sort_unstable();
        served
    }

    /// DR and TUN: the VIP must be local (lo or tunl0) wherever packets for
    /// it are forwarded; this records it once in the list of its mode.
    fn add_vip(&mut self, s: &crate::model::Service) {
        let list = match s.mode {
            Mode::Dr => &mut self.dr_vips,
            Mode::Tun => &mut self.tun_vips,
            Mode::Nat => return,
        };
        if !list.contains(&s.vip) {
            list.push(s.vip);
        }
    }

    /// Records TCP ports the web server listens on (port 0 skipped, no repeats).
    fn add_web_ports(&mut self, ports: Vec<u16>) {
        for p in ports.into_iter().filter(|p| *p != 0) {
            if !self.web_ports.contains(&p) {
                self.web_ports.push(p);
            }
        }
    }

    /// Records a UDP responder on `port`, bound to the VIP in DR/TUN (`bind`),
    /// named by port (and VIP); a responder of the same name is kept once.
    fn add_udp_responder(&mut self, port: u16, bind: Option<Ipv4Addr>) {
        let name = match bind {
            Some(v) => format!("{port}-{}", v.to_string().replace('.', "-")),
            None => port.to_string(),
        };
        if !self.udp_responders.iter().any(|u| u.name == name) {
            self.udp_responders.push(UdpCtx { name, port, bind });
        }
    }

    /// A service this host is a real server of: its VIP, the TCP ports its
    /// destinations (or mark) use, and a UDP responder per destination.
    fn real_server_of(&mut self, s: &crate::model::Service, host: &Host) {
        let id = host.id;
        self.add_vip(s);
        let ports: Vec<u16> = match s.key {
            ServiceKey::Tcp(_) => s.real_servers.iter().filter(|r| r.host == id).map(|r| r.port).collect(),
            ServiceKey::Fwmark(_) if s.mark_protocol == Protocol::Tcp => s.mark_ports.clone(),
            _ => Vec::new(),
        };
        self.add_web_ports(ports);
        if let ServiceKey::Udp(sp) = s.key {
            let bind = (s.mode != Mode::Nat).then_some(s.vip);
            for r in s.real_servers.iter().filter(|r| r.host == id) {
                let port = if r.port == 0 { sp } else { r.port };
                self.add_udp_responder(port, bind);
            }
        }
    }

    /// keepalived's sorry server: forwarded to like a real server of the same
    /// service (so in DR/TUN it must own the VIP too), answering with a sorry
    /// page. Does nothing unless this host holds the service's sorry address.
    fn sorry_server_of(&mut self, s: &crate::model::Service, topo: &Topology, host: &Host) {
        let Some((addr, port)) = s.sorry_server else { return };
        if !host.has_address(addr) {
            return;
        }
        self.add_vip(s);
        // It answers where the service's packets arrive: the mark's ports,
        // the service's (or the one NAT maps to), 80 for an all-ports service.
        let (tcp, udp): (Vec<u16>, Vec<u16>) = match (s.key, s.mark_protocol) {
            (ServiceKey::Fwmark(_), Protocol::Tcp) => (s.mark_ports.clone(), Vec::new()),
            (ServiceKey::Fwmark(_), Protocol::Udp) => (Vec::new(), s.mark_ports.clone()),
            (ServiceKey::Tcp(_), _) => (vec![if port == 0 { 80 } else { port }], Vec::new()),
            (ServiceKey::Udp(_), _) => (Vec::new(), vec![port]),
        };
        self.add_web_ports(tcp);
        let bind = (s.mode != Mode::Nat).then_some(s.vip);
        for p in udp.into_iter().filter(|p| *p != 0) {
            self.add_udp_responder(p, bind);
        }
        if self.page.is_none() {
            self.page = Some(sorry_page(&topo.lab, &host.name));
        }
    }
}

/// The shared storage as every host sees it: the storage host, its export,
/// the mount point, and the networks of the storage host's interfaces as clients.
fn storage(topo: &Topology) -> Option<StorageCtx> {
    topo.storage.as_ref().map(|st| StorageCtx {
        sync: match st.sync {
            crate::model::SyncMode::Nfs => "nfs",
            crate::model::SyncMode::Rsync => "rsync",
        },
        host: topo.host(st.host).name.clone(),
        address: st.address,
        export: st.export.clone(),
        mount: st.mount.clone(),
        clients: {
            let sh = topo.host(st.host);
            let mut nets: Vec<String> = sh
                .interfaces
                .iter()
                .map(|i| topo.network(i.network).cidr.to_string())
                .collect();
            nets.dedup();
            nets
        },
    })
}

/// The host's interfaces, each with its network's name.
fn interfaces(topo: &Topology, host: &Host) -> Vec<IfaceCtx> {
    host.interfaces
        .iter()
        .map(|i| IfaceCtx {
            name: i.name.clone(),
            network: topo.network(i.network).name.clone(),
            address: i.address,
            prefix: i.prefix,
        })
        .collect()
}

/// The page of a sorry server that is not also a real server.
pub fn sorry_page(lab: &str, host: &str) -> String {
    format!(
        "<h1>sorry from {host}</h1>\n<p>Every real server of lab {lab} is down; keepalived sent you to its sorry server.</p>\n"
    )
}

fn keepalived(topo: &Topology, host: &Host) -> Option<KeepalivedCtx> {
    let ha = topo.ha.as_ref()?;
    let instances: Vec<VrrpCtx> = ha
        .instances
        .iter()
        .filter_map(|inst| {
            let me = inst.members.iter().find(|m| m.host == host.id)?;
            Some(vrrp_instance(inst, me, host))
        })
        .collect();
    if instances.is_empty() {
        return None;
    }
    let sync_group = sync_group(topo, ha, host, &instances);
    let virtual_servers = topo
        .services_of_director(host.id)
        .filter(|s| s.keepalived)
        .map(virtual_server)
        .collect();
    // Scripts keepalived runs (the notify script always, track scripts and
    // MISC_CHECKs when declared) run as root under script security.
    let needs_script_security = true;
    Some(KeepalivedCtx {
        router_id: host.name.clone(),
        instances,
        virtual_servers,
        sync_group,
        needs_script_security,
    })
}

/// One VRRP instance as this host (`me`, one of its members) runs it; with
/// unicast, the other members are its peers.
fn vrrp_instance(inst: &crate::model::VrrpInstance, me: &crate::model::VrrpMember, host: &Host) -> VrrpCtx {
    VrrpCtx {
        name: inst.name.clone(),
        state: me.state,
        interface: me.interface.clone(),
        virtual_router_id: inst.virtual_router_id,
        priority: me.priority,
        advert_int: inst.advert_int,
        auth_pass: inst
            .auth_pass
            .as_ref()
            .map(|_| secret_placeholder(&secret_name_vrrp(&inst.name))),
        vips: inst
            .vips
            .iter()
            .map(|v| format!("{v}/32 dev {}", me.interface))
            .collect(),
        nopreempt: inst.nopreempt,
        preempt_delay: inst.preempt_delay,
        unicast_src: inst.unicast.then_some(me.address),
        unicast_peers: if inst.unicast {
            inst.members
                .iter()
                .filter(|m| m.host != host.id)
                .map(|m| m.address)
                .collect()
        } else {
            Vec::new()
        },
        track_script: inst.track_script.clone(),
    }
}

/// The names of the instances that must fail over together, or none.
/// NAT through a VRRP pair: the client-side VIP and the real servers'
/// gateway address must move together, or replies go to the director that
/// lost the VIP. Instances of this director on different networks form one group.
fn sync_group(topo: &Topology, ha: &crate::model::Ha, host: &Host, instances: &[VrrpCtx]) -> Vec<String> {
    let nat = topo
        .services_of_director(host.id)
        .any(|s| s.keepalived && s.mode == Mode::Nat);
    let nets: std::collections::BTreeSet<_> = ha
        .instances
        .iter()
        .filter(|i| i.members.iter().any(|m| m.host == host.id))
        .map(|i| i.network)
        .collect();
    if nat && nets.len() > 1 {
        instances.iter().map(|i| i.name.clone()).collect()
    } else {
        Vec::new()
    }
}

/// A keepalived-owned service as a `virtual_server` block.
fn virtual_server(s: &crate::model::Service) -> VirtualServerCtx {
    let svc = ipvs_service(s);
    VirtualServerCtx {
        target: match s.key {
            ServiceKey::Tcp(p) | ServiceKey::Udp(p) => format!("{} {p}", s.vip),
            ServiceKey::Fwmark(m) => format!("fwmark {m}"),
        },
        protocol: match s.key {
            ServiceKey::Udp(_) => Some("UDP"),
            ServiceKey::Tcp(_) => Some("TCP"),
            ServiceKey::Fwmark(_) => None,
        },
        lb_algo: s.scheduler.as_str().to_string(),
        lb_kind: match s.mode {
            Mode::Nat => "NAT",
            Mode::Dr => "DR",
            Mode::Tun => "TUN",
        },
        sched_flags: s.sched_flags.clone(),
        persistence_timeout: s.persistence,
        persistence_granularity: s.persistence_netmask,
        one_packet: s.one_packet,
        delay_loop: s.delay_loop,
        quorum: s.quorum,
        inhibit_on_failure: s.inhibit_on_failure,
        // keepalived takes no port for a firewall mark's sorry server.
        sorry_server: s.sorry_server.map(|(a, p)| match p {
            0 => a.to_string(),
            p => format!("{a} {p}"),
        }),
        real_servers: svc.real_servers.iter().map(|d| ka_real_server(s, d)).collect(),
    }
}

/// One destination of a keepalived service as a `real_server` block, with
/// the service's health check aimed at the port it connects to.
fn ka_real_server(s: &crate::model::Service, d: &IpvsDest) -> KaRealServerCtx {
    // The port a health check connects to: the real server's,
    // else the mark's first port, else the service's, else 80.
    let port = match (d.port, s.key) {
        (0, ServiceKey::Fwmark(_)) => s.mark_ports.first().copied().unwrap_or(80),
        (0, _) => s.port().filter(|p| *p != 0).unwrap_or(80),
        (p, _) => p,
    };
    KaRealServerCtx {
        address: d.address,
        port: (!matches!(s.key, ServiceKey::Fwmark(_))).then_some(d.port),
        weight: d.weight,
        check: s.health_check.as_ref().map(|c| CheckCtx {
            kind: match c.kind {
                // HTTPS (the lab's port 443) is checked over TLS.
                CheckKind::Http if port == 443 => "SSL_GET",
                CheckKind::Http => "HTTP_GET",
                CheckKind::Tcp => "TCP_CHECK",
                CheckKind::Misc => "MISC_CHECK",
            },
            path: c.path.clone(),
            status_code: c.status_code,
            digest: c.digest.clone(),
            script: c.script.clone(),
            port,
            connect_timeout: c.connect_timeout,
            retry: c.retry,
            delay_before_retry: c.delay_before_retry,
        }),
    }
}

/// The IPVS service as the kernel will hold it.
pub fn ipvs_service(s: &crate::model::Service) -> IpvsService {
    IpvsService {
        key: s.key,
        vip: s.vip,
        scheduler: s.scheduler.as_str().to_string(),
        flags: s.sched_flags.clone(),
        persistence: s.persistence,
        netmask: s.persistence_netmask,
        one_packet: s.one_packet,
        real_servers: s
            .real_servers
            .iter()
            .map(|r| IpvsDest {
                address: r.address,
                port: if matches!(s.key, ServiceKey::Fwmark(_)) {
                    0
                } else {
                    r.port
                },
                method: s.mode,
                weight: r.weight,
            })
            .collect(),
    }
}

/// The ipvsadm-managed table of one director (keepalived-owned services excluded).
pub fn ipvs_table(topo: &Topology, host: &Host) -> Vec<IpvsService> {
    topo.services_of_director(host.id)
        .filter(|s| !s.keepalived)
        .map(ipvs_service)
        .collect()
}

/// The services keepalived owns on one director, as its configuration declares them.
pub fn keepalived_table(topo: &Topology, host: &Host) -> Vec<KeepalivedService> {
    topo.services_of_director(host.id)
        .filter(|s| s.keepalived)
        .map(|s| KeepalivedService {
            service: ipvs_service(s),
            // As `ipvsadm -Sn` shows it: a mark's destinations have port 0.
            sorry: s.sorry_server.map(|(a, p)| format!("{a}:{p}")),
            inhibit_on_failure: s.inhibit_on_failure,
            names: s
                .real_servers
                .iter()
                .map(|r| (format!("{}:{}", r.address, r.port), topo.host(r.host).name.clone()))
                .collect(),
        })
        .collect()
}

/// Secrets referenced by this host's templates, by name.
pub fn secrets(topo: &Topology) -> BTreeMap<String, crate::model::Secret> {
    let mut out = BTreeMap::new();
    if let Some(ha) = &topo.ha {
        for inst in &ha.instances {
            if let Some(p) = &inst.auth_pass {
                out.insert(secret_name_vrrp(&inst.name), p.clone());
            }
        }
    }
    out
}
