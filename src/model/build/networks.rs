//! Networks: each CIDR parsed and checked (size, host bits), and no two overlapping.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::Cx;
use crate::model::{NetId, Network};
use crate::spec::{Name, Spanned, TopologySpec};

/// The lab's networks in file order, and their ids by name.
pub(super) struct Networks {
    pub(super) list: Vec<Network>,
    pub(super) ids: BTreeMap<String, NetId>,
}

pub(super) fn build_networks(cx: &mut Cx, spec: &TopologySpec) -> Networks {
    let mut nets = Networks {
        list: Vec::new(),
        ids: BTreeMap::new(),
    };
    let mut by_start: BTreeMap<u32, usize> = BTreeMap::new();
    for (name, net) in &spec.networks {
        cx.name(name, "network");
        let cidr = parse_cidr(cx, &net.cidr);
        if cidr.prefix() < 32 {
            check_overlap(cx, name, &net.cidr, cidr, &nets.list, &by_start);
            let first = u32::from(cidr.network());
            by_start.entry(first).or_insert(nets.list.len());
        }
        nets.ids.insert(name.value.clone(), NetId(nets.list.len()));
        nets.list.push(Network {
            name: name.value.clone(),
            cidr,
        });
    }
    nets
}

/// The network as written, after its errors are reported; a placeholder of
/// prefix 32 (which overlaps nothing) when it does not parse.
fn parse_cidr(cx: &mut Cx, written: &Spanned<String>) -> Ipv4Network {
    match written.value.trim().parse::<Ipv4Network>() {
        Ok(c) if c.prefix() > 30 => {
            cx.error(
                written.span,
                format!("network {} is too small for a lab", c),
                "use a prefix of /30 or shorter, e.g. /24",
            );
            c
        }
        Ok(c) if c.network() != c.ip() => {
            cx.error(
                written.span,
                format!("`{}` has host bits set", written.value),
                format!("the network is written {}/{}", c.network(), c.prefix()),
            );
            c
        }
        Ok(c) => c,
        Err(_) => {
            cx.error(
                written.span,
                format!("`{}` is not an IPv4 network", written.value),
                "write it as ADDRESS/PREFIX, e.g. 192.168.4.0/24",
            );
            Ipv4Network::from(Ipv4Addr::UNSPECIFIED)
        }
    }
}

/// Earlier networks by first address: one that overlaps this one is the
/// nearest below or above it (logarithmic, not a scan of all).
fn check_overlap(
    cx: &mut Cx,
    name: &Name,
    written: &Spanned<String>,
    cidr: Ipv4Network,
    earlier: &[Network],
    by_start: &BTreeMap<u32, usize>,
) {
    let (first, last) = (u32::from(cidr.network()), u32::from(cidr.broadcast()));
    let below = by_start.range(..=first).next_back().map(|(_, i)| *i);
    let above = by_start.range(first..).next().map(|(_, i)| *i);
    for idx in below.into_iter().chain(above) {
        let other = &earlier[idx];
        let (o_first, o_last) = (u32::from(other.cidr.network()), u32::from(other.cidr.broadcast()));
        if o_first <= last && first <= o_last {
            cx.error(
                written.span,
                format!(
                    "network `{}` ({cidr}) overlaps network `{}` ({})",
                    name.value, other.name, other.cidr
                ),
                "lab networks must be disjoint",
            );
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::diagnostics;

    fn with_networks(networks: &str) -> String {
        diagnostics(&format!(
            "lab: t\nmode: nat\nnetworks:\n{networks}hosts:\n  c:\n    role: client\n    interfaces: [{{ network: a }}]\n"
        ))
    }

    #[test]
    fn overlapping_networks_are_an_error_at_the_later_one() {
        let out = with_networks("  a: { cidr: 10.0.0.0/16 }\n  b: { cidr: 10.0.4.0/24 }\n");
        assert!(
            out.contains("error: network `b` (10.0.4.0/24) overlaps network `a` (10.0.0.0/16)"),
            "{out}"
        );
        assert!(out.contains("t.yaml:5:"), "at b's cidr: {out}");
        assert!(out.contains("lab networks must be disjoint"), "{out}");
    }

    #[test]
    fn an_overlap_above_is_found_too() {
        let out = with_networks("  a: { cidr: 10.0.4.0/24 }\n  b: { cidr: 10.0.0.0/16 }\n");
        assert!(
            out.contains("network `b` (10.0.0.0/16) overlaps network `a` (10.0.4.0/24)"),
            "{out}"
        );
    }

    #[test]
    fn disjoint_neighbours_do_not_overlap() {
        let out = with_networks("  a: { cidr: 10.0.4.0/24 }\n  b: { cidr: 10.0.5.0/24 }\n");
        assert!(!out.contains("overlaps"), "{out}");
    }

    #[test]
    fn host_bits_set_is_an_error_with_the_network_in_the_hint() {
        let out = with_networks("  a: { cidr: 10.0.4.7/24 }\n");
        assert!(out.contains("error: `10.0.4.7/24` has host bits set"), "{out}");
        assert!(out.contains("the network is written 10.0.4.0/24"), "{out}");
    }

    #[test]
    fn a_network_smaller_than_a_slash_30_is_too_small() {
        let out = with_networks("  a: { cidr: 10.0.4.0/31 }\n");
        assert!(
            out.contains("error: network 10.0.4.0/31 is too small for a lab"),
            "{out}"
        );
    }

    #[test]
    fn a_cidr_that_does_not_parse_overlaps_nothing() {
        let out = with_networks("  a: { cidr: 10.0.4.0/24 }\n  b: { cidr: nonsense }\n  z: { cidr: nope }\n");
        assert!(out.contains("error: `nonsense` is not an IPv4 network"), "{out}");
        assert!(out.contains("error: `nope` is not an IPv4 network"), "{out}");
        assert!(!out.contains("overlaps"), "{out}");
    }
}
