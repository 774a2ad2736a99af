//! Spec → model: parse, resolve, default and check everything, collecting every
//! problem (with its position and a hint) instead of stopping at the first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnetwork::Ipv4Network;

use super::*;
use crate::diag::{Diagnostic, Diagnostics, SourceFile, Span, did_you_mean};
use crate::spec::{self, Spanned, TopologySpec};

struct Cx {
    file: Arc<SourceFile>,
    diags: Diagnostics,
}

impl Cx {
    fn error(&mut self, span: Span, msg: impl Into<String>, hint: impl Into<String>) {
        let d = Diagnostic::error(msg).at(&self.file, span).hint(hint);
        self.diags.push(d);
    }

    fn warn(&mut self, span: Span, msg: impl Into<String>, hint: impl Into<String>) {
        let d = Diagnostic::warning(msg).at(&self.file, span).hint(hint);
        self.diags.push(d);
    }

    fn ipv4(&mut self, s: &Spanned<String>, what: &str) -> Option<Ipv4Addr> {
        match s.value.trim().parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                let hint = if s.value.contains(':') {
                    "IPv6 labs are not supported yet; use an IPv4 address".to_string()
                } else if s.value.contains('/') {
                    format!(
                        "write the address without a prefix length: {}",
                        s.value.split('/').next().unwrap_or("")
                    )
                } else {
                    "write an IPv4 address such as 192.168.4.10".to_string()
                };
                self.error(s.span, format!("`{}` is not a valid {what}", s.value), hint);
                None
            }
        }
    }

    /// An optional number checked against its range; `default` when absent or out of range.
    fn range_or(
        &mut self,
        v: Option<&Spanned<i64>>,
        (lo, hi): (i64, i64),
        what: &str,
        hint: &str,
        default: i64,
    ) -> i64 {
        v.and_then(|v| self.range(v, lo, hi, what, hint)).unwrap_or(default)
    }

    fn range(&mut self, v: &Spanned<i64>, lo: i64, hi: i64, what: &str, hint: &str) -> Option<i64> {
        if (lo..=hi).contains(&v.value) {
            Some(v.value)
        } else {
            self.error(v.span, format!("{what} {} is out of range {lo}..={hi}", v.value), hint);
            None
        }
    }

    fn name(&mut self, n: &spec::Name, what: &str) {
        if !is_simple_name(&n.value) {
            self.error(
                n.span,
                format!("{what} name `{}` is not usable", n.value),
                "use lowercase letters, digits and `-`, starting with a letter, at most 32 characters (it becomes part of namespace and file names)",
            );
        }
    }
}

fn lookup<'a, T>(cx: &mut Cx, names: &'a BTreeMap<String, T>, r: &spec::Name, what: &str) -> Option<&'a T> {
    match names.get(&r.value) {
        Some(t) => Some(t),
        None => {
            let hint = match did_you_mean(&r.value, names.keys().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "known {what}s: {}",
                    names.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            cx.error(r.span, format!("unknown {what} `{}`", r.value), hint);
            None
        }
    }
}

/// Build the validated model. Returns the model only when there are no errors;
/// warnings are returned either way.
pub fn build(spec: &TopologySpec, file: &Arc<SourceFile>) -> (Option<Topology>, Diagnostics) {
    let mut cx = Cx {
        file: Arc::clone(file),
        diags: Diagnostics::default(),
    };
    let topo = build_inner(spec, &mut cx);
    let diags = std::mem::take(&mut cx.diags).sorted();
    if diags.has_errors() {
        (None, diags)
    } else {
        (Some(topo), diags)
    }
}

struct PendingIface {
    name: String,
    network: NetId,
    address: Option<Ipv4Addr>,
    span: Span,
}

fn build_inner(spec: &TopologySpec, cx: &mut Cx) -> Topology {
    let host_specs: Vec<(&spec::Name, &spec::HostSpec)> = spec.hosts.iter().collect();
    cx.name(&spec.lab, "lab");
    let mode = spec.mode.value;

    // Networks.
    let mut networks: Vec<Network> = Vec::new();
    let mut net_ids = BTreeMap::new();
    let mut by_start: BTreeMap<u32, usize> = BTreeMap::new();
    for (name, net) in &spec.networks {
        cx.name(name, "network");
        let cidr = match net.cidr.value.trim().parse::<Ipv4Network>() {
            Ok(c) if c.prefix() > 30 => {
                cx.error(
                    net.cidr.span,
                    format!("network {} is too small for a lab", c),
                    "use a prefix of /30 or shorter, e.g. /24",
                );
                c
            }
            Ok(c) if c.network() != c.ip() => {
                cx.error(
                    net.cidr.span,
                    format!("`{}` has host bits set", net.cidr.value),
                    format!("the network is written {}/{}", c.network(), c.prefix()),
                );
                c
            }
            Ok(c) => c,
            Err(_) => {
                cx.error(
                    net.cidr.span,
                    format!("`{}` is not an IPv4 network", net.cidr.value),
                    "write it as ADDRESS/PREFIX, e.g. 192.168.4.0/24",
                );
                // A placeholder that overlaps nothing (prefix 32 is skipped below).
                Ipv4Network::from(Ipv4Addr::UNSPECIFIED)
            }
        };
        // Earlier networks by first address: one that overlaps this one is
        // the nearest below or above it (logarithmic, not a scan of all).
        if cidr.prefix() < 32 {
            let (first, last) = (u32::from(cidr.network()), u32::from(cidr.broadcast()));
            let below = by_start.range(..=first).next_back().map(|(_, i)| *i);
            let above = by_start.range(first..).next().map(|(_, i)| *i);
            for idx in below.into_iter().chain(above) {
                let other: &Network = &networks[idx];
                let (o_first, o_last) = (u32::from(other.cidr.network()), u32::from(other.cidr.broadcast()));
                if o_first <= last && first <= o_last {
                    cx.error(
                        net.cidr.span,
                        format!(
                            "network `{}` ({cidr}) overlaps network `{}` ({})",
                            name.value, other.name, other.cidr
                        ),
                        "lab networks must be disjoint",
                    );
                    break;
                }
            }
            by_start.entry(first).or_insert(networks.len());
        }
        net_ids.insert(name.value.clone(), NetId(networks.len()));
        networks.push(Network {
            name: name.value.clone(),
            cidr,
        });
    }

    // Hosts and their interfaces (addresses assigned below).
    let mut host_ids: BTreeMap<String, HostId> = BTreeMap::new();
    for (i, (name, _)) in spec.hosts.iter().enumerate() {
        host_ids.insert(name.value.clone(), HostId(i));
    }
    let mut used: BTreeMap<Ipv4Addr, (String, Span)> = BTreeMap::new();
    let mut pending: Vec<Vec<PendingIface>> = Vec::new();
    for (name, host) in &spec.hosts {
        cx.name(name, "host");
        let mut ifaces: Vec<PendingIface> = Vec::new();
        // Names and networks seen on this host (sets: linear in interfaces).
        let mut seen_names = std::collections::HashSet::new();
        let mut seen_nets = std::collections::HashSet::new();
        for (i, iface) in host.interfaces.iter().enumerate() {
            let iname = iface
                .name
                .as_ref()
                .map_or_else(|| format!("eth{i}"), |n| n.value.clone());
            if let Some(n) = &iface.name
                && !is_interface_name(&n.value)
            {
                cx.error(
                    n.span,
                    format!("`{}` is not a usable interface name", n.value),
                    "Linux interface names have 1 to 15 characters: letters, digits, `-`, `_`, `.`",
                );
            }
            if !seen_names.insert(iname.clone()) {
                cx.error(
                    iface.span,
                    format!("host `{}` has two interfaces named {iname}", name.value),
                    "give each interface its own `name`",
                );
            }
            let Some(&net) = lookup(cx, &net_ids, &iface.network, "network") else {
                continue;
            };
            if !seen_nets.insert(net) {
                cx.error(
                    iface.network.span,
                    format!(
                        "host `{}` has two interfaces on network `{}`",
                        name.value, iface.network.value
                    ),
                    "one interface per network and host",
                );
                // Nothing more to say of it (and no address to find for it).
                continue;
            }
            let cidr = networks[net.0].cidr;
            let address = iface.address.as_ref().and_then(|a| {
                let addr = cx.ipv4(a, "address")?;
                if !cidr.contains(addr) {
                    cx.error(
                        a.span,
                        format!("address {addr} is outside network `{}` ({cidr})", iface.network.value),
                        format!("use an address in {cidr}, or omit `address` to have one assigned"),
                    );
                } else if addr == cidr.network() || addr == cidr.broadcast() {
                    cx.error(
                        a.span,
                        format!("{addr} is the network or broadcast address of {cidr}"),
                        "pick a host address",
                    );
                } else if let Some((other, _)) = used.get(&addr) {
                    cx.error(
                        a.span,
                        format!("address {addr} is already used by {other}"),
                        "every address must be unique in the lab",
                    );
                } else {
                    used.insert(addr, (format!("host `{}`", name.value), a.span));
                }
                Some(addr)
            });
            ifaces.push(PendingIface {
                name: iname,
                network: net,
                address,
                span: iface.span,
            });
        }
        pending.push(ifaces);
    }

    // VIPs (services and VRRP) are reserved before addresses are assigned.
    let mut vips: BTreeMap<Ipv4Addr, Span> = BTreeMap::new();
    let service_vips: Vec<Option<Ipv4Addr>> = spec.services.iter().map(|s| cx.ipv4(&s.vip, "VIP")).collect();
    for (s, vip) in spec.services.iter().zip(&service_vips) {
        if let Some(v) = vip {
            vips.entry(*v).or_insert(s.vip.span);
        }
    }
    let mut vrrp_vips: Vec<Vec<(Ipv4Addr, Span)>> = Vec::new();
    if let Some(ha) = &spec.ha {
        for inst in &ha.instances {
            let v: Vec<_> = inst
                .vips
                .iter()
                .filter_map(|s| cx.ipv4(s, "VIP").map(|a| (a, s.span)))
                .collect();
            for (a, span) in &v {
                vips.entry(*a).or_insert(*span);
            }
            vrrp_vips.push(v);
        }
    }

    // Deterministic assignment: in file order, the lowest free host address.
    for (hi, ifaces) in pending.iter_mut().enumerate() {
        for iface in ifaces.iter_mut().filter(|i| i.address.is_none()) {
            let cidr = networks[iface.network.0].cidr;
            let free = cidr
                .iter()
                .filter(|a| *a != cidr.network() && *a != cidr.broadcast())
                .find(|a| !used.contains_key(a) && !vips.contains_key(a));
            match free {
                Some(a) => {
                    used.insert(a, (format!("host `{}`", host_specs[hi].0.value), iface.span));
                    iface.address = Some(a);
                }
                None => cx.error(
                    iface.span,
                    format!("network {cidr} has no free address left"),
                    "use a larger network",
                ),
            }
        }
    }

    let init_default =
        spec.defaults
            .init
            .as_ref()
            .map(|i| i.value)
            .unwrap_or(match spec.provider.as_ref().map(|p| p.value) {
                Some(Provider::Ssh) => Init::Systemd,
                _ => Init::Daemon,
            });

    let mut hosts: Vec<Host> = Vec::new();
    for (hi, ((name, hspec), ifaces)) in spec.hosts.iter().zip(pending).enumerate() {
        let interfaces: Vec<Interface> = ifaces
            .into_iter()
            .map(|p| Interface {
                name: p.name,
                network: p.network,
                address: p.address.unwrap_or(Ipv4Addr::UNSPECIFIED),
                prefix: networks[p.network.0].cidr.prefix(),
            })
            .collect();
        let connected = |a: Ipv4Addr| interfaces.iter().any(|i| networks[i.network.0].cidr.contains(a));
        let gateway = hspec.gateway.as_ref().and_then(|g| {
            let a = cx.ipv4(g, "gateway")?;
            if !connected(a) {
                cx.error(
                    g.span,
                    format!("gateway {a} is not on any network of host `{}`", name.value),
                    "a gateway must be on a directly connected network",
                );
            }
            Some(a)
        });
        let mut routes = Vec::new();
        for r in &hspec.routes {
            let to = match r.to.value.trim().parse::<Ipv4Network>() {
                Ok(n) => n,
                Err(_) => {
                    cx.error(
                        r.to.span,
                        format!("`{}` is not an IPv4 network", r.to.value),
                        "write it as ADDRESS/PREFIX, e.g. 192.168.6.0/24",
                    );
                    continue;
                }
            };
            let Some(via) = cx.ipv4(&r.via, "next hop") else {
                continue;
            };
            if !connected(via) {
                cx.error(
                    r.via.span,
                    format!("next hop {via} is not on any network of host `{}`", name.value),
                    "a route's `via` must be on a directly connected network",
                );
            }
            routes.push(Route { to, via });
        }
        let ssh = ssh_target(
            cx,
            &name.value,
            spec.defaults.ssh.as_ref(),
            hspec.ssh.as_ref(),
            interfaces.first().map(|i| i.address),
        );
        hosts.push(Host {
            id: HostId(hi),
            name: name.value.clone(),
            role: hspec.role.value,
            interfaces,
            gateway,
            routes,
            ssh,
            init: hspec.init.as_ref().map_or(init_default, |i| i.value),
            persist: hspec.persist.as_ref().or(spec.defaults.persist.as_ref()).map_or(
                spec.provider.as_ref().map(|p| p.value) == Some(Provider::Ssh)
                    && hspec.init.as_ref().map_or(init_default, |i| i.value) == Init::Systemd,
                |p| p.value,
            ),
            os: hspec.os.as_ref().or(spec.defaults.os.as_ref()).map(|o| o.value),
            own_addresses: hspec
                .own_addresses
                .as_ref()
                .or(spec.defaults.own_addresses.as_ref())
                .map(|o| o.value),
            packages: hspec
                .packages
                .as_ref()
                .or(spec.defaults.packages.as_ref())
                .map_or(spec.provider.as_ref().map(|p| p.value) == Some(Provider::Ssh), |p| {
                    p.value
                }),
            page: None,
            extra_steps: extra_steps(cx, &hspec.steps),
        });
    }

    // Web.
    let web =
        Web {
            server: spec.web.server.as_ref().map(|s| s.value).unwrap_or(
                match spec.provider.as_ref().map(|p| p.value) {
                    Some(Provider::Ssh) => WebServer::Apache2,
                    _ => WebServer::Busybox,
                },
            ),
            docroot: match &spec.web.docroot {
                Some(d) if !is_safe_path(&d.value) => {
                    cx.error(
                        d.span,
                        format!("`{}` is not a usable directory", d.value),
                        "use an absolute path of letters, digits, `/._-+`",
                    );
                    d.value.clone()
                }
                Some(d) => d.value.clone(),
                None => "/var/www/html".into(),
            },
            docroot_declared: spec.web.docroot.is_some(),
        };

    // HA (parsed before services: it decides who owns the IPVS services).
    let ha = spec
        .ha
        .as_ref()
        .map(|h| build_ha(cx, h, &vrrp_vips, &host_ids, &hosts, &networks));

    // Services.
    let mut services = Vec::new();
    let mut seen_keys: BTreeSet<(Ipv4Addr, ServiceKey)> = BTreeSet::new();
    for (si, (s, vip)) in spec.services.iter().zip(service_vips).enumerate() {
        let Some(vip) = vip else { continue };
        if let Some(svc) = build_service(cx, si, s, vip, mode, &host_ids, &hosts, &networks, ha.as_ref()) {
            if !seen_keys.insert((svc.vip, svc.key)) {
                cx.error(
                    s.vip.span,
                    format!("service {} {} is declared twice", svc.vip, svc.ipvsadm_target()),
                    "merge the two services",
                );
            }
            services.push(svc);
        }
    }

    // VIP collisions with host addresses.
    for (s, svc) in spec.services.iter().zip(&services) {
        if let Some(h) = hosts.iter().find(|h| h.has_address(svc.vip)) {
            let allowed = svc.mode == Mode::Nat && svc.directors.contains(&h.id);
            if !allowed {
                let hint = if svc.mode == Mode::Nat {
                    "in NAT the VIP may be a director's own public address, never another host's".to_string()
                } else {
                    "in DR and TUN the VIP is an extra address: pick one no host uses".to_string()
                };
                cx.error(
                    s.vip.span,
                    format!("VIP {} collides with the address of host `{}`", svc.vip, h.name),
                    hint,
                );
            }
        }
    }

    // NAT: real servers route back through a director, and clients should not share their subnet.
    let mut gateways: BTreeMap<HostId, (Ipv4Addr, Span)> = BTreeMap::new();
    for (s, svc) in spec
        .services
        .iter()
        .zip(&services)
        .filter(|(_, svc)| svc.mode == Mode::Nat)
    {
        for rs in &svc.real_servers {
            let host = &hosts[rs.host.0];
            let Some(rif) = host.interfaces.iter().find(|i| i.address == rs.address) else {
                continue;
            };
            let mut candidates: Vec<Ipv4Addr> = svc
                .directors
                .iter()
                .filter_map(|d| hosts[d.0].interface_on(rif.network).map(|i| i.address))
                .collect();
            if let Some(ha) = &ha {
                candidates.extend(
                    ha.instances
                        .iter()
                        .filter(|i| i.network == rif.network)
                        .flat_map(|i| i.vips.iter().copied()),
                );
            }
            let rs_span = spec_rs_span(s, rs, &hosts);
            if candidates.is_empty() {
                cx.error(
                    rs_span,
                    format!("NAT real server `{}` shares no network with the director", host.name),
                    "put the real server on the director's inner network (the DIP's)",
                );
                continue;
            }
            // With HA the floating inner address is the right gateway.
            let preferred = if ha.is_some() && candidates.len() > 1 {
                *candidates.last().unwrap_or(&candidates[0])
            } else {
                candidates[0]
            };
            match host.gateway {
                Some(gw) if !candidates.contains(&gw) => {
                    let span = host_specs[rs.host.0].1.gateway.as_ref().map_or(rs_span, |g| g.span);
                    cx.error(
                        span,
                        format!("NAT real server `{}` has gateway {gw}, not the director's address", host.name),
                        format!("replies must return through the director: use {preferred} (or omit `gateway` to have it set)"),
                    );
                }
                Some(_) => {}
                None => {
                    gateways.entry(rs.host).or_insert((preferred, rs_span));
                }
            }
        }
        for client in hosts.iter().filter(|h| h.role == Role::Client) {
            for rs in &svc.real_servers {
                let rnet = hosts[rs.host.0]
                    .interfaces
                    .iter()
                    .find(|i| i.address == rs.address)
                    .map(|i| i.network);
                if let Some(ci) = client.interfaces.iter().find(|i| Some(i.network) == rnet) {
                    let span = host_specs[client.id.0]
                        .1
                        .interfaces
                        .first()
                        .map_or(host_specs[client.id.0].0.span, |i| i.span);
                    cx.warn(
                        span,
                        format!("NAT client `{}` ({}) is on the real servers' subnet {}", client.name, ci.address, networks[ci.network.0].cidr),
                        "replies would go straight to the client and bypass the director; put the client on the public network only",
                    );
                    break;
                }
            }
        }
    }
    for (id, (gw, _)) in gateways {
        hosts[id.0].gateway = Some(gw);
    }

    // Web pages for real servers.
    let page_template = spec.web.page.as_ref();
    for (hi, (_, hspec)) in spec.hosts.iter().enumerate() {
        let host = &hosts[hi];
        if host.role != Role::RealServer {
            if let Some(p) = &hspec.page {
                cx.error(
                    p.span,
                    format!(
                        "`page` is only for real servers, and `{}` is a {}",
                        host.name,
                        host.role.as_str()
                    ),
                    "remove it",
                );
            }
            continue;
        }
        let (template, span) = match (&hspec.page, page_template) {
            (Some(p), _) | (None, Some(p)) => (p.value.as_str(), Some(p.span)),
            (None, None) => (crate::assets::PAGE_TEMPLATE, None),
        };
        match render_page(template, &spec.lab.value, host) {
            Ok(page) => hosts[hi].page = Some(page),
            Err(e) => {
                let span = span.unwrap_or(host_specs[hi].0.span);
                cx.error(
                    span,
                    format!("page template for `{}` does not render: {e}", host.name),
                    "the page template sees `lab`, `host.name` and `host.address`",
                );
            }
        }
    }

    // Storage.
    let storage = spec
        .storage
        .as_ref()
        .and_then(|st| build_storage(cx, st, &host_ids, &hosts, &services));

    // Verify.
    let client = match &spec.verify.client {
        Some(c) => lookup(cx, &host_ids, c, "host").copied().filter(|id| {
            let ok = hosts[id.0].role == Role::Client;
            if !ok {
                cx.error(
                    c.span,
                    format!(
                        "verify client `{}` is a {}, not a client",
                        c.value,
                        hosts[id.0].role.as_str()
                    ),
                    "name a host with `role: client`",
                );
            }
            ok
        }),
        None => hosts.iter().find(|h| h.role == Role::Client).map(|h| h.id),
    };
    if client.is_none() && !services.is_empty() && spec.verify.client.is_none() {
        cx.warn(
            spec.lab.span,
            "the lab has no client host: `verify` cannot send traffic",
            "add a host with `role: client` on the VIP's network",
        );
    }
    let verify = Verify {
        client,
        requests: spec
            .verify
            .requests
            .as_ref()
            .and_then(|r| {
                cx.range(
                    r,
                    1,
                    100_000,
                    "request count",
                    "verify sends this many requests per service",
                )
            })
            .unwrap_or(60) as u32,
        tolerance: match &spec.verify.tolerance {
            Some(t) if !(0.0..=1.0).contains(&t.value) => {
                cx.error(
                    t.span,
                    format!("tolerance {} is out of range 0..=1", t.value),
                    "a fraction: 0.1 allows each share to be off by ±10%",
                );
                0.1
            }
            Some(t) => t.value,
            None => 0.1,
        },
    };

    let checks = build_checks(cx, &spec.checks, &host_ids);

    let hosts_len = hosts.len();
    let mgmt = spec.mgmt.as_ref().and_then(|m| build_mgmt(cx, m, &networks, hosts_len));

    // Roles that must exist.
    if !services.is_empty() && !hosts.iter().any(|h| h.role == Role::Director) {
        cx.error(
            spec.lab.span,
            "services are declared but no host has `role: director`",
            "add a director host",
        );
    }

    Topology {
        lab: spec.lab.value.clone(),
        description: spec.description.clone(),
        mode,
        provider: spec.provider.as_ref().map(|p| p.value),
        networks,
        hosts,
        services,
        web,
        ha,
        storage,
        verify,
        mgmt,
        checks,
        source: Arc::clone(&cx.file),
    }
}

fn build_checks(
    cx: &mut Cx,
    specs: &[Spanned<spec::CheckSpec>],
    host_ids: &BTreeMap<String, HostId>,
) -> Vec<UserCheck> {
    let mut out = Vec::new();
    let mut names: BTreeMap<&str, ()> = BTreeMap::new();
    for c in specs {
        let c = &c.value;
        if names.insert(c.name.value.as_str(), ()).is_some() {
            cx.error(
                c.name.span,
                format!("two checks are named `{}`", c.name.value),
                "give each check its own name: reports and JUnit files use it",
            );
        }
        if c.name.value.trim().is_empty() {
            cx.error(
                c.name.span,
                "a check needs a name",
                "say what it proves, e.g. `web1 serves /upload.txt`",
            );
        }
        let host = lookup(cx, host_ids, &c.host, "host").copied();
        if c.run.value.trim().is_empty() {
            cx.error(
                c.run.span,
                "the check runs an empty command",
                "give a shell command, e.g. `test -f /srv/www/upload.txt`",
            );
        }
        let status = cx.range_or(
            c.status.as_ref(),
            (0, 255),
            "exit status",
            "an exit status is 0..=255",
            0,
        ) as i32;
        let output = c.output.as_ref().and_then(|o| match regex::Regex::new(&o.value) {
            Ok(r) => Some(r),
            Err(e) => {
                let msg = e.to_string();
                let last = msg
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim()
                    .trim_start_matches("error: ")
                    .to_string();
                cx.error(
                    o.span,
                    format!("`output` is not a valid regular expression: {last}"),
                    "a regular expression (Rust regex syntax); escape special characters like `.` and `(` with `\\`",
                );
                None
            }
        });
        let timeout_secs = cx.range_or(
            c.timeout.as_ref(),
            (0, 3600),
            "timeout",
            "seconds to keep retrying the check",
            0,
        ) as u32;
        let interval_secs = cx.range_or(c.interval.as_ref(), (1, 600), "interval", "seconds between tries", 1) as u32;
        if let Some(host) = host {
            out.push(UserCheck {
                name: c.name.value.clone(),
                description: c.description.clone(),
                host,
                run: c.run.value.clone(),
                status,
                output,
                timeout_secs,
                interval_secs,
            });
        }
    }
    out
}

fn build_mgmt(cx: &mut Cx, m: &Spanned<spec::MgmtSpec>, networks: &[Network], hosts: usize) -> Option<Mgmt> {
    let cidr = match m.cidr.value.trim().parse::<Ipv4Network>() {
        Ok(c) => c,
        Err(_) => {
            cx.error(
                m.cidr.span,
                format!("`{}` is not an IPv4 network", m.cidr.value),
                "e.g. 10.250.0.0/24",
            );
            return None;
        }
    };
    if let Some(n) = networks.iter().find(|n| n.cidr.overlaps(cidr)) {
        cx.error(
            m.cidr.span,
            format!(
                "the management network {cidr} overlaps lab network `{}` ({})",
                n.name, n.cidr
            ),
            "pick a management network apart from the lab's",
        );
        return None;
    }
    let mut free = cidr.iter().filter(|a| *a != cidr.network() && *a != cidr.broadcast());
    let gateway = free.next()?;
    let addresses: Vec<Ipv4Addr> = free.take(hosts).collect();
    if addresses.len() < hosts {
        cx.error(
            m.cidr.span,
            format!("{cidr} has no room for {hosts} hosts and this machine"),
            "use a larger network",
        );
        return None;
    }
    Some(Mgmt {
        cidr,
        gateway,
        addresses,
    })
}

fn extra_steps(cx: &mut Cx, steps: &[Spanned<serde_yaml::Value>]) -> Vec<ExtraStep> {
    let mut out = Vec::new();
    for s in steps {
        let serde_yaml::Value::Mapping(m) = &s.value else {
            cx.error(
                s.span,
                "a step is a mapping",
                "e.g. `- file: { path: /srv/x, content: hi }` with a `why:`",
            );
            continue;
        };
        let mut m = m.clone();
        let phase = match m.remove("phase") {
            None => "services",
            Some(serde_yaml::Value::String(p)) => match super::PHASES.iter().find(|x| **x == p) {
                Some(x) => x,
                None => {
                    cx.error(
                        s.span,
                        format!("unknown phase `{p}`"),
                        format!("phases: {}", super::PHASES.join(", ")),
                    );
                    continue;
                }
            },
            Some(_) => {
                cx.error(
                    s.span,
                    "`phase` is a name",
                    format!("one of: {}", super::PHASES.join(", ")),
                );
                continue;
            }
        };
        if m.get("why")
            .is_none_or(|w| w.as_str().is_none_or(|w| w.trim().is_empty()))
        {
            cx.error(
                s.span,
                "this step has no `why`",
                "say in one line why the lab needs it: it is shown in every plan",
            );
        }
        out.push(ExtraStep {
            phase,
            step: m,
            span: s.span,
        });
    }
    out
}

fn spec_rs_span(s: &Spanned<spec::ServiceSpec>, rs: &RealServer, hosts: &[Host]) -> Span {
    s.real_servers
        .iter()
        .find(|r| r.host.value == hosts[rs.host.0].name)
        .map_or(s.real_servers.span, |r| r.host.span)
}

fn render_page(template: &str, lab: &str, host: &Host) -> Result<String, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // A page is a few lines; a template that loops for ever runs out of fuel.
    env.set_fuel(Some(super::TEMPLATE_FUEL));
    env.render_str(
        template,
        minijinja::context! {
            lab => lab,
            host => minijinja::context! {
                name => host.name.clone(),
                address => host.primary_address().map(|a| a.to_string()).unwrap_or_default(),
            },
        },
    )
}

fn ssh_target(
    cx: &mut Cx,
    name: &str,
    defaults: Option<&spec::SshSpec>,
    own: Option<&spec::SshSpec>,
    addr: Option<Ipv4Addr>,
) -> SshTarget {
    let pick = |f: &dyn Fn(&spec::SshSpec) -> Option<Spanned<String>>| own.and_then(f).or_else(|| defaults.and_then(f));
    let port = own
        .and_then(|s| s.port.clone())
        .or_else(|| defaults.and_then(|s| s.port.clone()));
    let port = port
        .and_then(|p| cx.range(&p, 1, 65535, "SSH port", "TCP ports are 1..=65535"))
        .unwrap_or(22) as u16;
    let timeout = own
        .and_then(|s| s.connect_timeout.clone())
        .or_else(|| defaults.and_then(|s| s.connect_timeout.clone()));
    let timeout = timeout
        .and_then(|t| cx.range(&t, 1, 600, "connect timeout", "seconds"))
        .unwrap_or(10) as u32;
    if let Some(env) = pick(&|s| s.passphrase_env.clone())
        && (!env.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || env.value.is_empty())
    {
        cx.error(
            env.span,
            format!("`{}` is not an environment variable name", env.value),
            "name the variable that holds the passphrase, e.g. LAB_KEY_PASSPHRASE (never the passphrase itself)",
        );
    }
    SshTarget {
        host: pick(&|s| s.host.clone())
            .map(|s| s.value)
            .unwrap_or_else(|| addr.map_or_else(|| name.to_string(), |a| a.to_string())),
        user: pick(&|s| s.user.clone()).map_or_else(|| "root".into(), |s| s.value),
        port,
        key: pick(&|s| s.key.clone()).map(|s| s.value),
        passphrase_env: pick(&|s| s.passphrase_env.clone()).map(|s| s.value),
        known_hosts: pick(&|s| s.known_hosts.clone()).map(|s| s.value),
        jump: pick(&|s| s.jump.clone()).map(|s| s.value),
        become_root: own
            .and_then(|s| s.become_root)
            .or_else(|| defaults.and_then(|s| s.become_root))
            .unwrap_or(false),
        connect_timeout_secs: timeout,
    }
}

fn build_ha(
    cx: &mut Cx,
    ha: &Spanned<spec::HaSpec>,
    vrrp_vips: &[Vec<(Ipv4Addr, Span)>],
    host_ids: &BTreeMap<String, HostId>,
    hosts: &[Host],
    networks: &[Network],
) -> Ha {
    let mut instances = Vec::new();
    let mut vrids: BTreeMap<u8, String> = BTreeMap::new();
    if ha.instances.is_empty() {
        cx.error(
            ha.span,
            "`ha` has no VRRP instances",
            "add an instance with its VIPs and members",
        );
    }
    for (inst, vips) in ha.instances.iter().zip(vrrp_vips) {
        if !inst
            .name
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            || inst.name.value.is_empty()
        {
            cx.error(
                inst.name.span,
                format!("`{}` is not a usable VRRP instance name", inst.name.value),
                "use letters, digits, `_` and `-`, e.g. VI_1",
            );
        }
        let vrid = cx
            .range(
                &inst.virtual_router_id,
                1,
                255,
                "virtual_router_id",
                "VRRP router ids are 1..=255",
            )
            .unwrap_or(1) as u8;
        if let Some(other) = vrids.insert(vrid, inst.name.value.clone()) {
            cx.error(
                inst.virtual_router_id.span,
                format!("virtual_router_id {vrid} is already used by instance {other}"),
                "each VRRP instance needs its own virtual_router_id",
            );
        }
        let advert_int = cx.range_or(
            inst.advert_int.as_ref(),
            (1, 255),
            "advert_int",
            "seconds between adverts",
            1,
        ) as u32;
        let from_env = match (&inst.auth_pass, &inst.auth_pass_env) {
            (Some(_), Some(e)) => {
                cx.error(
                    e.span,
                    "both auth_pass and auth_pass_env are given",
                    "keep one: auth_pass_env names an environment variable holding the password",
                );
                None
            }
            (None, Some(e)) => {
                let valid = !e.value.is_empty()
                    && !e.value.starts_with(|c: char| c.is_ascii_digit())
                    && e.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    cx.error(
                        e.span,
                        format!("`{}` is not an environment variable name", e.value),
                        "use letters, digits and `_`, e.g. VRRP_PASS",
                    );
                    None
                } else {
                    match std::env::var(&e.value) {
                        Ok(v) => Some(crate::spec::Spanned { value: v, span: e.span }),
                        Err(_) => {
                            cx.error(
                                e.span,
                                format!("the environment variable {} (auth_pass_env) is not set", e.value),
                                format!("export {}=<password>; the password stays out of the lab file", e.value),
                            );
                            None
                        }
                    }
                }
            }
            _ => None,
        };
        let auth_pass = inst.auth_pass.as_ref().or(from_env.as_ref()).map(|p| {
            if p.value.is_empty()
                || !p
                    .value
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '"' && c != '\'' && c != '#' && c != '!')
            {
                cx.error(
                    p.span,
                    "auth_pass has characters keepalived.conf cannot hold",
                    "use letters, digits and punctuation other than quotes, `#` and `!`",
                );
            } else if p.value.len() > 8 {
                cx.warn(
                    p.span,
                    format!(
                        "auth_pass is {} characters long; keepalived uses only the first 8",
                        p.value.len()
                    ),
                    "shorten it to 8 characters so both sides obviously agree",
                );
            }
            Secret::new(p.value.clone())
        });
        // All VIPs of an instance live on one network.
        let mut network = None;
        for (vip, span) in vips {
            match networks.iter().position(|n| n.cidr.contains(*vip)) {
                Some(n) if network.is_none() || network == Some(NetId(n)) => network = Some(NetId(n)),
                Some(_) => cx.error(
                    *span,
                    format!("VIP {vip} is on another network than the instance's first VIP"),
                    "split the VIPs into one instance per network (use a sync group for NAT)",
                ),
                None => cx.error(
                    *span,
                    format!("VIP {vip} is on no lab network"),
                    "a VRRP VIP must be inside a network the directors are on",
                ),
            }
        }
        if vips.is_empty() {
            cx.error(
                inst.name.span,
                format!("VRRP instance {} has no VIPs", inst.name.value),
                "list the addresses it moves in `vips`",
            );
        }
        let nopreempt = inst.nopreempt.as_ref().is_some_and(|n| n.value);
        if let (true, Some(d)) = (nopreempt, &inst.preempt_delay) {
            cx.error(
                d.span,
                format!(
                    "instance {} has both `nopreempt` and `preempt_delay`: keepalived refuses them together",
                    inst.name.value
                ),
                "choose one: `nopreempt` (a recovered MASTER never takes the VIP back) or `preempt_delay` (it takes it back after that many seconds)",
            );
        }
        let mut members = Vec::new();
        let mut priorities: BTreeMap<u8, String> = BTreeMap::new();
        for m in &inst.members {
            let Some(&hid) = lookup(cx, host_ids, &m.host, "host") else {
                continue;
            };
            let host = &hosts[hid.0];
            if host.role != Role::Director {
                cx.error(
                    m.host.span,
                    format!(
                        "VRRP member `{}` is a {}, not a director",
                        host.name,
                        host.role.as_str()
                    ),
                    "only directors run keepalived",
                );
                continue;
            }
            let prio = cx
                .range(
                    &m.priority,
                    1,
                    254,
                    "priority",
                    "VRRP priorities are 1..=254 (255 is reserved for the address owner)",
                )
                .unwrap_or(1) as u8;
            if let Some(other) = priorities.insert(prio, host.name.clone()) {
                cx.error(
                    m.priority.span,
                    format!("priority {prio} is also {other}'s in instance {}", inst.name.value),
                    "members of one instance need distinct priorities, e.g. 100 and 98",
                );
            }
            if nopreempt && m.state.value == VrrpState::Master {
                let span = inst.nopreempt.as_ref().map_or(m.state.span, |_| m.state.span);
                cx.error(span, format!("`nopreempt` needs initial state BACKUP, but `{}` starts as MASTER", host.name), "keepalived ignores nopreempt on a MASTER: set every member's state to BACKUP and let priority decide");
            }
            if inst.preempt_delay.is_some() && m.state.value == VrrpState::Master {
                cx.error(
                    m.state.span,
                    format!(
                        "`preempt_delay` needs initial state BACKUP, but `{}` starts as MASTER",
                        host.name
                    ),
                    "set every member's state to BACKUP",
                );
            }
            let Some(net) = network else { continue };
            let Some(iface) = host.interface_on(net) else {
                cx.error(
                    m.host.span,
                    format!(
                        "director `{}` has no interface on network `{}` where instance {}'s VIPs live",
                        host.name, networks[net.0].name, inst.name.value
                    ),
                    "add an interface on that network",
                );
                continue;
            };
            members.push(VrrpMember {
                host: hid,
                state: m.state.value,
                priority: prio,
                interface: iface.name.clone(),
                address: iface.address,
            });
        }
        if inst.members.len() < 2 {
            cx.warn(
                inst.name.span,
                format!(
                    "VRRP instance {} has fewer than two members: nothing can fail over",
                    inst.name.value
                ),
                "add a second director as BACKUP",
            );
        }
        if inst
            .members
            .iter()
            .filter(|m| m.state.value == VrrpState::Master)
            .count()
            > 1
        {
            cx.error(
                inst.name.span,
                format!("VRRP instance {} has more than one MASTER", inst.name.value),
                "one member starts as MASTER, the others as BACKUP",
            );
        }
        instances.push(VrrpInstance {
            name: inst.name.value.clone(),
            virtual_router_id: vrid,
            advert_int,
            auth_pass,
            vips: vips.iter().map(|(a, _)| *a).collect(),
            network: network.unwrap_or(NetId(0)),
            nopreempt,
            preempt_delay: inst
                .preempt_delay
                .as_ref()
                .and_then(|p| cx.range(p, 0, 1000, "preempt_delay", "seconds"))
                .map(|p| p as u32),
            unicast: inst.unicast.unwrap_or(false),
            track_script: inst.track_script.as_ref().and_then(|ts| {
                let ts = &ts.value;
                let script = TrackScript {
                    run: ts.run.value.clone(),
                    interval: cx.range_or(ts.interval.as_ref(), (1, 3600), "interval", "seconds between runs", 2)
                        as u32,
                    weight: cx.range_or(
                        ts.weight.as_ref(),
                        (-253, 253),
                        "weight",
                        "priority change while it fails",
                        -20,
                    ) as i32,
                    fall: cx.range_or(ts.fall.as_ref(), (1, 100), "fall", "failures before it counts", 2) as u32,
                    rise: cx.range_or(
                        ts.rise.as_ref(),
                        (1, 100),
                        "rise",
                        "successes before it counts again",
                        2,
                    ) as u32,
                };
                if ts.run.value.trim().is_empty() || ts.run.value.contains('"') || ts.run.value.contains('\n') {
                    cx.error(
                        ts.run.span,
                        "a track_script command must be one line without double quotes",
                        "keepalived quotes it as `script \"...\"`; e.g. `run: pidof -s busybox`",
                    );
                    return None;
                }
                Some(script)
            }),
            members,
        });
    }
    Ha { instances }
}

#[allow(clippy::too_many_arguments)]
fn build_service(
    cx: &mut Cx,
    index: usize,
    s: &Spanned<spec::ServiceSpec>,
    vip: Ipv4Addr,
    topo_mode: Mode,
    host_ids: &BTreeMap<String, HostId>,
    hosts: &[Host],
    networks: &[Network],
    ha: Option<&Ha>,
) -> Option<Service> {
    let mode = s.mode.as_ref().map_or(topo_mode, |m| m.value);
    let name = match &s.name {
        Some(n) => {
            cx.name(n, "service");
            n.value.clone()
        }
        None => format!("svc{}", index + 1),
    };
    let protocol = s.protocol.as_ref().map_or(Protocol::Tcp, |p| p.value);
    let port = s
        .port
        .as_ref()
        .and_then(|p| {
            cx.range(
                p,
                0,
                65535,
                "port",
                "ports are 0..=65535 (0 with persistence: all ports)",
            )
        })
        .map(|p| p as u16);
    let key = match (&s.fwmark, port) {
        (Some(m), None) => {
            let mark = cx.range(m, 1, u32::MAX as i64, "firewall mark", "marks are 1..=4294967295")? as u32;
            if s.ports.is_empty() {
                cx.error(
                    m.span,
                    "a firewall-mark service needs the `ports` whose packets get the mark",
                    "e.g. `ports: [80, 443]`",
                );
            }
            ServiceKey::Fwmark(mark)
        }
        (Some(m), Some(_)) => {
            cx.error(
                m.span,
                "a service has either `port` or `fwmark`, not both",
                "for several ports use `fwmark` with `ports: [...]`",
            );
            return None;
        }
        (None, Some(p)) => match protocol {
            Protocol::Tcp => ServiceKey::Tcp(p),
            Protocol::Udp => ServiceKey::Udp(p),
        },
        (None, None) => {
            cx.error(
                s.vip.span,
                format!("service {name} has no `port` (or `fwmark`)"),
                "add `port: 80`",
            );
            return None;
        }
    };
    if !s.ports.is_empty() && s.fwmark.is_none() {
        cx.error(
            s.ports[0].span,
            "`ports` is only for firewall-mark services",
            "add `fwmark: N`, or use `port` for a single port",
        );
    }
    let mark_ports: Vec<u16> = s
        .ports
        .iter()
        .filter_map(|p| cx.range(p, 1, 65535, "port", "ports are 1..=65535"))
        .map(|p| p as u16)
        .collect();
    let scheduler = s.scheduler.as_ref().map_or(Scheduler::Wlc, |x| x.value);
    let mut sched_flags = Vec::new();
    for f in &s.sched_flags {
        if scheduler.flags().contains(&f.value.as_str()) {
            sched_flags.push(f.value.clone());
        } else {
            let hint = match Scheduler::ALL.iter().find(|x| x.flags().contains(&f.value.as_str())) {
                Some(x) => format!(
                    "`{}` is a flag of the `{}` scheduler, and this service uses `{}`",
                    f.value,
                    x.as_str(),
                    scheduler.as_str()
                ),
                None => "scheduler flags are sh-fallback, sh-port (sh) and mh-fallback, mh-port (mh)".into(),
            };
            cx.error(
                f.span,
                format!(
                    "scheduler flag `{}` is not valid with scheduler `{}`",
                    f.value,
                    scheduler.as_str()
                ),
                hint,
            );
        }
    }
    let persistence = s
        .persistence
        .as_ref()
        .and_then(|p| cx.range(p, 1, 2_678_400, "persistence timeout", "seconds, 1..=2678400 (31 days)"))
        .map(|p| p as u32);
    let persistence_netmask = s.persistence_netmask.as_ref().and_then(|m| {
        if persistence.is_none() && s.persistence.is_none() {
            cx.error(
                m.span,
                "`persistence_netmask` without `persistence`",
                "add `persistence: SECONDS`, the netmask only groups clients for persistence",
            );
        }
        let a = cx.ipv4(m, "netmask")?;
        if Ipv4Network::with_netmask(Ipv4Addr::UNSPECIFIED, a).is_err() {
            cx.error(m.span, format!("{a} is not a netmask"), "e.g. 255.255.255.0");
        }
        Some(a)
    });
    if port == Some(0) && persistence.is_none() && s.persistence.is_none() {
        let span = s.port.as_ref().map_or(s.vip.span, |p| p.span);
        cx.error(
            span,
            "port 0 (all ports) needs persistence",
            "ipvsadm refuses a zero port for a non-persistent service: add `persistence: 600`",
        );
    }
    let one_packet = match &s.one_packet {
        Some(o) if o.value && protocol != Protocol::Udp => {
            cx.error(
                o.span,
                "`one_packet` is only for UDP services",
                "remove it, or set `protocol: udp`",
            );
            false
        }
        Some(o) if o.value && mode == Mode::Nat => {
            cx.error(
                o.span,
                "`one_packet` does not work in NAT mode: the director frees each datagram's connection entry at once, so it cannot rewrite the reply back to the VIP and the client gets no answer",
                "use one-packet scheduling with `mode: dr` or `mode: tun` (replies go straight to the client), or remove `one_packet`",
            );
            false
        }
        Some(o) => o.value,
        None => false,
    };

    // Directors.
    let directors: Vec<HostId> = match &s.directors {
        Some(list) => list
            .iter()
            .filter_map(|d| {
                let id = *lookup(cx, host_ids, d, "host")?;
                if hosts[id.0].role != Role::Director {
                    cx.error(
                        d.span,
                        format!("`{}` is a {}, not a director", d.value, hosts[id.0].role.as_str()),
                        "list hosts with `role: director`",
                    );
                    return None;
                }
                Some(id)
            })
            .collect(),
        None => hosts
            .iter()
            .filter(|h| h.role == Role::Director)
            .map(|h| h.id)
            .collect(),
    };
    let keepalived = ha.is_some_and(|ha| {
        directors
            .iter()
            .all(|d| ha.instances.iter().any(|i| i.members.iter().any(|m| m.host == *d)))
            && !directors.is_empty()
    });
    if directors.len() > 1 && !keepalived {
        cx.error(
            s.vip.span,
            format!(
                "service {name} has {} directors but no VRRP instance manages them",
                directors.len()
            ),
            "add an `ha:` section with both directors as members, or name one director with `directors: [...]`",
        );
    }
    if keepalived && !ha.is_some_and(|ha| ha.instances.iter().any(|i| i.vips.contains(&vip))) {
        cx.error(
            s.vip.span,
            format!("VIP {vip} of service {name} is in no VRRP instance"),
            "add it to an instance's `vips`: with keepalived, VRRP is what puts the VIP on the active director",
        );
    }
    // The VIP must be placeable on each director.
    for d in &directors {
        let host = &hosts[d.0];
        if !host.interfaces.iter().any(|i| networks[i.network.0].cidr.contains(vip)) {
            cx.error(
                s.vip.span,
                format!("VIP {vip} is on no network of director `{}`", host.name),
                "the VIP must be inside one of the director's networks so it knows where to answer for it",
            );
        }
    }

    // Real servers.
    let mut real_servers = Vec::new();
    for r in &s.real_servers.value {
        let Some(&hid) = lookup(cx, host_ids, &r.host, "host") else {
            continue;
        };
        let host = &hosts[hid.0];
        if host.role != Role::RealServer {
            cx.error(
                r.host.span,
                format!("`{}` is a {}, not a real server", host.name, host.role.as_str()),
                "real servers must have `role: real_server`",
            );
            continue;
        }
        if real_servers.iter().any(|x: &RealServer| x.host == hid) {
            cx.error(
                r.host.span,
                format!("real server `{}` is listed twice in service {name}", host.name),
                "list each real server once",
            );
            continue;
        }
        let weight = r
            .weight
            .as_ref()
            .and_then(|w| cx.range(w, 0, 65535, "weight", "weights are 0..=65535 (0 stops new connections)"))
            .unwrap_or(1) as u32;
        let rport = match (&r.port, port) {
            (Some(p), svc_port) => {
                let v = cx.range(p, 1, 65535, "port", "ports are 1..=65535").unwrap_or(0) as u16;
                if mode != Mode::Nat && svc_port.is_some() && svc_port != Some(v) {
                    cx.error(
                        p.span,
                        format!("real server port {v} differs from service port {} in {} mode", svc_port.unwrap_or(0), mode.as_str().to_uppercase()),
                        "only NAT can map ports; ipvsadm would silently use the service port in DR/TUN. Make them equal or use NAT",
                    );
                }
                if matches!(key, ServiceKey::Fwmark(_)) {
                    cx.error(
                        p.span,
                        "real servers of a firewall-mark service take no port",
                        "remove `port`: the packet keeps its destination port",
                    );
                }
                v
            }
            (None, Some(p)) => p,
            (None, None) => 0,
        };
        let address = match &r.address {
            Some(a) => {
                let Some(addr) = cx.ipv4(a, "address") else { continue };
                if !host.has_address(addr) {
                    cx.error(
                        a.span,
                        format!("{addr} is not an address of `{}`", host.name),
                        "name one of the host's interface addresses",
                    );
                }
                addr
            }
            None => {
                let shared = directors.first().and_then(|d| {
                    host.interfaces
                        .iter()
                        .find(|i| hosts[d.0].interface_on(i.network).is_some())
                });
                match shared.or(host.interfaces.first()) {
                    Some(i) => i.address,
                    None => {
                        cx.error(
                            r.host.span,
                            format!("real server `{}` has no interface", host.name),
                            "give it an interface",
                        );
                        continue;
                    }
                }
            }
        };
        for d in &directors {
            let dh = &hosts[d.0];
            let shares = dh
                .interfaces
                .iter()
                .any(|i| networks[i.network.0].cidr.contains(address));
            match mode {
                Mode::Dr if !shares => cx.error(
                    r.host.span,
                    format!("DR real server `{}` ({address}) is not on a network of director `{}`", host.name, dh.name),
                    "in DR the director only rewrites the MAC address: director and real servers must share one L2 network (use TUN across subnets)",
                ),
                Mode::Tun if !shares && !dh.routes.iter().any(|rt| rt.to.contains(address)) && dh.gateway.is_none() => cx.error(
                    r.host.span,
                    format!("director `{}` has no route to TUN real server `{}` ({address})", dh.name, host.name),
                    "add a `routes` entry (or a `gateway`) on the director towards the real server's network",
                ),
                _ => {}
            }
        }
        real_servers.push(RealServer {
            host: hid,
            address,
            port: rport,
            weight,
        });
    }
    if s.real_servers.value.is_empty() {
        cx.error(
            s.real_servers.span,
            format!("service {name} has no real servers"),
            "list at least one `- host: NAME`",
        );
    }

    // keepalived-only settings.
    let udp = match key {
        ServiceKey::Udp(_) => true,
        ServiceKey::Fwmark(_) => protocol == Protocol::Udp,
        ServiceKey::Tcp(_) => false,
    };
    let health_check = s.health_check.as_ref().map(|h| {
        if !keepalived {
            cx.error(
                h.span,
                "health checks are run by keepalived, and this service has none",
                "add an `ha:` section whose members are this service's directors",
            );
        }
        if udp && matches!(h.kind.value, CheckKind::Http | CheckKind::Tcp) {
            cx.error(
                h.kind.span,
                format!(
                    "a `{}` health check connects over TCP, and service {name} is UDP: keepalived would find every real server down",
                    match h.kind.value {
                        CheckKind::Http => "http",
                        _ => "tcp",
                    }
                ),
                "use `type: misc` with a script that asks the UDP service, or leave the health check out",
            );
        }
        build_check(cx, h)
    });
    let sorry_server = s.sorry_server.as_ref().and_then(|ss| {
        if !keepalived {
            cx.error(
                ss.span,
                "a sorry server is keepalived's, and this service has none",
                "add an `ha:` section whose members are this service's directors",
            );
        }
        let addr = match (&ss.host, &ss.address) {
            (Some(h), None) => {
                let id = *lookup(cx, host_ids, h, "host")?;
                hosts[id.0].primary_address()?
            }
            (None, Some(a)) => cx.ipv4(a, "address")?,
            _ => {
                cx.error(
                    ss.span,
                    "a sorry server needs exactly one of `host` or `address`",
                    "e.g. `sorry_server: { host: storage, port: 80 }`",
                );
                return None;
            }
        };
        let given = ss
            .port
            .as_ref()
            .and_then(|p| cx.range(p, 1, 65535, "port", "ports are 1..=65535").map(|v| (v as u16, p.span)));
        // The sorry server is forwarded to like a real server: a firewall
        // mark's or an all-ports service's packets keep their port (0 in
        // IPVS), and outside NAT no port can be mapped.
        let p = match (key, given) {
            (ServiceKey::Fwmark(_), _) | (ServiceKey::Tcp(0) | ServiceKey::Udp(0), _) => 0,
            (ServiceKey::Tcp(sp) | ServiceKey::Udp(sp), Some((gp, span))) if mode != Mode::Nat && gp != sp => {
                cx.error(
                    span,
                    format!(
                        "sorry server port {gp} differs from service port {sp} in {} mode",
                        mode.as_str().to_uppercase()
                    ),
                    "the sorry server gets the packet unchanged, so it answers on the service's port: remove `port` (only NAT can map ports)",
                );
                sp
            }
            (ServiceKey::Tcp(_) | ServiceKey::Udp(_), Some((gp, _))) => gp,
            (ServiceKey::Tcp(sp) | ServiceKey::Udp(sp), None) => sp,
        };
        Some((addr, p))
    });
    let inhibit = s.inhibit_on_failure.as_ref().map(|i| (i.span, i.value));
    for (field, span) in [
        ("delay_loop", s.delay_loop.as_ref().map(|v| v.span)),
        ("quorum", s.quorum.as_ref().map(|v| v.span)),
        (
            "inhibit_on_failure",
            inhibit.filter(|(_, on)| *on).map(|(span, _)| span),
        ),
    ] {
        if let (Some(span), false) = (span, keepalived) {
            cx.error(
                span,
                format!("`{field}` is a keepalived setting, and this service has no keepalived"),
                "add an `ha:` section, or remove it",
            );
        }
    }
    let delay_loop = cx.range_or(
        s.delay_loop.as_ref(),
        (1, 3600),
        "delay_loop",
        "seconds between health checks",
        6,
    ) as u32;
    let quorum = s
        .quorum
        .as_ref()
        .and_then(|q| cx.range(q, 1, 65535, "quorum", "minimum total weight of healthy real servers"))
        .map(|q| q as u32);

    Some(Service {
        name,
        vip,
        key,
        mark_protocol: protocol,
        mark_ports,
        scheduler,
        sched_flags,
        persistence,
        persistence_netmask,
        one_packet,
        mode,
        directors,
        real_servers,
        keepalived,
        health_check,
        sorry_server,
        delay_loop,
        quorum,
        inhibit_on_failure: inhibit.is_some_and(|(_, on)| on),
    })
}

fn build_check(cx: &mut Cx, h: &Spanned<spec::HealthCheckSpec>) -> HealthCheck {
    let kind = h.kind.value;
    let secs = |cx: &mut Cx, v: &Option<Spanned<i64>>, what: &str, default: u32| {
        v.as_ref()
            .and_then(|v| cx.range(v, 1, 3600, what, "seconds"))
            .map_or(default, |v| v as u32)
    };
    let path = match &h.path {
        Some(p) if !p.value.starts_with('/') || p.value.chars().any(|c| c.is_whitespace() || c == '"') => {
            cx.error(
                p.span,
                format!("`{}` is not a usable URL path", p.value),
                "start it with `/`, without spaces or quotes",
            );
            p.value.clone()
        }
        Some(p) => p.value.clone(),
        None => "/".into(),
    };
    if kind != CheckKind::Http {
        for (field, v) in [
            ("path", h.path.as_ref().map(|p| p.span)),
            ("status_code", h.status_code.as_ref().map(|p| p.span)),
            ("digest", h.digest.as_ref().map(|p| p.span)),
        ] {
            if let Some(span) = v {
                cx.error(span, format!("`{field}` is only for `type: http` checks"), "remove it");
            }
        }
    }
    let script = h.script.as_ref().map(|s| {
        if s.value.chars().any(|c| c == '"' || c == '\n') {
            cx.error(
                s.span,
                "a MISC_CHECK script cannot contain quotes or newlines",
                "put the logic in a script file and name it here",
            );
        }
        s.value.clone()
    });
    if kind == CheckKind::Misc && script.is_none() {
        cx.error(
            h.kind.span,
            "a `misc` check needs a `script`",
            "e.g. `script: /usr/local/bin/check-web`",
        );
    }
    if let (Some(_), Some(c)) = (&h.digest, &h.status_code) {
        cx.error(c.span, "`status_code` and `digest` are alternatives", "use one of them");
    }
    HealthCheck {
        kind,
        path,
        status_code: h
            .status_code
            .as_ref()
            .and_then(|c| cx.range(c, 100, 599, "status_code", "HTTP status codes are 100..=599"))
            .map(|c| c as u16),
        digest: h.digest.as_ref().map(|d| {
            if d.value.len() != 32 || !d.value.chars().all(|c| c.is_ascii_hexdigit()) {
                cx.error(
                    d.span,
                    "digest must be an MD5 sum (32 hex digits)",
                    "compute it with `genhash` or `curl -s URL | md5sum`",
                );
            }
            d.value.clone()
        }),
        script,
        connect_timeout: secs(cx, &h.connect_timeout, "connect_timeout", 3),
        retry: h
            .retry
            .as_ref()
            .and_then(|r| cx.range(r, 0, 100, "retry", "attempts"))
            .map_or(3, |r| r as u32),
        delay_before_retry: secs(cx, &h.delay_before_retry, "delay_before_retry", 3),
    }
}

fn build_storage(
    cx: &mut Cx,
    st: &Spanned<spec::StorageSpec>,
    host_ids: &BTreeMap<String, HostId>,
    hosts: &[Host],
    services: &[Service],
) -> Option<Storage> {
    let id = *lookup(cx, host_ids, &st.host, "host")?;
    let host = &hosts[id.0];
    if host.role != Role::Storage {
        cx.error(
            st.host.span,
            format!("`{}` is a {}, not a storage host", host.name, host.role.as_str()),
            "the storage host needs `role: storage`",
        );
    }
    for p in [&st.export, &st.mount] {
        if !is_safe_path(&p.value) {
            cx.error(
                p.span,
                format!("`{}` is not a usable directory", p.value),
                "use an absolute path of letters, digits, `/._-+`",
            );
        }
    }
    // The storage host must share a network with every real server.
    let real_servers: BTreeSet<HostId> = services
        .iter()
        .flat_map(|s| s.real_servers.iter().map(|r| r.host))
        .collect();
    let mut address = None;
    for rs in real_servers {
        let rh = &hosts[rs.0];
        match host.interfaces.iter().find(|i| rh.interface_on(i.network).is_some()) {
            Some(i) => {
                address.get_or_insert(i.address);
            }
            None => cx.error(
                st.host.span,
                format!(
                    "storage host `{}` shares no network with real server `{}`",
                    host.name, rh.name
                ),
                "put the storage host on the real servers' network",
            ),
        }
    }
    Some(Storage {
        host: id,
        address: address.or(host.primary_address())?,
        export: st.export.value.clone(),
        mount: st.mount.value.clone(),
        sync: st.sync.as_ref().map_or(SyncMode::Nfs, |s| s.value),
    })
}
