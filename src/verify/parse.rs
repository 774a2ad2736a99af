//! Parsers for what the verify probes read on hosts: `ip -o link`,
//! `ip -o -4 addr`, sysctl files, `ip route get`, `ip neigh`, `arping` and
//! `ipvsadm -Ln --stats --exact`. Each takes the tool's text as printed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub use crate::iproute::{Link, addresses, links};

/// `grep -H . /proc/sys/net/ipv4/…` lines → `net.ipv4.conf.all.arp_ignore` → `1`.
pub fn sysctls(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (path, value) = line.split_once(':')?;
            let key = path.strip_prefix("/proc/sys/")?.replace('/', ".");
            Some((key, value.trim().to_string()))
        })
        .collect()
}

/// The effective value of a per-interface IPv4 sysctl: the kernel uses the
/// larger of `conf/all` and `conf/<iface>` for arp_ignore, arp_announce and
/// rp_filter. `None` when neither was read.
pub fn effective(sysctls: &BTreeMap<String, String>, name: &str, iface: &str) -> Option<u32> {
    let read = |scope: &str| {
        sysctls
            .get(&format!("net.ipv4.conf.{scope}.{name}"))
            .and_then(|v| v.parse::<u32>().ok())
    };
    match (read("all"), read(iface)) {
        (Some(a), Some(i)) => Some(a.max(i)),
        (a, i) => a.or(i),
    }
}

/// The gateway in `ip route get` output (`… via 192.168.2.5 dev eth0 …`), or
/// `None` for a directly connected destination.
pub fn route_via(text: &str) -> Option<Ipv4Addr> {
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "via" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// The MAC of a usable entry in `ip neigh show ADDR` output
/// (`192.168.4.253 dev eth0 lladdr 02:… REACHABLE`); `None` when the entry is
/// missing, incomplete or failed.
pub fn neighbour_mac(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == "lladdr" {
                return words.next().map(str::to_ascii_lowercase);
            }
        }
        None
    })
}

/// Every MAC that answered in `arping` output (iputils and busybox both print
/// `Unicast reply from 192.168.4.253 [02:…]`), in order, without repeats.
pub fn arping_macs(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines().filter(|l| l.contains("reply from")) {
        if let Some(mac) = line
            .split_once('[')
            .and_then(|(_, r)| r.split_once(']'))
            .map(|(m, _)| m.trim().to_ascii_lowercase())
            && !out.contains(&mac)
        {
            out.push(mac);
        }
    }
    out
}

/// One VRRP instance in keepalived's data dump (`/tmp/keepalived.data`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VrrpData {
    pub instance: String,
    pub state: String,
    /// The master this instance hears adverts from (its own address when master).
    pub master_router: Option<String>,
}

/// keepalived's data dump: ` VRRP Instance = VI_1`, then `   State = BACKUP`,
/// `   Master router = 192.168.4.54` …
pub fn keepalived_data(text: &str) -> Vec<VrrpData> {
    let mut out: Vec<VrrpData> = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(" = ") else { continue };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "VRRP Instance" => out.push(VrrpData {
                instance: v.to_string(),
                ..VrrpData::default()
            }),
            "State" => {
                if let Some(i) = out.last_mut().filter(|i| i.state.is_empty()) {
                    i.state = v.to_string();
                }
            }
            "Master router" => {
                if let Some(i) = out.last_mut().filter(|i| i.master_router.is_none()) {
                    i.master_router = Some(v.to_string());
                }
            }
            _ => {}
        }
    }
    out
}

/// Counters of one service or real server in `ipvsadm -Ln --stats --exact`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub conns: u64,
    pub in_pkts: u64,
    pub out_pkts: u64,
}

impl Counters {
    /// `self - before`, saturating (counters reset when a service is re-created).
    pub fn since(self, before: Counters) -> Counters {
        Counters {
            conns: self.conns.saturating_sub(before.conns),
            in_pkts: self.in_pkts.saturating_sub(before.in_pkts),
            out_pkts: self.out_pkts.saturating_sub(before.out_pkts),
        }
    }
}

/// One service of `ipvsadm -Ln --stats --exact`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// `TCP 192.168.4.5:80`, `UDP 10.0.0.1:53`, `FWM 8`.
    pub key: String,
    pub total: Counters,
    /// Real server `address:port` → counters.
    pub dests: BTreeMap<String, Counters>,
}

/// `ipvsadm -Ln --stats --exact`:
/// ```text
/// Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
///   -> RemoteAddress:Port
/// TCP  192.168.4.5:80                     60      360      240    23400    31320
///   -> 192.168.2.100:80                   20      120       80     7800    10440
/// ```
/// Rows are split on whitespace, not columns.
pub fn stats(text: &str) -> Vec<ServiceStats> {
    let mut out: Vec<ServiceStats> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let counters = |w: &[&str]| -> Option<Counters> {
            Some(Counters {
                conns: w.first()?.parse().ok()?,
                in_pkts: w.get(1)?.parse().ok()?,
                out_pkts: w.get(2)?.parse().ok()?,
            })
        };
        match words.as_slice() {
            ["->", addr, rest @ ..] => {
                if let (Some(svc), Some(c)) = (out.last_mut(), counters(rest)) {
                    svc.dests.insert(addr.to_string(), c);
                }
            }
            [proto @ ("TCP" | "UDP" | "FWM" | "SCTP"), addr, rest @ ..] => {
                if let Some(total) = counters(rest) {
                    out.push(ServiceStats {
                        key: format!("{proto} {addr}"),
                        total,
                        dests: BTreeMap::new(),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// One service's connection counts per real server (`address:port`):
/// (active, inactive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConns {
    /// As [`stats`] names it: `TCP 192.168.4.5:80`, `FWM 6`.
    pub key: String,
    pub dests: BTreeMap<String, (u64, u64)>,
}

/// `ipvsadm -Ln --exact` (ActiveConn and InActConn per real server):
/// ```text
/// Prot LocalAddress:Port Scheduler Flags
///   -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
/// TCP  192.168.4.5:80 wlc
///   -> 192.168.2.100:80             Masq    1      0          20
/// ```
pub fn conns(text: &str) -> Vec<ServiceConns> {
    let mut out: Vec<ServiceConns> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["->", addr, _forward, _weight, active, inactive, ..] => {
                if let (Some(svc), Ok(a), Ok(i)) = (out.last_mut(), active.parse(), inactive.parse()) {
                    svc.dests.insert(addr.to_string(), (a, i));
                }
            }
            [proto @ ("TCP" | "UDP" | "FWM" | "SCTP"), addr, ..] => out.push(ServiceConns {
                key: format!("{proto} {addr}"),
                dests: BTreeMap::new(),
            }),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_with_peers_and_tunnels() {
        let text = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
2: tunl0@NONE: <NOARP,UP,LOWER_UP> mtu 1480 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/ipip 0.0.0.0 brd 0.0.0.0
7: eth0@if8: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 0A:5B:9c:00:00:01 brd ff:ff:ff:ff:ff:ff link-netnsid 0
9: eth1@if10: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN\\    link/ether 0a:5b:9c:00:00:02 brd ff:ff:ff:ff:ff:ff
";
        let l = links(text);
        assert_eq!(l.len(), 4);
        assert_eq!(
            l[1],
            Link {
                name: "tunl0".into(),
                up: true,
                mac: None
            }
        );
        assert_eq!(l[2].name, "eth0");
        assert_eq!(l[2].mac.as_deref(), Some("0a:5b:9c:00:00:01"));
        assert!(!l[3].up, "LOWER_UP alone is not UP");
    }

    #[test]
    fn addresses_and_route() {
        let text = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
1: lo    inet 192.168.4.253/32 scope global lo\\       valid_lft forever preferred_lft forever
7: eth0    inet 192.168.4.52/24 brd 192.168.4.255 scope global eth0\\       valid_lft forever preferred_lft forever
";
        let a = addresses(text);
        assert_eq!(a[1], ("lo".into(), "192.168.4.253".parse().unwrap(), 32));
        assert_eq!(a.len(), 3);
        assert_eq!(
            route_via("192.168.4.10 via 192.168.2.5 dev eth0 src 192.168.2.100 uid 0 \n    cache \n"),
            Some("192.168.2.5".parse().unwrap())
        );
        assert_eq!(route_via("192.168.4.10 dev eth0 src 192.168.4.52 uid 0"), None);
        assert_eq!(route_via("RTNETLINK answers: Network is unreachable"), None);
    }

    #[test]
    fn effective_sysctl_is_the_max_of_all_and_the_interface() {
        let s = sysctls(
            "/proc/sys/net/ipv4/conf/all/arp_ignore:0\n/proc/sys/net/ipv4/conf/eth0/arp_ignore:1\n/proc/sys/net/ipv4/conf/all/rp_filter:2\n/proc/sys/net/ipv4/conf/tunl0/rp_filter:0\n/proc/sys/net/ipv4/ip_forward:1\n",
        );
        assert_eq!(s["net.ipv4.ip_forward"], "1");
        assert_eq!(effective(&s, "arp_ignore", "eth0"), Some(1));
        assert_eq!(effective(&s, "arp_ignore", "eth1"), Some(0));
        assert_eq!(effective(&s, "rp_filter", "tunl0"), Some(2));
        assert_eq!(effective(&s, "arp_announce", "eth0"), None);
    }

    #[test]
    fn neighbours_and_arping() {
        assert_eq!(
            neighbour_mac("192.168.4.253 dev eth0 lladdr 0A:5B:00:00:00:09 REACHABLE\n").as_deref(),
            Some("0a:5b:00:00:00:09")
        );
        assert_eq!(neighbour_mac("192.168.4.253 dev eth0 FAILED\n"), None);
        assert_eq!(neighbour_mac(""), None);
        let busybox = "ARPING 192.168.4.253 from 192.168.4.50 eth0
Unicast reply from 192.168.4.253 [0a:5b:00:00:00:09] 0.145ms
Unicast reply from 192.168.4.253 [0a:5b:00:00:00:03] 0.201ms
Unicast reply from 192.168.4.253 [0a:5b:00:00:00:09] 0.100ms
Sent 2 probe(s) (2 broadcast(s))
Received 3 response(s) (0 request(s), 0 broadcast(s))
";
        assert_eq!(arping_macs(busybox), ["0a:5b:00:00:00:09", "0a:5b:00:00:00:03"]);
        let iputils = "ARPING 192.168.4.253\nUnicast reply from 192.168.4.253 [0A:5B:00:00:00:09]  0.812ms\n";
        assert_eq!(arping_macs(iputils), ["0a:5b:00:00:00:09"]);
    }

    #[test]
    fn stats_rows() {
        let text = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  192.168.4.5:80                     60      360      240    23400    31320
  -> 192.168.2.100:80                   20      120       80     7800    10440
  -> 192.168.2.200:80                   40      240      160    15600    20880
FWM  8                                   0        0        0        0        0
  -> 192.168.4.52:0                      0        0        0        0        0
";
        let s = stats(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].key, "TCP 192.168.4.5:80");
        assert_eq!(
            s[0].total,
            Counters {
                conns: 60,
                in_pkts: 360,
                out_pkts: 240
            }
        );
        assert_eq!(s[0].dests["192.168.2.200:80"].conns, 40);
        assert_eq!(s[1].key, "FWM 8");
        assert_eq!(s[1].dests.len(), 1);
        let later = Counters {
            conns: 70,
            in_pkts: 400,
            out_pkts: 300,
        };
        assert_eq!(later.since(s[0].total).conns, 10);
        assert_eq!(s[0].total.since(later).conns, 0, "saturates after a reset");
    }

    #[test]
    fn connection_counts() {
        let text = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  192.168.4.5:80 wlc
  -> 192.168.2.100:80             Masq    1      0          20
  -> 192.168.2.200:80             Masq    2      3          41
FWM  6 rr persistent 300
  -> 192.168.4.52:0               Route   1      0          0
";
        let c = conns(text);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].key, "TCP 192.168.4.5:80");
        assert_eq!(c[0].dests["192.168.2.200:80"], (3, 41));
        assert_eq!(c[1].key, "FWM 6");
        assert_eq!(c[1].dests["192.168.4.52:0"], (0, 0));
    }
}
