//! The vocabulary verify's two halves share: which probe runs where and
//! under what key (the gatherer asks, the judge reads the answers under the
//! same names), and the small pure readings both need. Knows nothing about
//! either half.

use crate::model::{HostId, Role, Service, ServiceKey, SyncMode, Topology, UserCheck};

/// The URL the client requests for a service, if verify can send it traffic.
pub fn url(s: &Service) -> Option<String> {
    let web = |port: u16| match port {
        // Port 443 is HTTPS (the lab's self-signed certificate); its page by name.
        443 => format!("https://{}/index.html", s.vip),
        80 => format!("http://{}/", s.vip),
        p => format!("http://{}:{p}/", s.vip),
    };
    match s.key {
        ServiceKey::Tcp(p) => Some(web(if p == 0 { 80 } else { p })),
        ServiceKey::Udp(p) => Some(format!("udp://{}:{p}", s.vip)),
        // Every port the mark binds, in turn: one client must stay on one
        // real server across all of them (that is what the mark is for).
        ServiceKey::Fwmark(_) if s.mark_protocol == crate::model::Protocol::Tcp && !s.mark_ports.is_empty() => {
            Some(s.mark_ports.iter().map(|p| web(*p)).collect::<Vec<_>>().join(" "))
        }
        ServiceKey::Fwmark(_) => None,
    }
}

/// The URL of an HTTP(S) service (not UDP): what curl can ask.
pub fn http(s: &Service) -> Option<String> {
    url(s).filter(|u| !u.starts_with("udp://"))
}

/// The port a real server's web server listens on for a service.
pub fn real_port(s: &Service, rs_port: u16) -> u16 {
    match (rs_port, s.key) {
        (0, ServiceKey::Tcp(p)) if p != 0 => p,
        (0, ServiceKey::Fwmark(_)) => s.mark_ports.first().copied().unwrap_or(80),
        (0, _) => 80,
        (p, _) => p,
    }
}

/// The host that asks the VIP's network who owns the VIP (DR/TUN): the client
/// when it is on that network, else any host there that is neither a director
/// nor a real server. With its interface there.
pub fn arp_prober(t: &Topology, s: &Service) -> Option<(HostId, String)> {
    let net = t.networks.iter().position(|n| n.cidr.contains(s.vip))?;
    let candidates = t.verify.client.into_iter().chain(
        t.hosts
            .iter()
            .filter(|h| matches!(h.role, Role::Client | Role::Router | Role::Storage))
            .map(|h| h.id),
    );
    for id in candidates {
        let h = t.host(id);
        if let Some(i) = h.interface_on(crate::model::NetId(net)) {
            return Some((id, i.name.clone()));
        }
    }
    None
}

/// curl's exit codes that a broken lab produces, in words.
pub fn curl_error(rc: &str) -> String {
    let what = match rc {
        "6" => "could not resolve host",
        "7" => "connection refused or no route",
        "28" => "timed out",
        "35" => "TLS handshake failed",
        "52" => "empty reply",
        "56" => "connection reset",
        "127" => "curl is not installed on this host",
        _ => "failed",
    };
    format!("curl exit {rc} ({what})")
}

/// Probe key of the shared-storage write (before) and reads (after).
pub const STORAGE_WRITE: &str = "storage-write";

pub fn storage_read_key(rs: &str) -> String {
    format!("storage-read:{rs}")
}

/// The file verify writes into the shared directory.
pub const STORAGE_FILE: &str = "lvslab-verify.txt";

/// The real servers that mount the shared directory, in order.
pub fn storage_readers(t: &Topology) -> Vec<&crate::model::Host> {
    if t.storage.is_none() {
        return Vec::new();
    }
    t.hosts.iter().filter(|h| h.role == Role::RealServer).collect()
}

/// Who writes verify's file, and where: with NFS the first real server,
/// through its mount (all must then serve that one file); with rsync the
/// storage host, into its export (each real server must fetch it).
pub fn storage_writer(t: &Topology) -> Option<(&crate::model::Host, String)> {
    let st = t.storage.as_ref()?;
    match st.sync {
        SyncMode::Nfs => storage_readers(t).first().map(|h| (*h, st.mount.clone())),
        SyncMode::Rsync => Some((t.host(st.host), st.export.clone())),
    }
}

/// Does one run of a topology check pass?
pub fn user_check_passes(c: &UserCheck, rc: i32, out: &str) -> bool {
    rc == c.status && c.output.as_ref().is_none_or(|r| r.is_match(out))
}

/// The first `n` characters of `s` with whitespace folded (for one-line messages).
pub fn first_words(s: &str, n: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > n {
        format!("{}…", one.chars().take(n).collect::<String>())
    } else {
        one
    }
}
