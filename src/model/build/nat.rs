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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::tests::{diagnostics, load};

    /// A NAT lab: `director` (public .4.5, inner .2.5), `web1` on the inner
    /// network with `web1_extra` after its interfaces, and `client_iface`
    /// as the client's interfaces.
    fn nat_lab(web1_extra: &str, client_iface: &str) -> String {
        format!(
            "lab: t\nmode: nat\nnetworks:\n  public: {{ cidr: 192.168.4.0/24 }}\n  private: {{ cidr: 192.168.2.0/24 }}\nhosts:\n  client:\n    role: client\n    interfaces: {client_iface}\n  director:\n    role: director\n    interfaces: [{{ network: public, address: 192.168.4.5 }}, {{ network: private, address: 192.168.2.5 }}]\n  web1:\n    role: real_server\n    interfaces: [{{ network: private, address: 192.168.2.100 }}]\n{web1_extra}services:\n  - vip: 192.168.4.5\n    port: 80\n    real_servers: [{{ host: web1 }}]\n"
        )
    }

    const PUBLIC_CLIENT: &str = "[{ network: public, address: 192.168.4.10 }]";

    fn gateway_of(text: &str, host: &str) -> Option<Ipv4Addr> {
        let l = load(text).unwrap();
        l.topology.hosts.iter().find(|h| h.name == host).unwrap().gateway
    }

    #[test]
    fn an_omitted_gateway_is_the_directors_inner_address() {
        let text = nat_lab("", PUBLIC_CLIENT);
        assert_eq!(gateway_of(&text, "web1"), Some("192.168.2.5".parse().unwrap()));
        // Nothing to warn about, and the client keeps having none.
        assert_eq!(diagnostics(&text), "");
        assert_eq!(gateway_of(&text, "client"), None);
    }

    #[test]
    fn a_declared_gateway_at_the_directors_address_is_kept() {
        let text = nat_lab("    gateway: 192.168.2.5\n", PUBLIC_CLIENT);
        assert_eq!(gateway_of(&text, "web1"), Some("192.168.2.5".parse().unwrap()));
    }

    #[test]
    fn a_declared_gateway_elsewhere_is_an_error_at_the_gateway() {
        let out = diagnostics(&nat_lab("    gateway: 192.168.2.1\n", PUBLIC_CLIENT));
        assert!(
            out.starts_with("error: NAT real server `web1` has gateway 192.168.2.1, not the director's address"),
            "{out}"
        );
        assert!(out.contains("t.yaml:16:14"), "at web1's gateway: {out}");
        assert!(
            out.contains(
                "replies must return through the director: use 192.168.2.5 (or omit `gateway` to have it set)"
            ),
            "{out}"
        );
    }

    #[test]
    fn with_ha_the_gateway_is_the_inner_vrrp_vip() {
        let text = "lab: t\nmode: nat\nnetworks:\n  public: { cidr: 192.168.4.0/24 }\n  private: { cidr: 192.168.2.0/24 }\nhosts:\n  d1:\n    role: director\n    interfaces: [{ network: public, address: 192.168.4.5 }, { network: private, address: 192.168.2.5 }]\n  d2:\n    role: director\n    interfaces: [{ network: public, address: 192.168.4.6 }, { network: private, address: 192.168.2.6 }]\n  web1:\n    role: real_server\n    interfaces: [{ network: private, address: 192.168.2.101 }]\nha:\n  instances:\n    - name: VI_PUB\n      virtual_router_id: 61\n      vips: [192.168.4.100]\n      members: [{ host: d1, state: MASTER, priority: 100 }, { host: d2, state: BACKUP, priority: 90 }]\n    - name: VI_PRIV\n      virtual_router_id: 62\n      vips: [192.168.2.254]\n      members: [{ host: d1, state: MASTER, priority: 100 }, { host: d2, state: BACKUP, priority: 90 }]\nservices:\n  - vip: 192.168.4.100\n    port: 80\n    real_servers: [{ host: web1 }]\n";
        assert_eq!(gateway_of(text, "web1"), Some("192.168.2.254".parse().unwrap()));
        // A director's own inner address is one of the candidates, but the
        // hint names the floating one.
        let wrong = text.replace(
            "address: 192.168.2.101 }]\n",
            "address: 192.168.2.101 }]\n    gateway: 192.168.2.1\n",
        );
        let out = diagnostics(&wrong);
        assert!(out.contains("use 192.168.2.254 (or omit"), "{out}");
        let own = text.replace(
            "address: 192.168.2.101 }]\n",
            "address: 192.168.2.101 }]\n    gateway: 192.168.2.6\n",
        );
        assert_eq!(gateway_of(&own, "web1"), Some("192.168.2.6".parse().unwrap()));
    }

    #[test]
    fn a_real_server_apart_from_the_director_has_no_gateway_to_use() {
        let text = nat_lab("", PUBLIC_CLIENT).replace(
            "[{ network: private, address: 192.168.2.100 }]",
            "[{ network: public, address: 192.168.4.100 }]",
        );
        // On the public network it shares one with the director after all;
        // a third network shares none.
        assert_eq!(gateway_of(&text, "web1"), Some("192.168.4.5".parse().unwrap()));
        let apart = text
            .replace(
                "  private: { cidr: 192.168.2.0/24 }\n",
                "  private: { cidr: 192.168.2.0/24 }\n  far: { cidr: 192.168.9.0/24 }\n",
            )
            .replace(
                "[{ network: public, address: 192.168.4.100 }]",
                "[{ network: far, address: 192.168.9.100 }]",
            );
        let out = diagnostics(&apart);
        assert!(
            out.contains("error: NAT real server `web1` shares no network with the director"),
            "{out}"
        );
    }

    #[test]
    fn a_client_on_the_real_servers_subnet_is_warned_about() {
        let out = diagnostics(&nat_lab("", "[{ network: private, address: 192.168.2.10 }]"));
        assert!(
            out.starts_with(
                "warning: NAT client `client` (192.168.2.10) is on the real servers' subnet 192.168.2.0/24"
            ),
            "{out}"
        );
        assert!(out.contains("t.yaml:9:20"), "at the client's first interface: {out}");
        assert_eq!(out.matches("warning:").count(), 1, "{out}");
    }

    #[test]
    fn a_vip_may_be_the_nat_directors_address_but_no_other_hosts() {
        // The director's own public address is the VIP above: fine.
        assert!(load(&nat_lab("", PUBLIC_CLIENT)).is_ok());
        let out = diagnostics(&nat_lab("", PUBLIC_CLIENT).replace("vip: 192.168.4.5", "vip: 192.168.4.10"));
        assert!(
            out.starts_with("error: VIP 192.168.4.10 collides with the address of host `client`"),
            "{out}"
        );
        assert!(out.contains("never another host's"), "{out}");
    }

    #[test]
    fn in_dr_a_vip_may_be_no_hosts_address() {
        // Not even the director's.
        let text = nat_lab("", PUBLIC_CLIENT)
            .replace("mode: nat", "mode: dr")
            .replace("vip: 192.168.4.5", "vip: 192.168.4.50")
            .replace(
                "[{ network: private, address: 192.168.2.100 }]",
                "[{ network: public, address: 192.168.4.100 }]",
            );
        assert!(load(&text).is_ok(), "{}", diagnostics(&text));
        let out = diagnostics(&text.replace("vip: 192.168.4.50", "vip: 192.168.4.100"));
        assert!(
            out.starts_with("error: VIP 192.168.4.100 collides with the address of host `web1`"),
            "{out}"
        );
        assert!(out.contains("in DR and TUN the VIP is an extra address"), "{out}");
        let out = diagnostics(&text.replace("vip: 192.168.4.50", "vip: 192.168.4.5"));
        assert!(
            out.starts_with("error: VIP 192.168.4.5 collides with the address of host `director`"),
            "{out}"
        );
    }
}
