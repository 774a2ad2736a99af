//! `lvslab graph`: the topology as a picture. Pure: the model in, text out.
//!
//! [`Picture`] is the one description all formats draw from: networks as
//! horizontal bars ordered by their distance from the client, each host a box
//! (role, addresses, what it serves) in a row between or below the networks it
//! is on, VRRP pairs, and the services as a legend. [`svg`] draws it with
//! nothing but its own text (no external program, no fonts to load), [`dot`]
//! and [`mermaid`] give it to Graphviz and Mermaid.

pub mod dot;
pub mod mermaid;
pub mod svg;

pub use svg::fill as svg_fill;

use std::collections::BTreeMap;

use crate::model::{Host, Role, ServiceKey, Topology};

/// A host's box.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBox {
    pub name: String,
    pub role: Role,
    /// Lines under the name: role, VIPs, VRRP state, storage export.
    pub lines: Vec<String>,
    /// Row (even rows are networks, odd rows hosts) and column.
    pub row: i32,
    pub col: usize,
    /// (network index, interface name, address) for each interface.
    pub links: Vec<(usize, String, String)>,
}

/// A network's bar.
#[derive(Debug, Clone, PartialEq)]
pub struct NetBar {
    pub name: String,
    pub cidr: String,
    pub row: i32,
}

/// The whole picture, independent of the format.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    pub title: String,
    pub networks: Vec<NetBar>,
    pub hosts: Vec<HostBox>,
    /// VRRP instances: (name, hosts' indexes in `hosts`).
    pub vrrp: Vec<(String, Vec<usize>)>,
    /// One line per service.
    pub legend: Vec<String>,
}

impl Picture {
    /// Host boxes per row, in column order.
    pub fn rows(&self) -> BTreeMap<i32, Vec<&HostBox>> {
        let mut rows: BTreeMap<i32, Vec<&HostBox>> = BTreeMap::new();
        for h in &self.hosts {
            rows.entry(h.row).or_default().push(h);
        }
        for r in rows.values_mut() {
            r.sort_by_key(|h| h.col);
        }
        rows
    }
}

/// Each network's level: 0 for the client's networks, then one more per host
/// crossed (a director between the public and the private network); networks
/// not reached follow in file order.
fn levels(t: &Topology) -> Vec<usize> {
    let n = t.networks.len();
    let mut level = vec![usize::MAX; n];
    let mut queue: Vec<usize> = Vec::new();
    for h in t.hosts.iter().filter(|h| h.role == Role::Client) {
        for i in &h.interfaces {
            if level[i.network.0] == usize::MAX {
                level[i.network.0] = 0;
                queue.push(i.network.0);
            }
        }
    }
    let mut next = 0;
    loop {
        while next < queue.len() {
            let net = queue[next];
            next += 1;
            for h in &t.hosts {
                if h.interfaces.iter().any(|i| i.network.0 == net) {
                    for i in &h.interfaces {
                        if level[i.network.0] == usize::MAX {
                            level[i.network.0] = level[net] + 1;
                            queue.push(i.network.0);
                        }
                    }
                }
            }
        }
        // Networks no client reaches: the next level, in file order.
        let Some(unreached) = (0..n).find(|i| level[*i] == usize::MAX) else {
            break;
        };
        level[unreached] = level.iter().filter(|l| **l != usize::MAX).max().map_or(0, |m| m + 1);
        queue.push(unreached);
    }
    level
}

/// The row a host goes in: between its networks when it is on several (a
/// director), above the first network for a client on it alone, else below
/// its network.
fn row_of(h: &Host, level: &[usize]) -> i32 {
    let levels: Vec<i32> = h.interfaces.iter().map(|i| level[i.network.0] as i32).collect();
    match (levels.iter().min(), levels.iter().max()) {
        (Some(&lo), Some(&hi)) if hi > lo => 2 * lo + 1,
        (Some(&lo), _) if h.role == Role::Client && lo == 0 => -1,
        (Some(&lo), _) => 2 * lo + 1,
        _ => 2 * level.iter().copied().max().map_or(0, |m| m as i32 + 1) + 1,
    }
}

/// The order hosts take within a row: clients, routers, directors, real servers, storage.
fn role_rank(r: Role) -> u8 {
    match r {
        Role::Client => 0,
        Role::Router | Role::Host => 1,
        Role::Director => 2,
        Role::RealServer => 3,
        Role::Storage => 4,
    }
}

fn host_lines(t: &Topology, h: &Host) -> Vec<String> {
    let mut lines = vec![h.role.as_str().replace('_', " ")];
    for s in t.services.iter().filter(|s| s.directors.contains(&h.id)) {
        lines.push(format!("VIP {} ({})", s.vip, s.scheduler.as_str()));
    }
    if let Some(ha) = &t.ha {
        for inst in &ha.instances {
            if let Some(m) = inst.members.iter().find(|m| m.host == h.id) {
                // The instance's addresses no service names (a NAT gateway).
                let own: Vec<String> = inst
                    .vips
                    .iter()
                    .filter(|v| !t.services.iter().any(|s| s.vip == **v))
                    .map(|v| v.to_string())
                    .collect();
                let mut line = format!("{} {} prio {}", inst.name, m.state.as_str(), m.priority);
                if !own.is_empty() {
                    line.push_str(&format!(" ({})", own.join(", ")));
                }
                lines.push(line);
            }
        }
    }
    for s in &t.services {
        if let Some(rs) = s.real_servers.iter().find(|r| r.host == h.id) {
            lines.push(format!("{} weight {}", service_name(s), rs.weight));
        }
        if s.sorry_server.is_some_and(|(a, _)| h.has_address(a)) {
            lines.push(format!("sorry server for {}", service_name(s)));
        }
    }
    if let Some(st) = &t.storage
        && st.host == h.id
    {
        lines.push(format!("exports {}", st.export));
    }
    lines.dedup();
    lines
}

fn service_name(s: &crate::model::Service) -> String {
    match s.key {
        ServiceKey::Tcp(p) => format!("{}:{p}", s.vip),
        ServiceKey::Udp(p) => format!("{}:{p}/udp", s.vip),
        ServiceKey::Fwmark(m) => format!("fwmark {m}"),
    }
}

/// The services, one line each: where, how, to whom.
fn legend(t: &Topology) -> Vec<String> {
    t.services
        .iter()
        .map(|s| {
            let rs: Vec<String> = s
                .real_servers
                .iter()
                .map(|r| format!("{} w{}", t.host(r.host).name, r.weight))
                .collect();
            let mut how = vec![s.mode.as_str().to_uppercase(), s.scheduler.as_str().to_string()];
            if let Some(p) = s.persistence {
                how.push(format!("persistent {p} s"));
            }
            if s.keepalived {
                how.push("keepalived".into());
            }
            format!("{}: {} → {}", service_name(s), how.join(", "), rs.join(", "))
        })
        .collect()
}

/// The picture of a topology.
pub fn picture(t: &Topology) -> Picture {
    let level = levels(t);
    let networks = t
        .networks
        .iter()
        .enumerate()
        .map(|(i, n)| NetBar {
            name: n.name.clone(),
            cidr: n.cidr.to_string(),
            row: 2 * level[i] as i32,
        })
        .collect();
    let mut order: Vec<&Host> = t.hosts.iter().collect();
    order.sort_by_key(|h| (row_of(h, &level), role_rank(h.role), h.id.0));
    let mut cols: BTreeMap<i32, usize> = BTreeMap::new();
    let mut index_of: BTreeMap<usize, usize> = BTreeMap::new();
    let mut hosts = Vec::new();
    for h in order {
        let row = row_of(h, &level);
        let col = cols.entry(row).or_insert(0);
        index_of.insert(h.id.0, hosts.len());
        hosts.push(HostBox {
            name: h.name.clone(),
            role: h.role,
            lines: host_lines(t, h),
            row,
            col: *col,
            links: h
                .interfaces
                .iter()
                .map(|i| (i.network.0, i.name.clone(), i.address.to_string()))
                .collect(),
        });
        *col += 1;
    }
    // VRRP instances with the same members share one bracket.
    let mut vrrp: Vec<(String, Vec<usize>)> = Vec::new();
    for inst in t.ha.iter().flat_map(|ha| &ha.instances) {
        let members: Vec<usize> = inst
            .members
            .iter()
            .filter_map(|m| index_of.get(&m.host.0).copied())
            .collect();
        let name = format!("{} (vrid {})", inst.name, inst.virtual_router_id);
        match vrrp.iter_mut().find(|(_, m)| *m == members) {
            Some((names, _)) => {
                names.push_str(", ");
                names.push_str(&name);
            }
            None => vrrp.push((format!("VRRP {name}"), members)),
        }
    }
    let mut title = match t.mode {
        Some(m) => format!("lab {} ({})", t.lab, m.as_str().to_uppercase()),
        None => format!("lab {}", t.lab),
    };
    if let Some(d) = &t.description {
        title.push_str(": ");
        title.push_str(d);
    }
    Picture {
        title,
        networks,
        hosts,
        vrrp,
        legend: legend(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(name: &str) -> Topology {
        let path = format!("{}/topologies/{name}", env!("CARGO_MANIFEST_DIR"));
        crate::load(std::path::Path::new(&path)).map(|l| l.topology).unwrap()
    }

    #[test]
    fn nat_client_above_director_between_real_servers_below() {
        let p = picture(&topo("nat.yaml"));
        let row = |n: &str| p.hosts.iter().find(|h| h.name == n).unwrap().row;
        let net = |n: &str| p.networks.iter().find(|x| x.name == n).unwrap().row;
        assert!(row("client") < net("public"), "{p:?}");
        assert!(
            net("public") < row("director") && row("director") < net("private"),
            "{p:?}"
        );
        assert!(row("web1") > net("private"), "{p:?}");
        assert_eq!(row("web1"), row("web2"));
        assert_eq!(p.legend.len(), 1);
    }

    #[test]
    fn vrrp_pairs_and_states_are_drawn() {
        let p = picture(&topo("ha.yaml"));
        assert_eq!(p.vrrp.len(), 1, "{p:?}");
        assert_eq!(p.vrrp[0].1.len(), 2);
        let d1 = p.hosts.iter().find(|h| h.name == "director1").unwrap();
        assert!(d1.lines.iter().any(|l| l.contains("MASTER")), "{d1:?}");
    }
}
