//! Interfaces and their addresses: declared addresses checked and taken,
//! VIPs (services' and VRRP's) reserved, then every interface without an
//! address given the lowest free one of its network, in file order.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::networks::Networks;
use super::{Cx, lookup};
use crate::diag::Span;
use crate::model::{NetId, Network, is_interface_name};
use crate::spec::{self, Spanned, TopologySpec};

/// An interface whose address may still be unassigned.
pub(super) struct PendingIface {
    pub(super) name: String,
    pub(super) network: NetId,
    pub(super) address: Option<Ipv4Addr>,
    pub(super) span: Span,
}

/// Every host's interfaces (in file order), and the addresses taken so far
/// with who took them.
pub(super) struct Addressing {
    pub(super) pending: Vec<Vec<PendingIface>>,
    used: BTreeMap<Ipv4Addr, (String, Span)>,
}

/// The VIPs: each service's (None when it does not parse), each VRRP
/// instance's, and all of them with where they were first written.
pub(super) struct Vips {
    pub(super) service: Vec<Option<Ipv4Addr>>,
    pub(super) vrrp: Vec<Vec<(Ipv4Addr, Span)>>,
    pub(super) reserved: BTreeMap<Ipv4Addr, Span>,
}

/// Hosts and their interfaces, with the addresses the file gives.
pub(super) fn declared(cx: &mut Cx, spec: &TopologySpec, nets: &Networks) -> Addressing {
    let mut a = Addressing {
        pending: Vec::new(),
        used: BTreeMap::new(),
    };
    for (name, host) in &spec.hosts {
        cx.name(name, "host");
        let ifaces = host_interfaces(cx, name, host, nets, &mut a.used);
        a.pending.push(ifaces);
    }
    a
}

fn host_interfaces(
    cx: &mut Cx,
    name: &spec::Name,
    host: &spec::HostSpec,
    nets: &Networks,
    used: &mut BTreeMap<Ipv4Addr, (String, Span)>,
) -> Vec<PendingIface> {
    let mut ifaces: Vec<PendingIface> = Vec::new();
    // Names and networks seen on this host (sets: linear in interfaces).
    let mut seen_names = HashSet::new();
    let mut seen_nets = HashSet::new();
    for (i, iface) in host.interfaces.iter().enumerate() {
        let iname = interface_name(cx, i, iface);
        if !seen_names.insert(iname.clone()) {
            cx.error(
                iface.span,
                format!("host `{}` has two interfaces named {iname}", name.value),
                "give each interface its own `name`",
            );
        }
        let Some(&net) = lookup(cx, &nets.ids, &iface.network, "network") else {
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
        let cidr = nets.list[net.0].cidr;
        let address = iface.address.as_ref().and_then(|a| {
            let addr = cx.ipv4(a, "address")?;
            take_declared(cx, (addr, a.span), cidr, &iface.network.value, &name.value, used);
            Some(addr)
        });
        ifaces.push(PendingIface {
            name: iname,
            network: net,
            address,
            span: iface.span,
        });
    }
    ifaces
}

/// The interface's name (`eth<i>` when not given), reporting one Linux refuses.
fn interface_name(cx: &mut Cx, i: usize, iface: &Spanned<spec::InterfaceSpec>) -> String {
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
    iname
}

/// A declared address: inside its network, a host address, unique; taken
/// for `host` when it is all three.
fn take_declared(
    cx: &mut Cx,
    (addr, span): (Ipv4Addr, Span),
    cidr: Ipv4Network,
    network: &str,
    host: &str,
    used: &mut BTreeMap<Ipv4Addr, (String, Span)>,
) {
    if !cidr.contains(addr) {
        cx.error(
            span,
            format!("address {addr} is outside network `{network}` ({cidr})"),
            format!("use an address in {cidr}, or omit `address` to have one assigned"),
        );
    } else if addr == cidr.network() || addr == cidr.broadcast() {
        cx.error(
            span,
            format!("{addr} is the network or broadcast address of {cidr}"),
            "pick a host address",
        );
    } else if let Some((other, _)) = used.get(&addr) {
        cx.error(
            span,
            format!("address {addr} is already used by {other}"),
            "every address must be unique in the lab",
        );
    } else {
        used.insert(addr, (format!("host `{host}`"), span));
    }
}

/// VIPs (services and VRRP) are reserved before addresses are assigned.
pub(super) fn reserve_vips(cx: &mut Cx, spec: &TopologySpec) -> Vips {
    let mut reserved: BTreeMap<Ipv4Addr, Span> = BTreeMap::new();
    let service: Vec<Option<Ipv4Addr>> = spec.services.iter().map(|s| cx.ipv4(&s.vip, "VIP")).collect();
    for (s, vip) in spec.services.iter().zip(&service) {
        if let Some(v) = vip {
            reserved.entry(*v).or_insert(s.vip.span);
        }
    }
    let mut vrrp: Vec<Vec<(Ipv4Addr, Span)>> = Vec::new();
    if let Some(ha) = &spec.ha {
        for inst in &ha.instances {
            let v: Vec<_> = inst
                .vips
                .iter()
                .filter_map(|s| cx.ipv4(s, "VIP").map(|a| (a, s.span)))
                .collect();
            for (a, span) in &v {
                reserved.entry(*a).or_insert(*span);
            }
            vrrp.push(v);
        }
    }
    Vips {
        service,
        vrrp,
        reserved,
    }
}

/// Deterministic assignment: in file order, the lowest free host address.
pub(super) fn assign(
    cx: &mut Cx,
    spec: &TopologySpec,
    networks: &[Network],
    a: &mut Addressing,
    reserved: &BTreeMap<Ipv4Addr, Span>,
) {
    for (host, ifaces) in spec.hosts.keys().zip(a.pending.iter_mut()) {
        for iface in ifaces.iter_mut().filter(|i| i.address.is_none()) {
            let cidr = networks[iface.network.0].cidr;
            match first_free(cidr, |x| a.used.contains_key(x) || reserved.contains_key(x)) {
                Some(addr) => {
                    a.used.insert(addr, (format!("host `{}`", host.value), iface.span));
                    iface.address = Some(addr);
                }
                None => cx.error(
                    iface.span,
                    format!("network {cidr} has no free address left"),
                    "use a larger network",
                ),
            }
        }
    }
}

/// The lowest host address of `cidr` (neither its network nor its broadcast
/// address) that is not `taken`.
fn first_free(cidr: Ipv4Network, taken: impl Fn(&Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    cidr.iter()
        .filter(|a| *a != cidr.network() && *a != cidr.broadcast())
        .find(|a| !taken(a))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::super::tests::{diagnostics, load};
    use super::first_free;

    /// Each host's addresses, in file order.
    fn addresses(text: &str) -> Vec<(String, Vec<Ipv4Addr>)> {
        let l = load(text).unwrap();
        l.topology
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.interfaces.iter().map(|i| i.address).collect()))
            .collect()
    }

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn first_free_skips_network_broadcast_and_taken_addresses() {
        let cidr = "10.0.0.0/29".parse().unwrap();
        assert_eq!(first_free(cidr, |_| false), Some(a("10.0.0.1")));
        let taken = [a("10.0.0.1"), a("10.0.0.2"), a("10.0.0.4")];
        assert_eq!(first_free(cidr, |x| taken.contains(x)), Some(a("10.0.0.3")));
        let all_but_broadcast = |x: &Ipv4Addr| *x != a("10.0.0.7");
        assert_eq!(first_free(cidr, all_but_broadcast), None);
    }

    #[test]
    fn addresses_are_the_lowest_free_ones_in_file_order() {
        let hosts = addresses(
            "lab: t\nmode: nat\nnetworks:\n  a: { cidr: 10.0.0.0/24 }\n  b: { cidr: 10.0.1.0/24 }\nhosts:\n  c1:\n    role: client\n    interfaces: [{ network: a }, { network: b }]\n  c2:\n    role: client\n    interfaces: [{ network: b }, { network: a }]\n  c3:\n    role: client\n    interfaces: [{ network: a }]\n",
        );
        assert_eq!(
            hosts,
            vec![
                ("c1".to_string(), vec![a("10.0.0.1"), a("10.0.1.1")]),
                ("c2".to_string(), vec![a("10.0.1.2"), a("10.0.0.2")]),
                ("c3".to_string(), vec![a("10.0.0.3")]),
            ]
        );
    }

    #[test]
    fn assignment_skips_vips_and_explicit_addresses_even_later_ones() {
        let hosts = addresses(
            "lab: t\nmode: nat\nnetworks:\n  pub: { cidr: 10.0.0.0/24 }\nhosts:\n  c1:\n    role: client\n    interfaces: [{ network: pub }]\n  c2:\n    role: client\n    interfaces: [{ network: pub }]\n  c3:\n    role: client\n    interfaces: [{ network: pub, address: 10.0.0.2 }]\nha:\n  instances:\n    - name: VI_1\n      virtual_router_id: 51\n      vips: [10.0.0.3]\n      members: []\n",
        );
        assert_eq!(
            hosts,
            vec![
                ("c1".to_string(), vec![a("10.0.0.1")]),
                ("c2".to_string(), vec![a("10.0.0.4")]),
                ("c3".to_string(), vec![a("10.0.0.2")]),
            ]
        );
    }

    #[test]
    fn assignment_skips_a_service_vip() {
        let text = "lab: t\nmode: dr\nnetworks:\n  pub: { cidr: 10.0.0.0/24 }\nhosts:\n  c:\n    role: client\n    interfaces: [{ network: pub }]\n  d:\n    role: director\n    interfaces: [{ network: pub }]\n  r:\n    role: real_server\n    interfaces: [{ network: pub }]\nservices:\n  - vip: 10.0.0.2\n    port: 80\n    real_servers: [{ host: r }]\n";
        assert_eq!(
            addresses(text),
            vec![
                ("c".to_string(), vec![a("10.0.0.1")]),
                ("d".to_string(), vec![a("10.0.0.3")]),
                ("r".to_string(), vec![a("10.0.0.4")]),
            ]
        );
    }

    #[test]
    fn a_full_network_has_no_free_address_left() {
        // A /30 holds two hosts; the third interface finds no address.
        let out = diagnostics(
            "lab: t\nmode: nat\nnetworks:\n  a: { cidr: 10.0.0.0/30 }\nhosts:\n  c1:\n    role: client\n    interfaces: [{ network: a }]\n  c2:\n    role: client\n    interfaces: [{ network: a }]\n  c3:\n    role: client\n    interfaces: [{ network: a }]\n",
        );
        assert!(
            out.starts_with("error: network 10.0.0.0/30 has no free address left"),
            "{out}"
        );
        assert!(out.contains("t.yaml:14:"), "at c3's interface: {out}");
        assert!(out.contains("use a larger network"), "{out}");
        assert_eq!(out.matches("error:").count(), 1, "{out}");
    }

    #[test]
    fn a_duplicate_address_names_the_first_owner() {
        let out = diagnostics(
            "lab: t\nmode: nat\nnetworks:\n  a: { cidr: 10.0.0.0/24 }\nhosts:\n  c1:\n    role: client\n    interfaces: [{ network: a, address: 10.0.0.9 }]\n  c2:\n    role: client\n    interfaces: [{ network: a, address: 10.0.0.9 }]\n",
        );
        assert!(
            out.starts_with("error: address 10.0.0.9 is already used by host `c1`"),
            "{out}"
        );
        assert!(out.contains("every address must be unique in the lab"), "{out}");
    }

    #[test]
    fn declared_addresses_must_be_host_addresses_inside_the_network() {
        let out = diagnostics(
            "lab: t\nmode: nat\nnetworks:\n  a: { cidr: 10.0.0.0/24 }\nhosts:\n  c1:\n    role: client\n    interfaces: [{ network: a, address: 10.0.0.255 }]\n  c2:\n    role: client\n    interfaces: [{ network: a, address: 10.0.9.1 }]\n",
        );
        assert!(
            out.contains("error: 10.0.0.255 is the network or broadcast address of 10.0.0.0/24"),
            "{out}"
        );
        assert!(
            out.contains("error: address 10.0.9.1 is outside network `a` (10.0.0.0/24)"),
            "{out}"
        );
    }
}
