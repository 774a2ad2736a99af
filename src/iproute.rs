//! Parsers for iproute2's one-line output (`ip -o link`, `ip -o -4 addr`),
//! shared by verify's probes and the netns provider.

use std::net::Ipv4Addr;

/// One interface from `ip -o link`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub up: bool,
    pub mac: Option<String>,
}

/// `ip -o link` (one line per interface):
/// `2: eth0@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 … link/ether 02:… brd …`.
pub fn links(text: &str) -> Vec<Link> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ": ");
            parts.next()?.trim().parse::<u32>().ok()?;
            let name = parts.next()?.split('@').next()?.trim().to_string();
            let rest = parts.next()?;
            let flags = rest.split('>').next()?.trim_start_matches('<');
            let up = flags.split(',').any(|f| f == "UP");
            let mut words = rest.split_whitespace();
            let mut mac = None;
            while let Some(w) = words.next() {
                if w == "link/ether" {
                    mac = words.next().map(str::to_ascii_lowercase);
                }
            }
            Some(Link { name, up, mac })
        })
        .collect()
}

/// `ip -o -4 addr`: (interface, address, prefix) for every IPv4 address.
pub fn addresses(text: &str) -> Vec<(String, Ipv4Addr, u8)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.next()?; // "2:"
            let iface = words.next()?.split('@').next()?.to_string();
            if words.next()? != "inet" {
                return None;
            }
            let (addr, prefix) = words.next()?.split_once('/')?;
            Some((iface, addr.parse().ok()?, prefix.parse().ok()?))
        })
        .collect()
}
