//! Rules across services and hosts: a VIP may not be another host's address
//! (in NAT it may be its director's own), NAT real servers route their
//! replies through a director (their default gateway is set to a director's
//! address, or the inner VRRP VIP with HA, when omitted), and a NAT client
//! should not share the real servers' subnet.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::Cx;
use crate::diag::Span;
use crate::model::{Ha, Host, HostId, Mode, Network, RealServer, Role, Service};
use crate::spec::{self, Spanned, TopologySpec};

/// VIP collisions with host addresses.
pub(super) fn check_vip_collisions(cx: &mut Cx, spec: &TopologySpec, hosts: &[Host], services: &[Service]) {
    for (s, svc) in spec.services.iter().zip(services) {
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
}

/// What the NAT rules read.
struct Nat<'a> {
    /// The hosts as written, in file order (a host's id is its index).
    host_specs: Vec<(&'a spec::Name, &'a spec::HostSpec)>,
    hosts: &'a [Host],
    networks: &'a [Network],
    ha: Option<&'a Ha>,
}

/// NAT: real servers route back through a director, and clients should not
/// share their subnet. A real server without a `gateway` gets one.
pub(super) fn route_replies_through_directors(
    cx: &mut Cx,
    spec: &TopologySpec,
    hosts: &mut [Host],
    networks: &[Network],
    services: &[Service],
    ha: Option<&Ha>,
) {
    let nat = Nat {
        host_specs: spec.hosts.iter().collect(),
        hosts,
        networks,
        ha,
    };
    let mut gateways: BTreeMap<HostId, (Ipv4Addr, Span)> = BTreeMap::new();
    for (s, svc) in spec
        .services
        .iter()
        .zip(services)
        .filter(|(_, svc)| svc.mode == Mode::Nat)
    {
        for rs in &svc.real_servers {
            nat.gateway(cx, s, svc, rs, &mut gateways);
        }
        nat.warn_clients_on_real_server_subnet(cx, svc);
    }
    for (id, (gw, _)) in gateways {
        hosts[id.0].gateway = Some(gw);
    }
}

impl Nat<'_> {
    /// Checks a real server's gateway, or records the one it gets.
    fn gateway(
        &self,
        cx: &mut Cx,
        s: &Spanned<spec::ServiceSpec>,
        svc: &Service,
        rs: &RealServer,
        gateways: &mut BTreeMap<HostId, (Ipv4Addr, Span)>,
    ) {
        let hosts = self.hosts;
        let host = &hosts[rs.host.0];
        let Some(rif) = host.interfaces.iter().find(|i| i.address == rs.address) else {
            return;
        };
        let mut candidates: Vec<Ipv4Addr> = svc
            .directors
            .iter()
            .filter_map(|d| hosts[d.0].interface_on(rif.network).map(|i| i.address))
            .collect();
        if let Some(ha) = self.ha {
            candidates.extend(
                ha.instances
                    .iter()
                    .filter(|i| i.network == rif.network)
                    .flat_map(|i| i.vips.iter().copied()),
            );
        }
        let rs_span = spec_rs_span(s, rs, hosts);
        if candidates.is_empty() {
            cx.error(
                rs_span,
                format!("NAT real server `{}` shares no network with the director", host.name),
                "put the real server on the director's inner network (the DIP's)",
            );
            return;
        }
        // With HA the floating inner address is the right gateway.
        let preferred = if self.ha.is_some() && candidates.len() > 1 {
            *candidates.last().unwrap_or(&candidates[0])
        } else {
            candidates[0]
        };
        match host.gateway {
            Some(gw) if !candidates.contains(&gw) => {
                let span = self.host_specs[rs.host.0]
                    .1
                    .gateway
                    .as_ref()
                    .map_or(rs_span, |g| g.span);
                cx.error(
                    span,
                    format!(
                        "NAT real server `{}` has gateway {gw}, not the director's address",
                        host.name
                    ),
                    format!(
                        "replies must return through the director: use {preferred} (or omit `gateway` to have it set)"
                    ),
                );
            }
            Some(_) => {}
            None => {
                gateways.entry(rs.host).or_insert((preferred, rs_span));
            }
        }
    }

    fn warn_clients_on_real_server_subnet(&self, cx: &mut Cx, svc: &Service) {
        let hosts = self.hosts;
        for client in hosts.iter().filter(|h| h.role == Role::Client) {
            for rs in &svc.real_servers {
                let rnet = hosts[rs.host.0]
                    .interfaces
                    .iter()
                    .find(|i| i.address == rs.address)
                    .map(|i| i.network);
                if let Some(ci) = client.interfaces.iter().find(|i| Some(i.network) == rnet) {
                    let (name, hspec) = self.host_specs[client.id.0];
                    let span = hspec.interfaces.first().map_or(name.span, |i| i.span);
                    cx.warn(
                        span,
                        format!("NAT client `{}` ({}) is on the real servers' subnet {}", client.name, ci.address, self.networks[ci.network.0].cidr),
                        "replies would go straight to the client and bypass the director; put the client on the public network only",
                    );
                    break;
                }
            }
        }
    }
}

/// Where the service lists the real server (the list when it is not found).
fn spec_rs_span(s: &Spanned<spec::ServiceSpec>, rs: &RealServer, hosts: &[Host]) -> Span {
    s.real_servers
        .iter()
        .find(|r| r.host.value == hosts[rs.host.0].name)
        .map_or(s.real_servers.span, |r| r.host.span)
}
