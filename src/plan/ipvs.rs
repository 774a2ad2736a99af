//! The desired IPVS table of one director, and its rendering as `ipvsadm`
//! commands and as `ipvsadm -Sn` lines (the grammar in ../shared/lvs-facts.md).

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::model::{Mode, ServiceKey};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpvsService {
    pub key: ServiceKey,
    pub vip: Ipv4Addr,
    pub scheduler: String,
    pub flags: Vec<String>,
    pub persistence: Option<u32>,
    pub netmask: Option<Ipv4Addr>,
    pub one_packet: bool,
    pub real_servers: Vec<IpvsDest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpvsDest {
    pub address: Ipv4Addr,
    pub port: u16,
    pub method: Mode,
    pub weight: u32,
}

impl IpvsService {
    /// `-t 192.168.4.5:80`, `-u …`, `-f 8`.
    pub fn target(&self) -> String {
        match self.key {
            ServiceKey::Tcp(p) => format!("-t {}:{p}", self.vip),
            ServiceKey::Udp(p) => format!("-u {}:{p}", self.vip),
            ServiceKey::Fwmark(m) => format!("-f {m}"),
        }
    }

    /// The options of `-A`/`-E`, in `ipvsadm -Sn` order.
    pub fn options(&self) -> String {
        let mut s = format!("-s {}", self.scheduler);
        if let Some(p) = self.persistence {
            s.push_str(&format!(" -p {p}"));
            if let Some(m) = self.netmask.filter(|m| *m != Ipv4Addr::BROADCAST) {
                s.push_str(&format!(" -M {m}"));
            }
        }
        if self.one_packet {
            s.push_str(" -o");
        }
        if !self.flags.is_empty() {
            s.push_str(&format!(" -b {}", self.flags.join(",")));
        }
        s
    }

    pub fn service_line(&self) -> String {
        format!("-A {} {}", self.target(), self.options())
    }

    pub fn dest_line(&self, d: &IpvsDest) -> String {
        format!("-a {} {}", self.target(), d.options())
    }
}

impl IpvsDest {
    pub fn method_flag(&self) -> &'static str {
        match self.method {
            Mode::Nat => "-m",
            Mode::Dr => "-g",
            Mode::Tun => "-i",
        }
    }

    /// `-r 192.168.2.100:80 -m -w 1`
    pub fn options(&self) -> String {
        format!(
            "-r {}:{} {} -w {}",
            self.address,
            self.port,
            self.method_flag(),
            self.weight
        )
    }
}

/// The desired table as `ipvsadm -Sn` would print it (sorted the same way).
pub fn save_lines(services: &[IpvsService]) -> Vec<String> {
    let mut svcs: Vec<&IpvsService> = services.iter().collect();
    svcs.sort_by_key(|s| sort_key(s));
    let mut out = Vec::new();
    for s in svcs {
        out.push(s.service_line());
        let mut dests: Vec<&IpvsDest> = s.real_servers.iter().collect();
        dests.sort_by_key(|d| (d.address, d.port));
        out.extend(dests.into_iter().map(|d| s.dest_line(d)));
    }
    out
}

fn sort_key(s: &IpvsService) -> (u8, Ipv4Addr, u32) {
    match s.key {
        ServiceKey::Tcp(p) => (0, s.vip, p.into()),
        ServiceKey::Udp(p) => (1, s.vip, p.into()),
        ServiceKey::Fwmark(m) => (2, Ipv4Addr::UNSPECIFIED, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_save_format() {
        let s = IpvsService {
            key: ServiceKey::Tcp(80),
            vip: Ipv4Addr::new(192, 168, 4, 5),
            scheduler: "wrr".into(),
            flags: vec![],
            persistence: Some(600),
            netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            one_packet: false,
            real_servers: vec![IpvsDest {
                address: Ipv4Addr::new(192, 168, 2, 100),
                port: 80,
                method: Mode::Nat,
                weight: 1,
            }],
        };
        assert_eq!(
            save_lines(&[s]),
            vec![
                "-A -t 192.168.4.5:80 -s wrr -p 600 -M 255.255.255.0",
                "-a -t 192.168.4.5:80 -r 192.168.2.100:80 -m -w 1"
            ]
        );
    }
}
