//! Services: the IPVS virtual service (key, scheduler, persistence,
//! one-packet scheduling), its directors and whether keepalived manages
//! them; real servers and keepalived's settings are in their own files.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::keepalived::{self, Keepalived};
use super::real_servers;
use super::{Cx, Known, ServiceHead, lookup};
use crate::model::{Ha, HostId, Mode, Protocol, Role, Scheduler, Service, ServiceKey};
use crate::spec::{Spanned, TopologySpec};

/// What every service is built against.
#[derive(Clone, Copy)]
struct Context<'a> {
    known: Known<'a>,
    /// The topology's mode, for services that do not name theirs.
    mode: Mode,
    ha: Option<&'a Ha>,
}

/// Each service whose VIP parses, and an error for one declared twice.
pub(super) fn build_services(
    cx: &mut Cx,
    spec: &TopologySpec,
    service_vips: Vec<Option<Ipv4Addr>>,
    known: Known<'_>,
    ha: Option<&Ha>,
) -> Vec<Service> {
    let sx = Context {
        known,
        mode: spec.mode.as_ref().map_or(Mode::Dr, |m| m.value),
        ha,
    };
    let mut services = Vec::new();
    let mut seen_keys: BTreeSet<(Ipv4Addr, ServiceKey)> = BTreeSet::new();
    for (si, (s, vip)) in spec.services.iter().zip(service_vips).enumerate() {
        let Some(vip) = vip else { continue };
        if let Some(svc) = build_service(cx, sx, si, s, vip) {
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
    services
}

type ServiceSpec = Spanned<crate::spec::ServiceSpec>;

fn build_service(cx: &mut Cx, sx: Context<'_>, index: usize, s: &ServiceSpec, vip: Ipv4Addr) -> Option<Service> {
    let mode = s.mode.as_ref().map_or(sx.mode, |m| m.value);
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
    let key = service_key(cx, s, &name, port, protocol)?;
    let mark_ports = mark_ports(cx, s);
    let (scheduler, sched_flags) = scheduler(cx, s);
    let (persistence, persistence_netmask) = persistence(cx, s, port);
    let one_packet = one_packet(cx, s, protocol, mode);
    let directors = directors(cx, s, sx.known);
    let keepalived = managed_by_keepalived(sx.ha, &directors);
    check_directors(cx, s, (&name, vip), &directors, keepalived, sx);
    let head = ServiceHead {
        known: sx.known,
        name: &name,
        mode,
        port,
        key,
        protocol,
        directors: &directors,
        keepalived,
    };
    let real_servers = real_servers::build_real_servers(cx, &head, s);
    let Keepalived {
        health_check,
        sorry_server,
        delay_loop,
        quorum,
        inhibit_on_failure,
    } = keepalived::settings(cx, &head, s);
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
        inhibit_on_failure,
    })
}

/// A port (TCP or UDP) or a firewall mark; None after an error that leaves
/// nothing more to check.
fn service_key(cx: &mut Cx, s: &ServiceSpec, name: &str, port: Option<u16>, protocol: Protocol) -> Option<ServiceKey> {
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
    Some(key)
}

/// A firewall-mark service's ports.
fn mark_ports(cx: &mut Cx, s: &ServiceSpec) -> Vec<u16> {
    if !s.ports.is_empty() && s.fwmark.is_none() {
        cx.error(
            s.ports[0].span,
            "`ports` is only for firewall-mark services",
            "add `fwmark: N`, or use `port` for a single port",
        );
    }
    s.ports
        .iter()
        .filter_map(|p| cx.range(p, 1, 65535, "port", "ports are 1..=65535"))
        .map(|p| p as u16)
        .collect()
}

/// The scheduler and those of its flags it has.
fn scheduler(cx: &mut Cx, s: &ServiceSpec) -> (Scheduler, Vec<String>) {
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
    (scheduler, sched_flags)
}

/// The persistence timeout and netmask (and port 0's need of persistence).
fn persistence(cx: &mut Cx, s: &ServiceSpec, port: Option<u16>) -> (Option<u32>, Option<Ipv4Addr>) {
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
    (persistence, persistence_netmask)
}

fn one_packet(cx: &mut Cx, s: &ServiceSpec, protocol: Protocol, mode: Mode) -> bool {
    match &s.one_packet {
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
    }
}

/// The directors named (or every director of the lab).
fn directors(cx: &mut Cx, s: &ServiceSpec, known: Known<'_>) -> Vec<HostId> {
    match &s.directors {
        Some(list) => list
            .iter()
            .filter_map(|d| {
                let id = *lookup(cx, known.host_ids, d, "host")?;
                if known.hosts[id.0].role != Role::Director {
                    cx.error(
                        d.span,
                        format!("`{}` is a {}, not a director", d.value, known.hosts[id.0].role.as_str()),
                        "list hosts with `role: director`",
                    );
                    return None;
                }
                Some(id)
            })
            .collect(),
        None => known
            .hosts
            .iter()
            .filter(|h| h.role == Role::Director)
            .map(|h| h.id)
            .collect(),
    }
}

/// True if every director is a member of a VRRP instance.
fn managed_by_keepalived(ha: Option<&Ha>, directors: &[HostId]) -> bool {
    ha.is_some_and(|ha| {
        directors
            .iter()
            .all(|d| ha.instances.iter().any(|i| i.members.iter().any(|m| m.host == *d)))
            && !directors.is_empty()
    })
}

/// Several directors need keepalived, keepalived needs the VIP in an
/// instance, and each director must be able to hold the VIP.
fn check_directors(
    cx: &mut Cx,
    s: &ServiceSpec,
    (name, vip): (&str, Ipv4Addr),
    directors: &[HostId],
    keepalived: bool,
    sx: Context<'_>,
) {
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
    if keepalived
        && !sx
            .ha
            .is_some_and(|ha| ha.instances.iter().any(|i| i.vips.contains(&vip)))
    {
        cx.error(
            s.vip.span,
            format!("VIP {vip} of service {name} is in no VRRP instance"),
            "add it to an instance's `vips`: with keepalived, VRRP is what puts the VIP on the active director",
        );
    }
    // The VIP must be placeable on each director.
    for d in directors {
        let host = &sx.known.hosts[d.0];
        if !host
            .interfaces
            .iter()
            .any(|i| sx.known.networks[i.network.0].cidr.contains(vip))
        {
            cx.error(
                s.vip.span,
                format!("VIP {vip} is on no network of director `{}`", host.name),
                "the VIP must be inside one of the director's networks so it knows where to answer for it",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::diagnostics;

    /// Two directors and a real server on one network, and `service` as
    /// the one service's fields after its VIP.
    fn dr_lab(service: &str) -> String {
        format!(
            "lab: t\nmode: dr\nnetworks:\n  lan: {{ cidr: 10.0.0.0/24 }}\nhosts:\n  c:\n    role: client\n    interfaces: [{{ network: lan }}]\n  d1:\n    role: director\n    interfaces: [{{ network: lan }}]\n  d2:\n    role: director\n    interfaces: [{{ network: lan }}]\n  web1:\n    role: real_server\n    interfaces: [{{ network: lan }}]\nservices:\n  - vip: 10.0.0.100\n{service}"
        )
    }

    #[test]
    fn two_directors_need_a_vrrp_instance() {
        let out = diagnostics(&dr_lab("    port: 80\n    real_servers: [{ host: web1 }]\n"));
        assert!(
            out.starts_with("error: service svc1 has 2 directors but no VRRP instance manages them"),
            "{out}"
        );
        let one = diagnostics(&dr_lab(
            "    port: 80\n    directors: [d1]\n    real_servers: [{ host: web1 }]\n",
        ));
        assert_eq!(one, "");
    }

    #[test]
    fn port_and_fwmark_are_alternatives() {
        let out = diagnostics(&dr_lab(
            "    port: 80\n    fwmark: 1\n    directors: [d1]\n    real_servers: [{ host: web1 }]\n",
        ));
        assert!(
            out.starts_with("error: a service has either `port` or `fwmark`, not both"),
            "{out}"
        );
    }

    #[test]
    fn only_nat_maps_a_real_servers_port() {
        let out = diagnostics(&dr_lab(
            "    port: 80\n    directors: [d1]\n    real_servers: [{ host: web1, port: 8080 }]\n",
        ));
        assert!(
            out.starts_with("error: real server port 8080 differs from service port 80 in DR mode"),
            "{out}"
        );
    }

    #[test]
    fn a_director_that_is_not_one_and_an_unknown_host_are_named() {
        let out = diagnostics(&dr_lab(
            "    port: 80\n    directors: [web1]\n    real_servers: [{ host: web2 }]\n",
        ));
        assert!(out.contains("error: `web1` is a real_server, not a director"), "{out}");
        assert!(out.contains("error: unknown host `web2`"), "{out}");
        assert!(out.contains("did you mean `web1`?"), "{out}");
    }
}
