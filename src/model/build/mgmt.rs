//! The management network: apart from the lab's, with room for every host
//! and this machine (its first address, the gateway).

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::Cx;
use crate::model::{Mgmt, Network};
use crate::spec::{self, Spanned};

pub(super) fn build_mgmt(cx: &mut Cx, m: &Spanned<spec::MgmtSpec>, networks: &[Network], hosts: usize) -> Option<Mgmt> {
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
