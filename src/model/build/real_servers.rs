//! A service's real servers: real-server hosts, listed once, with a weight,
//! a port the mode can forward to, an address of theirs, and reachable
//! from every director the way the mode needs (one L2 network in DR, a
//! route in TUN).

use std::net::Ipv4Addr;

use super::{Cx, ServiceHead, lookup};
use crate::model::{Host, HostId, Mode, RealServer, Role, ServiceKey};
use crate::spec::{self, Spanned};

pub(super) fn build_real_servers(
    cx: &mut Cx,
    head: &ServiceHead<'_>,
    s: &Spanned<spec::ServiceSpec>,
) -> Vec<RealServer> {
    let mut real_servers = Vec::new();
    for r in &s.real_servers.value {
        if let Some(rs) = real_server(cx, head, r, &real_servers) {
            real_servers.push(rs);
        }
    }
    if s.real_servers.value.is_empty() {
        cx.error(
            s.real_servers.span,
            format!("service {} has no real servers", head.name),
            "list at least one `- host: NAME`",
        );
    }
    real_servers
}

/// One real server; None when it cannot be one (after an error).
fn real_server(
    cx: &mut Cx,
    head: &ServiceHead<'_>,
    r: &spec::RealServerSpec,
    earlier: &[RealServer],
) -> Option<RealServer> {
    let hid = *lookup(cx, head.known.host_ids, &r.host, "host")?;
    let host = &head.known.hosts[hid.0];
    if host.role != Role::RealServer {
        cx.error(
            r.host.span,
            format!("`{}` is a {}, not a real server", host.name, host.role.as_str()),
            "real servers must have `role: real_server`",
        );
        return None;
    }
    if earlier.iter().any(|x| x.host == hid) {
        cx.error(
            r.host.span,
            format!("real server `{}` is listed twice in service {}", host.name, head.name),
            "list each real server once",
        );
        return None;
    }
    let weight = r
        .weight
        .as_ref()
        .and_then(|w| cx.range(w, 0, 65535, "weight", "weights are 0..=65535 (0 stops new connections)"))
        .unwrap_or(1) as u32;
    let port = real_server_port(cx, head, r);
    let address = address(cx, head, r, host)?;
    check_reachable(cx, head, r, host, address);
    Some(RealServer {
        host: hid,
        address,
        port,
        weight,
    })
}

/// The port forwarded to: the real server's own (only NAT maps ports; a
/// firewall mark's packets keep theirs), else the service's.
fn real_server_port(cx: &mut Cx, head: &ServiceHead<'_>, r: &spec::RealServerSpec) -> u16 {
    let (mode, svc_port) = (head.mode, head.port);
    match &r.port {
        Some(p) => {
            let v = cx.range(p, 1, 65535, "port", "ports are 1..=65535").unwrap_or(0) as u16;
            if mode != Mode::Nat && svc_port.is_some() && svc_port != Some(v) {
                cx.error(
                    p.span,
                    format!("real server port {v} differs from service port {} in {} mode", svc_port.unwrap_or(0), mode.as_str().to_uppercase()),
                    "only NAT can map ports; ipvsadm would silently use the service port in DR/TUN. Make them equal or use NAT",
                );
            }
            if matches!(head.key, ServiceKey::Fwmark(_)) {
                cx.error(
                    p.span,
                    "real servers of a firewall-mark service take no port",
                    "remove `port`: the packet keeps its destination port",
                );
            }
            v
        }
        None => svc_port.unwrap_or(0),
    }
}

/// The address given (one of the host's), or the one on a network the
/// first director is on, or the first interface's.
fn address(cx: &mut Cx, head: &ServiceHead<'_>, r: &spec::RealServerSpec, host: &Host) -> Option<Ipv4Addr> {
    match &r.address {
        Some(a) => {
            let addr = cx.ipv4(a, "address")?;
            if !host.has_address(addr) {
                cx.error(
                    a.span,
                    format!("{addr} is not an address of `{}`", host.name),
                    "name one of the host's interface addresses",
                );
            }
            Some(addr)
        }
        None => {
            let hosts = head.known.hosts;
            let shared = head.directors.first().and_then(|d: &HostId| {
                host.interfaces
                    .iter()
                    .find(|i| hosts[d.0].interface_on(i.network).is_some())
            });
            match shared.or(host.interfaces.first()) {
                Some(i) => Some(i.address),
                None => {
                    cx.error(
                        r.host.span,
                        format!("real server `{}` has no interface", host.name),
                        "give it an interface",
                    );
                    None
                }
            }
        }
    }
}

/// DR needs a network shared with each director; TUN a route from each.
fn check_reachable(cx: &mut Cx, head: &ServiceHead<'_>, r: &spec::RealServerSpec, host: &Host, address: Ipv4Addr) {
    for d in head.directors {
        let dh = &head.known.hosts[d.0];
        let shares = dh
            .interfaces
            .iter()
            .any(|i| head.known.networks[i.network.0].cidr.contains(address));
        match head.mode {
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
}
