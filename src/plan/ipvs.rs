//! The desired IPVS table of one director, and its rendering as `ipvsadm`
//! commands and as `ipvsadm -Sn` lines (the grammar in ../shared/lvs-facts.md).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::model::{Mode, ServiceKey};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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

/// One service as `ipvsadm -Sn` prints it, parsed (IPv4, IPv6, fwmark; tcp/udp/sctp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveService {
    /// `-t 192.168.4.5:80`, `-u [2001:db8::1]:53`, `--sctp-service …`, `-f 8` or `-f 8 -6`.
    pub target: String,
    pub scheduler: String,
    pub persistence: Option<u32>,
    pub netmask: Option<String>,
    pub pe: Option<String>,
    pub one_packet: bool,
    pub flags: Vec<String>,
    pub dests: Vec<LiveDest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveDest {
    /// `192.168.2.100:80` or `[2001:db8::2]:80`.
    pub address: String,
    /// `-g`, `-m` or `-i`.
    pub method: String,
    pub weight: u32,
    /// Everything after the weight (`--tun-type gue --tun-port 6080` …), kept verbatim.
    pub extra: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ipvsadm -Sn line {line}: {message}: `{text}`")]
pub struct ParseError {
    pub line: usize,
    pub text: String,
    pub message: String,
}

/// Parse `ipvsadm -Sn` output.
pub fn parse_save(text: &str) -> Result<Vec<LiveService>, ParseError> {
    let mut services: Vec<LiveService> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let err = |message: &str| ParseError {
            line: i + 1,
            text: line.to_string(),
            message: message.to_string(),
        };
        let toks: Vec<&str> = line.split_whitespace().collect();
        let (target, rest) =
            parse_target(&toks[1..]).ok_or_else(|| err("no service (-t, -u, --sctp-service or -f)"))?;
        match toks[0] {
            "-A" => {
                let mut svc = LiveService {
                    target,
                    scheduler: String::new(),
                    persistence: None,
                    netmask: None,
                    pe: None,
                    one_packet: false,
                    flags: Vec::new(),
                    dests: Vec::new(),
                };
                let mut it = rest.iter();
                while let Some(t) = it.next() {
                    match *t {
                        "-s" => svc.scheduler = it.next().ok_or_else(|| err("-s without a scheduler"))?.to_string(),
                        "-p" => {
                            svc.persistence = Some(
                                it.next()
                                    .and_then(|v| v.parse().ok())
                                    .ok_or_else(|| err("-p without seconds"))?,
                            )
                        }
                        "-M" => svc.netmask = Some(it.next().ok_or_else(|| err("-M without a netmask"))?.to_string()),
                        "--pe" => svc.pe = Some(it.next().ok_or_else(|| err("--pe without a name"))?.to_string()),
                        "-o" => svc.one_packet = true,
                        "-b" => {
                            svc.flags = it
                                .next()
                                .ok_or_else(|| err("-b without flags"))?
                                .split(',')
                                .map(String::from)
                                .collect()
                        }
                        other => return Err(err(&format!("unknown service option {other}"))),
                    }
                }
                services.push(svc);
            }
            "-a" => {
                let svc = services
                    .iter_mut()
                    .find(|s| s.target == target)
                    .ok_or_else(|| err("real server before its service"))?;
                let mut dest = LiveDest {
                    address: String::new(),
                    method: String::new(),
                    weight: 0,
                    extra: Vec::new(),
                };
                let mut it = rest.iter();
                while let Some(t) = it.next() {
                    match *t {
                        "-r" => dest.address = it.next().ok_or_else(|| err("-r without an address"))?.to_string(),
                        "-g" | "-m" | "-i" => dest.method = t.to_string(),
                        "-w" => {
                            dest.weight = it
                                .next()
                                .and_then(|v| v.parse().ok())
                                .ok_or_else(|| err("-w without a weight"))?
                        }
                        other => dest.extra.push(other.to_string()),
                    }
                }
                if dest.address.is_empty() {
                    return Err(err("real server without -r"));
                }
                // Kernels since 5.2 print the default tunnel type; it means the same as none.
                if let Some(i) = dest
                    .extra
                    .windows(2)
                    .position(|w| w[0] == "--tun-type" && w[1] == "ipip")
                {
                    dest.extra.drain(i..i + 2);
                }
                svc.dests.push(dest);
            }
            _ => return Err(err("expected -A or -a")),
        }
    }
    Ok(services)
}

fn parse_target<'a>(toks: &'a [&'a str]) -> Option<(String, &'a [&'a str])> {
    match toks {
        ["-f", mark, "-6", rest @ ..] => Some((format!("-f {mark} -6"), rest)),
        [flag @ ("-t" | "-u" | "--sctp-service" | "-f"), addr, rest @ ..] => Some((format!("{flag} {addr}"), rest)),
        _ => None,
    }
}

impl LiveService {
    pub fn options(&self) -> String {
        let mut s = format!("-s {}", self.scheduler);
        if let Some(p) = self.persistence {
            s.push_str(&format!(" -p {p}"));
            if let Some(m) = self.netmask.as_deref().filter(|m| *m != "255.255.255.255") {
                s.push_str(&format!(" -M {m}"));
            }
        }
        if let Some(pe) = &self.pe {
            s.push_str(&format!(" --pe {pe}"));
        }
        if self.one_packet {
            s.push_str(" -o");
        }
        if !self.flags.is_empty() {
            s.push_str(&format!(" -b {}", self.flags.join(",")));
        }
        s
    }
}

impl LiveDest {
    fn options(&self) -> String {
        let mut s = format!("-r {} {} -w {}", self.address, self.method, self.weight);
        for e in &self.extra {
            s.push(' ');
            s.push_str(e);
        }
        s
    }
}

/// `TCP 192.168.4.5:80`, `UDP …`, `SCTP …`, `FWM 8`, `FWM 8 (IPv6)`: a
/// `-Sn` target the way `ipvsadm -Ln` names it.
pub fn describe(target: &str) -> String {
    match target.split_once(' ') {
        Some(("-t", a)) => format!("TCP {a}"),
        Some(("-u", a)) => format!("UDP {a}"),
        Some(("--sctp-service", a)) => format!("SCTP {a}"),
        Some(("-f", m)) => match m.strip_suffix(" -6") {
            Some(m) => format!("FWM {m} (IPv6)"),
            None => format!("FWM {m}"),
        },
        _ => target.to_string(),
    }
}

fn method_name(flag: &str) -> &str {
    match flag {
        "-g" => "dr (-g)",
        "-m" => "nat (-m)",
        "-i" => "tun (-i)",
        other => other,
    }
}

fn or_none(v: Option<String>) -> String {
    v.unwrap_or_else(|| "none".into())
}

/// The service options that differ, one phrase per field.
pub fn option_diffs(have: &LiveService, want: &LiveService) -> Vec<String> {
    let mut d = Vec::new();
    if have.scheduler != want.scheduler {
        d.push(format!("scheduler {} (want {})", have.scheduler, want.scheduler));
    }
    let secs = |p: Option<u32>| or_none(p.map(|p| format!("{p} s")));
    if have.persistence != want.persistence {
        d.push(format!(
            "persistence {} (want {})",
            secs(have.persistence),
            secs(want.persistence)
        ));
    }
    let mask = |s: &LiveService| {
        s.persistence
            .and(s.netmask.clone())
            .filter(|m| m != "255.255.255.255" && m != "128")
    };
    if have.persistence.is_some() && want.persistence.is_some() && mask(have) != mask(want) {
        d.push(format!(
            "persistence netmask {} (want {})",
            or_none(mask(have)),
            or_none(mask(want))
        ));
    }
    if have.pe != want.pe {
        d.push(format!(
            "persistence engine {} (want {})",
            or_none(have.pe.clone()),
            or_none(want.pe.clone())
        ));
    }
    if have.one_packet != want.one_packet {
        let on = |b: bool| if b { "on" } else { "off" };
        d.push(format!(
            "one-packet scheduling {} (want {})",
            on(have.one_packet),
            on(want.one_packet)
        ));
    }
    let flags = |s: &LiveService| {
        let mut f = s.flags.clone();
        f.sort();
        (!f.is_empty()).then(|| f.join(","))
    };
    if flags(have) != flags(want) {
        d.push(format!(
            "scheduler flags {} (want {})",
            or_none(flags(have)),
            or_none(flags(want))
        ));
    }
    d
}

/// The real-server fields that differ, one phrase per field.
pub fn dest_diffs(have: &LiveDest, want: &LiveDest) -> Vec<String> {
    let mut d = Vec::new();
    if have.method != want.method {
        d.push(format!(
            "forwarding {} (want {})",
            method_name(&have.method),
            method_name(&want.method)
        ));
    }
    if have.weight != want.weight {
        d.push(format!("weight {} (want {})", have.weight, want.weight));
    }
    if have.extra != want.extra {
        let x = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(" ") };
        d.push(format!("options {} (want {})", x(&have.extra), x(&want.extra)));
    }
    d
}

/// One difference between the desired and the live table, with the ipvsadm
/// arguments that repair it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpvsChange {
    pub description: String,
    pub args: String,
    /// A real server to drain before `args` deletes it: its weight goes to 0
    /// (no new connections), and the delete waits up to [`DRAIN_SECS`] for
    /// its active connections to end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<Drain>,
}

/// A real server leaving a service (see [`IpvsChange::drain`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drain {
    /// `-t 192.168.4.5:80`, `-f 6`.
    pub target: String,
    /// `192.168.2.200:80`
    pub address: String,
    /// `-m`, `-g`, `-i`
    pub method: String,
    pub weight: u32,
}

/// The longest a removed real server is drained before it is deleted anyway.
pub const DRAIN_SECS: u32 = 10;

/// `ipvsadm ARGS` as a shell command, every argument quoted (the arguments
/// may come from a live host's `ipvsadm -Sn`, which is not trusted).
pub fn ipvsadm_command(args: &str) -> String {
    let mut c = String::from("ipvsadm");
    for a in args.split_whitespace() {
        c.push(' ');
        c.push_str(&crate::shell::quote(a));
    }
    c
}

impl IpvsChange {
    /// The shell commands that make this change (a drain first, when there is one).
    pub fn commands(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(d) = &self.drain {
            let q = crate::shell::quote;
            let (t, a) = (d.target.as_str(), q(&d.address));
            if d.weight > 0 {
                out.push(ipvsadm_command(&format!("-e {t} -r {} {} -w 0", d.address, d.method)));
            }
            // ActiveConn is the fifth column of `ipvsadm -Ln` for a real server.
            out.push(format!(
                "lvslab_active() {{ {} | awk -v r={a} '$2 == r {{ print $5 }}'; }}",
                ipvsadm_command(&format!("-Ln {t}"))
            ));
            out.push(format!(
                "i=0; while n=$(lvslab_active) && [ -n \"$n\" ] && [ \"$n\" != 0 ] && [ $i -lt {} ]; do sleep 0.1; i=$((i+1)); done",
                DRAIN_SECS * 10
            ));
            out.push(format!(
                "echo \"note: drained {} from {} in $((i/10)).$((i%10)) s (weight 0; $(lvslab_active || echo 0) active connection(s) left)\"",
                d.address,
                describe(t)
            ));
        }
        out.push(ipvsadm_command(&self.args));
        out
    }
}

/// What to change so the live table holds the desired services, incrementally:
/// `-A`/`-E` for services, `-a`/`-e`/`-d` for real servers. `previous` is
/// what lvslab's earlier runs put in the table (from the lab's record):
/// its services that are no longer desired are deleted (`-D`). Other services
/// are left alone (they are not ours). A real server no longer declared in a
/// desired service is drained (weight 0, its connections end) and deleted.
pub fn diff(desired: &[IpvsService], previous: &[IpvsService], live: &[LiveService]) -> Vec<IpvsChange> {
    let change = |description: String, args: String| IpvsChange {
        description,
        args,
        drain: None,
    };
    let was = |target: &str, address: &str| {
        previous
            .iter()
            .filter(|p| p.target() == target)
            .flat_map(|p| p.real_servers.iter())
            .any(|d| format!("{}:{}", d.address, d.port) == address)
    };
    let mut out = Vec::new();
    for p in previous {
        let target = p.target();
        if desired.iter().any(|d| d.target() == target) {
            continue;
        }
        if let Some(have) = live.iter().find(|l| l.target == target) {
            out.push(change(
                format!(
                    "service {} ({}) is no longer declared: deleted",
                    describe(&target),
                    have.options()
                ),
                format!("-D {target}"),
            ));
        }
    }
    for svc in desired {
        let want = live_form(svc);
        let name = describe(&want.target);
        match live.iter().find(|l| l.target == want.target) {
            None => {
                out.push(change(
                    format!("service {name} missing (want {})", want.options()),
                    format!("-A {} {}", want.target, want.options()),
                ));
                for d in &want.dests {
                    out.push(change(
                        format!("real server {} missing from {name}", d.address),
                        format!("-a {} {}", want.target, d.options()),
                    ));
                }
            }
            Some(have) => {
                let fields = option_diffs(have, &want);
                if !fields.is_empty() {
                    out.push(change(
                        format!("service {name}: {}", fields.join(", ")),
                        format!("-E {} {}", want.target, want.options()),
                    ));
                }
                for d in &want.dests {
                    match have.dests.iter().find(|h| h.address == d.address) {
                        None => out.push(change(
                            format!(
                                "real server {} missing from {name} (want {} -w {})",
                                d.address, d.method, d.weight
                            ),
                            format!("-a {} {}", want.target, d.options()),
                        )),
                        Some(h) if h != d => out.push(change(
                            format!("real server {} in {name}: {}", d.address, dest_diffs(h, d).join(", ")),
                            format!("-e {} {}", want.target, d.options()),
                        )),
                        Some(_) => {}
                    }
                }
                for h in have
                    .dests
                    .iter()
                    .filter(|h| !want.dests.iter().any(|d| d.address == h.address))
                {
                    let description = if was(&want.target, &h.address) {
                        format!(
                            "real server {} is no longer declared in {name} ({} -w {}): drained and deleted",
                            h.address, h.method, h.weight
                        )
                    } else {
                        format!(
                            "undeclared real server {} in {name} ({} -w {})",
                            h.address, h.method, h.weight
                        )
                    };
                    out.push(IpvsChange {
                        description,
                        args: format!("-d {} -r {}", want.target, h.address),
                        drain: Some(Drain {
                            target: want.target.clone(),
                            address: h.address.clone(),
                            method: h.method.clone(),
                            weight: h.weight,
                        }),
                    });
                }
            }
        }
    }
    out
}

/// A desired service the way `ipvsadm -Sn` prints it (so it compares with
/// the live table field by field).
pub fn live_form(s: &IpvsService) -> LiveService {
    LiveService {
        target: s.target(),
        scheduler: s.scheduler.clone(),
        persistence: s.persistence,
        netmask: s
            .persistence
            .and(s.netmask)
            .filter(|m| *m != Ipv4Addr::BROADCAST)
            .map(|m| m.to_string()),
        pe: None,
        one_packet: s.one_packet,
        flags: s.flags.clone(),
        dests: {
            let mut d: Vec<&IpvsDest> = s.real_servers.iter().collect();
            d.sort_by_key(|d| (d.address, d.port));
            d.into_iter()
                .map(|d| LiveDest {
                    address: format!("{}:{}", d.address, d.port),
                    method: d.method_flag().to_string(),
                    weight: d.weight,
                    extra: Vec::new(),
                })
                .collect()
        },
    }
}

/// A service keepalived owns, as its configuration declares it.
#[derive(Debug, Clone)]
pub struct KeepalivedService {
    pub service: IpvsService,
    /// `192.168.4.51:80`
    pub sorry: Option<String>,
    pub inhibit_on_failure: bool,
    /// Real servers' names by `address:port`, for the notes.
    pub names: BTreeMap<String, String>,
}

/// A director's whole live table judged against what it should hold.
#[derive(Debug, Clone, Default)]
pub struct TableAudit {
    /// Differences in the services the plan manages with ipvsadm (its IPVS step repairs them).
    pub owned: Vec<IpvsChange>,
    /// Differences in keepalived's services that keepalived's rules do not allow,
    /// each with the ipvsadm arguments that put keepalived's configuration back.
    pub keepalived: Vec<IpvsChange>,
    /// Services nobody declared, described (`TCP 10.0.0.1:22 (-s rr)`): never removed.
    pub undeclared: Vec<String>,
    /// States keepalived's rules allow, said: a real server out of the pool
    /// while its check fails, the sorry server in when none is healthy.
    pub notes: Vec<String>,
    /// keepalived real servers in the pool, and declared.
    pub in_pool: usize,
    pub total: usize,
}

/// Judge a director's live table: the services the plan owns (`ipvs::diff`),
/// keepalived's services by keepalived's rules (a real server may be missing,
/// or at weight 0 with inhibit_on_failure, while its check fails; the sorry
/// server only when none is left), and anything else (undeclared).
pub fn audit(
    owned: &[IpvsService],
    previous: &[IpvsService],
    keepalived: &[KeepalivedService],
    live: &[LiveService],
) -> TableAudit {
    let mut a = TableAudit {
        owned: diff(owned, previous, live),
        ..TableAudit::default()
    };
    // Services lvslab made and no longer declares are the owned diff's (deleted by the IPVS step).
    let mut declared: Vec<String> = owned.iter().chain(previous).map(|s| s.target()).collect();
    for k in keepalived {
        declared.push(k.service.target());
        let want = &live_form(&k.service);
        let svc = describe(&want.target);
        let Some(have) = live.iter().find(|l| l.target == want.target) else {
            a.total += want.dests.len();
            a.keepalived.push(IpvsChange {
                description: format!("keepalived's service {svc} is not in the table (is keepalived running?)"),
                args: format!("-A {} {}", want.target, want.options()),
                drain: None,
            });
            a.keepalived.extend(want.dests.iter().map(|d| IpvsChange {
                description: format!("real server {} missing from keepalived's {svc}", d.address),
                args: format!("-a {} {}", want.target, d.options()),
                drain: None,
            }));
            continue;
        };
        let fields = option_diffs(have, want);
        if !fields.is_empty() {
            a.keepalived.push(IpvsChange {
                description: format!("keepalived's service {svc}: {}", fields.join(", ")),
                args: format!("-E {} {}", want.target, want.options()),
                drain: None,
            });
        }
        for w in &want.dests {
            a.total += 1;
            let name = k.names.get(&w.address).map_or(w.address.as_str(), String::as_str);
            let who = if name == w.address {
                w.address.clone()
            } else {
                format!("{name} ({})", w.address)
            };
            match have.dests.iter().find(|h| h.address == w.address) {
                Some(h) if h == w => a.in_pool += 1,
                None => a.notes.push(format!(
                    "{who} is out of {svc}: keepalived removed it (its health check fails)"
                )),
                Some(h) if h.weight == 0 && k.inhibit_on_failure => a.notes.push(format!(
                    "{who} has weight 0 in {svc}: its health check fails (inhibit_on_failure)"
                )),
                Some(h) => a.keepalived.push(IpvsChange {
                    description: format!(
                        "real server {} in keepalived's {svc}: {}",
                        w.address,
                        dest_diffs(h, w).join(", ")
                    ),
                    args: format!("-e {} {}", want.target, w.options()),
                    drain: None,
                }),
            }
        }
        for h in have
            .dests
            .iter()
            .filter(|h| !want.dests.iter().any(|w| w.address == h.address))
        {
            if k.sorry.as_deref() == Some(h.address.as_str()) {
                a.notes.push(format!(
                    "sorry server {} is in {svc}: no real server is healthy",
                    h.address
                ));
            } else {
                a.keepalived.push(IpvsChange {
                    description: format!(
                        "undeclared real server {} in keepalived's {svc} ({} -w {})",
                        h.address, h.method, h.weight
                    ),
                    args: format!("-d {} -r {}", want.target, h.address),
                    drain: None,
                });
            }
        }
    }
    a.undeclared = live
        .iter()
        .filter(|l| !declared.contains(&l.target))
        .map(|l| format!("{} ({})", describe(&l.target), l.options()))
        .collect();
    a
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    const SAVED: &str = "\
-A -t 192.168.4.5:80 -s wrr
-a -t 192.168.4.5:80 -r 192.168.2.100:80 -m -w 1
-a -t 192.168.4.5:80 -r 192.168.2.200:80 -m -w 2
-A -u [2001:db8::1]:53 -s rr -o
-a -u [2001:db8::1]:53 -r [2001:db8::2]:53 -g -w 1
-A -f 8 -s sh -p 600 -M 255.255.255.0 -b sh-fallback,sh-port
-a -f 8 -r 192.168.4.52:0 -i -w 1 --tun-type gue --tun-port 6080
-a -f 8 -r 192.168.4.53:0 -i -w 1 --tun-type ipip
-A -f 9 -6 -s rr
-A --sctp-service 10.0.0.1:9 -s lc --pe sip
";

    #[test]
    fn parses_every_form() {
        let s = parse_save(SAVED).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].dests[1].weight, 2);
        assert_eq!(s[0].dests[1].method, "-m");
        assert_eq!(s[1].target, "-u [2001:db8::1]:53");
        assert!(s[1].one_packet);
        assert_eq!(s[1].dests[0].address, "[2001:db8::2]:53");
        assert_eq!(s[2].persistence, Some(600));
        assert_eq!(s[2].netmask.as_deref(), Some("255.255.255.0"));
        assert_eq!(s[2].flags, ["sh-fallback", "sh-port"]);
        assert_eq!(s[2].dests[0].extra, ["--tun-type", "gue", "--tun-port", "6080"]);
        assert!(s[2].dests[1].extra.is_empty(), "--tun-type ipip is the default");
        assert_eq!(s[3].target, "-f 9 -6");
        assert_eq!(s[4].pe.as_deref(), Some("sip"));
        assert!(
            parse_save("-a -t 1.2.3.4:80 -r 5.6.7.8:80 -g -w 1").is_err(),
            "real server before service"
        );
        assert!(parse_save("-X -t 1.2.3.4:80").is_err());
    }

    fn nat() -> Vec<IpvsService> {
        vec![IpvsService {
            key: ServiceKey::Tcp(80),
            vip: Ipv4Addr::new(192, 168, 4, 5),
            scheduler: "wrr".into(),
            flags: vec![],
            persistence: None,
            netmask: None,
            one_packet: false,
            real_servers: [(100, 1), (200, 2)]
                .into_iter()
                .map(|(h, w)| IpvsDest {
                    address: Ipv4Addr::new(192, 168, 2, h),
                    port: 80,
                    method: Mode::Nat,
                    weight: w,
                })
                .collect(),
        }]
    }

    #[test]
    fn diff_is_incremental() {
        let live = parse_save(&save_lines(&nat()).join("\n")).unwrap();
        assert!(diff(&nat(), &[], &live).is_empty(), "an identical table needs nothing");

        assert_eq!(
            diff(&nat(), &[], &[])
                .iter()
                .map(|c| c.args.as_str())
                .collect::<Vec<_>>(),
            [
                "-A -t 192.168.4.5:80 -s wrr",
                "-a -t 192.168.4.5:80 -r 192.168.2.100:80 -m -w 1",
                "-a -t 192.168.4.5:80 -r 192.168.2.200:80 -m -w 2"
            ]
        );

        let tampered = parse_save(
            "-A -t 192.168.4.5:80 -s rr\n-a -t 192.168.4.5:80 -r 192.168.2.100:80 -m -w 5\n-a -t 192.168.4.5:80 -r 192.168.2.99:80 -m -w 1\n-A -t 10.9.9.9:22 -s rr\n",
        )
        .unwrap();
        let changes = diff(&nat(), &[], &tampered);
        let args: Vec<&str> = changes.iter().map(|c| c.args.as_str()).collect();
        assert_eq!(
            args,
            [
                "-E -t 192.168.4.5:80 -s wrr",
                "-e -t 192.168.4.5:80 -r 192.168.2.100:80 -m -w 1",
                "-a -t 192.168.4.5:80 -r 192.168.2.200:80 -m -w 2",
                "-d -t 192.168.4.5:80 -r 192.168.2.99:80",
            ],
            "never -C, and a service that is not ours is left alone"
        );
        assert_eq!(
            changes[2].description,
            "real server 192.168.2.200:80 missing from TCP 192.168.4.5:80 (want -m -w 2)"
        );
        // A real server leaving is drained first: weight 0, then deleted when
        // its connections end (bounded), saying so.
        assert!(changes[3].drain.is_some());
        assert_eq!(
            changes[3].commands(),
            [
                "ipvsadm -e -t 192.168.4.5:80 -r 192.168.2.99:80 -m -w 0",
                "lvslab_active() { ipvsadm -Ln -t 192.168.4.5:80 | awk -v r=192.168.2.99:80 '$2 == r { print $5 }'; }",
                "i=0; while n=$(lvslab_active) && [ -n \"$n\" ] && [ \"$n\" != 0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done",
                "echo \"note: drained 192.168.2.99:80 from TCP 192.168.4.5:80 in $((i/10)).$((i%10)) s (weight 0; $(lvslab_active || echo 0) active connection(s) left)\"",
                "ipvsadm -d -t 192.168.4.5:80 -r 192.168.2.99:80",
            ]
        );
    }

    /// Issue 15, defect 2: an edited topology converges. What lvslab made
    /// before (`previous`) and the file no longer declares is deleted; a
    /// service nobody declared is still left alone.
    #[test]
    fn services_and_real_servers_no_longer_declared_are_removed() {
        let before = {
            let mut v = nat();
            let mut other = v[0].clone();
            other.key = ServiceKey::Udp(53);
            v.push(other);
            v
        };
        let live = parse_save(&(save_lines(&before).join("\n") + "\n-A -t 10.9.9.9:22 -s rr\n")).unwrap();
        // The edit: the UDP service is gone, and web2 left the TCP one.
        let mut after = nat();
        after[0].real_servers.truncate(1);
        let changes = diff(&after, &before, &live);
        let got: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| (c.description.as_str(), c.args.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "service UDP 192.168.4.5:53 (-s wrr) is no longer declared: deleted",
                    "-D -u 192.168.4.5:53"
                ),
                (
                    "real server 192.168.2.200:80 is no longer declared in TCP 192.168.4.5:80 (-m -w 2): drained and deleted",
                    "-d -t 192.168.4.5:80 -r 192.168.2.200:80"
                ),
            ]
        );
        // Once applied, nothing is left to do.
        let applied = parse_save(&(save_lines(&after).join("\n") + "\n-A -t 10.9.9.9:22 -s rr\n")).unwrap();
        assert!(diff(&after, &before, &applied).is_empty());
        // The audit does not call the deleted service undeclared.
        let a = audit(&after, &before, &[], &live);
        assert_eq!(a.undeclared, ["TCP 10.9.9.9:22 (-s rr)"]);
    }

    /// The desired table compared field by field is exactly what `ipvsadm
    /// -Sn` prints for it (no render-and-reparse in `diff`).
    #[test]
    fn live_form_is_the_saved_form() {
        let mut svcs = nat();
        let mut s = svcs[0].clone();
        s.key = ServiceKey::Fwmark(6);
        s.persistence = Some(300);
        s.netmask = Some(Ipv4Addr::new(255, 255, 255, 0));
        s.flags = vec!["sh-port".into(), "sh-fallback".into()];
        s.scheduler = "sh".into();
        svcs.push(s);
        let mut u = svcs[0].clone();
        u.key = ServiceKey::Udp(53);
        u.one_packet = true;
        u.persistence = None;
        u.netmask = Some(Ipv4Addr::BROADCAST);
        svcs.push(u);
        let saved = parse_save(&save_lines(&svcs).join("\n")).unwrap();
        for s in &svcs {
            let want = saved.iter().find(|l| l.target == s.target()).unwrap();
            assert_eq!(&live_form(s), want);
        }
    }
}

#[cfg(test)]
mod audit_tests {
    use super::*;

    fn svc(key: ServiceKey, sched: &str, dests: &[(u8, u32)]) -> IpvsService {
        IpvsService {
            key,
            vip: Ipv4Addr::new(192, 168, 4, 253),
            scheduler: sched.into(),
            flags: vec![],
            persistence: None,
            netmask: None,
            one_packet: false,
            real_servers: dests
                .iter()
                .map(|(h, w)| IpvsDest {
                    address: Ipv4Addr::new(192, 168, 4, *h),
                    port: 80,
                    method: Mode::Dr,
                    weight: *w,
                })
                .collect(),
        }
    }

    #[test]
    fn describes_targets_like_ipvsadm_ln() {
        assert_eq!(describe("-t 192.168.4.5:80"), "TCP 192.168.4.5:80");
        assert_eq!(describe("-u [2001:db8::1]:53"), "UDP [2001:db8::1]:53");
        assert_eq!(describe("-f 8"), "FWM 8");
        assert_eq!(describe("-f 9 -6"), "FWM 9 (IPv6)");
        assert_eq!(describe("--sctp-service 10.0.0.1:9"), "SCTP 10.0.0.1:9");
    }

    #[test]
    fn parses_more_forms() {
        // IPv6 fwmark with a prefix-length netmask, sched flags without
        // persistence, a dest with a tunnel checksum flag and an IPv6 real server.
        let s = parse_save(
            "-A -f 1 -6 -s sh -p 300 -M 64 -b sh-port\n-a -f 1 -6 -r [2001:db8::9]:0 -i -w 3 --tun-type gre --tun-nocsum\n-A -t 10.1.1.1:443 -s mh -b mh-fallback,mh-port\n-a -t 10.1.1.1:443 -r 10.1.2.1:8443 -m -w 0\n",
        )
        .unwrap();
        assert_eq!(s[0].target, "-f 1 -6");
        assert_eq!(s[0].netmask.as_deref(), Some("64"));
        assert_eq!(s[0].dests[0].address, "[2001:db8::9]:0");
        assert_eq!(s[0].dests[0].extra, ["--tun-type", "gre", "--tun-nocsum"]);
        assert_eq!(s[1].flags, ["mh-fallback", "mh-port"]);
        assert_eq!(s[1].dests[0].weight, 0);
        assert_eq!(s[1].options(), "-s mh -b mh-fallback,mh-port");
        for bad in [
            "-A -t 1.2.3.4:80 -s",
            "-A -t 1.2.3.4:80 -s rr -p x",
            "-A -t 1.2.3.4:80 -s rr -Z",
            "-A -t 1.2.3.4:80 -s rr\n-a -t 1.2.3.4:80 -m -w 1",
            "-A -t 1.2.3.4:80 -s rr\n-a -t 1.2.3.4:80 -r 5.6.7.8:80 -m -w heavy",
            "-A",
        ] {
            assert!(parse_save(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_save("-A -t 1.2.3.4:80 -s rr\n-A -t 1.2.3.4:80 -s rr -p x")
                .unwrap_err()
                .line,
            2
        );
    }

    #[test]
    fn field_by_field() {
        let want = parse_save("-A -t 1.2.3.4:80 -s wrr -p 600 -M 255.255.255.0").unwrap();
        let have = parse_save("-A -t 1.2.3.4:80 -s wlc -p 300 -o -b sh-port").unwrap();
        assert_eq!(
            option_diffs(&have[0], &want[0]),
            [
                "scheduler wlc (want wrr)",
                "persistence 300 s (want 600 s)",
                "persistence netmask none (want 255.255.255.0)",
                "one-packet scheduling on (want off)",
                "scheduler flags sh-port (want none)"
            ]
        );
        let a = parse_save("-A -t 1.2.3.4:80 -s rr\n-a -t 1.2.3.4:80 -r 5.6.7.8:80 -g -w 1").unwrap();
        let b = parse_save("-A -t 1.2.3.4:80 -s rr\n-a -t 1.2.3.4:80 -r 5.6.7.8:80 -i -w 2 --tun-type gue").unwrap();
        assert_eq!(
            dest_diffs(&b[0].dests[0], &a[0].dests[0]),
            [
                "forwarding tun (-i) (want dr (-g))",
                "weight 2 (want 1)",
                "options --tun-type gue (want none)"
            ]
        );
        // The same flags in another order are the same flags.
        let x = parse_save("-A -t 1.2.3.4:80 -s sh -b sh-port,sh-fallback").unwrap();
        let y = parse_save("-A -t 1.2.3.4:80 -s sh -b sh-fallback,sh-port").unwrap();
        assert!(option_diffs(&x[0], &y[0]).is_empty());
    }

    #[test]
    fn audit_owned_keepalived_and_undeclared() {
        let owned = vec![svc(ServiceKey::Tcp(80), "rr", &[(52, 1), (53, 1)])];
        let mut ka_svc = svc(ServiceKey::Tcp(443), "wrr", &[(52, 1), (53, 2)]);
        ka_svc.vip = Ipv4Addr::new(192, 168, 4, 254);
        let ka = vec![KeepalivedService {
            service: ka_svc,
            sorry: Some("192.168.4.51:80".into()),
            inhibit_on_failure: false,
            names: [("192.168.4.52:80".to_string(), "web1".to_string())].into(),
        }];
        let live = parse_save(
            "-A -t 192.168.4.253:80 -s rr\n-a -t 192.168.4.253:80 -r 192.168.4.52:80 -g -w 1\n\
             -A -t 192.168.4.254:443 -s wrr\n-a -t 192.168.4.254:443 -r 192.168.4.53:80 -g -w 7\n-a -t 192.168.4.254:443 -r 192.168.4.60:80 -g -w 1\n\
             -A -u 10.0.0.1:53 -s rr\n",
        )
        .unwrap();
        let a = audit(&owned, &[], &ka, &live);
        assert_eq!(
            a.owned.iter().map(|c| c.description.as_str()).collect::<Vec<_>>(),
            ["real server 192.168.4.53:80 missing from TCP 192.168.4.253:80 (want -g -w 1)"]
        );
        assert_eq!(
            a.keepalived
                .iter()
                .map(|c| (c.description.as_str(), c.args.as_str()))
                .collect::<Vec<_>>(),
            [
                (
                    "real server 192.168.4.53:80 in keepalived's TCP 192.168.4.254:443: weight 7 (want 2)",
                    "-e -t 192.168.4.254:443 -r 192.168.4.53:80 -g -w 2"
                ),
                (
                    "undeclared real server 192.168.4.60:80 in keepalived's TCP 192.168.4.254:443 (-g -w 1)",
                    "-d -t 192.168.4.254:443 -r 192.168.4.60:80"
                ),
            ]
        );
        assert_eq!(
            a.notes,
            ["web1 (192.168.4.52:80) is out of TCP 192.168.4.254:443: keepalived removed it (its health check fails)"]
        );
        assert_eq!(a.undeclared, ["UDP 10.0.0.1:53 (-s rr)"]);
        assert_eq!((a.in_pool, a.total), (0, 2));

        // keepalived's service gone entirely: put back whole.
        let a = audit(&[], &[], &ka, &[]);
        assert_eq!(
            a.keepalived.iter().map(|c| c.args.as_str()).collect::<Vec<_>>(),
            [
                "-A -t 192.168.4.254:443 -s wrr",
                "-a -t 192.168.4.254:443 -r 192.168.4.52:80 -g -w 1",
                "-a -t 192.168.4.254:443 -r 192.168.4.53:80 -g -w 2"
            ]
        );
    }
}
