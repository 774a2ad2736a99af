//! Deciding: topology + plan + evidence → checks. Pure; every rule of what a
//! working LVS lab looks like lives here (see ../shared/lvs-facts.md).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::parse::{self, Counters};
use super::probe::{arp_prober, real_port, url};
use super::{Check, Evidence, Out, Share};
use crate::model::{Host, Mode, Role, Scheduler, Service, ServiceKey, Topology, UserCheck};
use crate::plan::{Plan, Resource, ipvs};

/// What the distribution of one client's sequential requests should look like
/// under a scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// rr: equal shares among real servers with weight > 0.
    Equal,
    /// wrr: shares proportional to the weights.
    Weighted,
    /// lc, wlc: each request goes to the real server with the least
    /// connections (ActiveConn × 256 + InActConn, per weight for wlc); the
    /// shares follow from the counts read before the traffic (earlier traffic
    /// included), see [`least_connections`].
    LeastConnections,
    /// Persistence, sh, dh, lblc, lblcr, mh: one client (and one VIP) maps to one real server.
    Sticky,
    /// sed, nq, fo, ovf: with one request at a time, one real server takes them all.
    Single,
    /// sh with sh-port, mh with mh-port: the source port is hashed too, so one
    /// client's new connections land on more than one real server (which ones
    /// is the hash's choice).
    PortHashed,
}

pub fn expect(s: &Service) -> Expect {
    use Scheduler::*;
    if s.persistence.is_some() {
        return Expect::Sticky;
    }
    let port_hashed = s.sched_flags.iter().any(|f| f == "sh-port" || f == "mh-port");
    match s.scheduler {
        Rr => Expect::Equal,
        Wrr => Expect::Weighted,
        Lc | Wlc => Expect::LeastConnections,
        // The source port is hashed too: each new connection may land elsewhere.
        Sh | Mh if port_hashed => Expect::PortHashed,
        Sh | Dh | Lblc | Lblcr | Mh => Expect::Sticky,
        Sed | Nq | Fo | Ovf => Expect::Single,
    }
}

fn expect_words(s: &Service) -> String {
    let sched = s.scheduler.as_str();
    match expect(s) {
        Expect::Equal => format!("{sched}: equal shares among real servers with weight > 0"),
        Expect::Weighted => format!("{sched}: shares proportional to the weights"),
        Expect::PortHashed => format!(
            "{sched} with the source port hashed: one client's connections reach more than one real server (which ones is the hash's choice: shown, not judged)"
        ),
        Expect::LeastConnections => format!(
            "{sched}: each request to the real server with the fewest connections (active × 256 + inactive{}), counted from what the directors held before the traffic",
            if s.scheduler == Scheduler::Wlc {
                ", per weight"
            } else {
                ""
            }
        ),
        Expect::Sticky => match s.persistence {
            Some(p) => format!("persistent ({p} s): all requests from one client go to one real server"),
            None => format!("{sched}: hashing maps one client to one real server"),
        },
        Expect::Single => format!("{sched}: with one request at a time, one real server takes them all"),
    }
}

struct Ctx<'a> {
    t: &'a Topology,
    plan: &'a Plan,
    ev: &'a Evidence,
}

impl<'a> Ctx<'a> {
    fn probe(
        &self,
        round: &'a BTreeMap<String, BTreeMap<String, Out>>,
        host: &str,
        key: &str,
    ) -> Result<&'a Out, String> {
        round_probe(self.ev, round, host, key)
    }
    fn before(&self, host: &str, key: &str) -> Result<&'a Out, String> {
        self.probe(&self.ev.before, host, key)
    }
    fn after(&self, host: &str, key: &str) -> Result<&'a Out, String> {
        self.probe(&self.ev.after, host, key)
    }
    /// A host's sysctls as read before the traffic (empty if unread).
    fn sysctls(&self, host: &str) -> BTreeMap<String, String> {
        self.before(host, "sysctl")
            .map(|o| parse::sysctls(&o.out))
            .unwrap_or_default()
    }
    /// A host's links as read before the traffic (empty if unread).
    fn links(&self, host: &str) -> Vec<parse::Link> {
        self.before(host, "link")
            .map(|o| parse::links(&o.out))
            .unwrap_or_default()
    }
    fn name(&self, h: crate::model::HostId) -> &'a str {
        &self.t.host(h).name
    }

    /// Every known MAC → `host iface`.
    fn mac_owners(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for h in &self.t.hosts {
            for l in self.links(&h.name) {
                if let Some(mac) = l.mac {
                    m.insert(mac, format!("{} {}", h.name, l.name));
                }
            }
        }
        m
    }

    /// Directors of `s` holding its VIP now, with the MAC of the interface that holds it.
    fn vip_holders(&self, s: &Service) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        for d in &s.directors {
            let name = self.name(*d);
            let Ok(addr) = self.before(name, "addr") else { continue };
            let Some((iface, _, _)) = parse::addresses(&addr.out).into_iter().find(|(_, a, _)| *a == s.vip) else {
                continue;
            };
            let mac = self
                .links(name)
                .into_iter()
                .find(|l| l.name == iface)
                .and_then(|l| l.mac);
            out.push((name.to_string(), mac));
        }
        out
    }

    /// The service's counters on all its directors, after minus before.
    fn service_delta(&self, s: &Service) -> Result<(Counters, BTreeMap<String, u64>), String> {
        service_delta(self.t, self.ev, s)
    }
}

/// A service's counters on all its directors, after minus before, with the
/// new connections per real server (`address:port`).
fn service_delta(t: &Topology, ev: &Evidence, s: &Service) -> Result<(Counters, BTreeMap<String, u64>), String> {
    let key = stats_key(s);
    let mut total = Counters::default();
    let mut dests: BTreeMap<String, u64> = BTreeMap::new();
    for d in &s.directors {
        let name = &t.host(*d).name;
        let b = parse::stats(&round_probe(ev, &ev.before, name, "ipvs-stats")?.out);
        let a = parse::stats(&round_probe(ev, &ev.after, name, "ipvs-stats")?.out);
        let Some(after) = a.iter().find(|x| x.key == key) else {
            continue;
        };
        let before = b.iter().find(|x| x.key == key);
        let delta = after.total.since(before.map(|b| b.total).unwrap_or_default());
        total.conns += delta.conns;
        total.in_pkts += delta.in_pkts;
        total.out_pkts += delta.out_pkts;
        for (dest, c) in &after.dests {
            let was = before.and_then(|b| b.dests.get(dest)).copied().unwrap_or_default();
            *dests.entry(dest.clone()).or_default() += c.since(was).conns;
        }
    }
    Ok((total, dests))
}

/// One probe of one round of the evidence, or why there is none.
fn round_probe<'a>(
    ev: &'a Evidence,
    round: &'a BTreeMap<String, BTreeMap<String, Out>>,
    host: &str,
    key: &str,
) -> Result<&'a Out, String> {
    if let Some(why) = ev.unreachable.get(host) {
        return Err(format!("{host} could not be reached: {why}"));
    }
    round
        .get(host)
        .and_then(|m| m.get(key))
        .ok_or_else(|| format!("{host}: no result for probe `{key}`"))
}

/// The raw counters behind a service's delta, a line per director: what to
/// look at when the delta is not what the traffic should have made.
fn counter_lines(t: &Topology, ev: &Evidence, s: &Service) -> Vec<String> {
    let key = stats_key(s);
    let show = |c: Option<Counters>| {
        c.map_or("absent".to_string(), |c| {
            format!("Conns {} InPkts {} OutPkts {}", c.conns, c.in_pkts, c.out_pkts)
        })
    };
    let mut out = Vec::new();
    for d in &s.directors {
        let name = &t.host(*d).name;
        let read = |round| {
            round_probe(ev, round, name, "ipvs-stats")
                .map(|o| parse::stats(&o.out).into_iter().find(|x| x.key == key).map(|x| x.total))
        };
        match (read(&ev.before), read(&ev.after)) {
            (Ok(b), Ok(a)) => out.push(format!(
                "{name}: {key} before the traffic {}, after {}",
                show(b),
                show(a)
            )),
            (Err(e), _) | (_, Err(e)) => out.push(e),
        }
    }
    if ev.stats_rereads > 0 {
        out.push(format!(
            "the directors' counters were read {} more time(s) after the traffic, waiting for the kernel to fold them in",
            ev.stats_rereads
        ));
    }
    out
}

/// How far IPVS's new-connection count may fall short of the answers: a client
/// that reuses a source port whose IPVS entry is still in TIME_WAIT reuses the
/// entry without counting a new connection.
fn slack(sent: u32) -> u64 {
    u64::from((sent / 10).max(2))
}

/// How `ipvsadm -Ln --stats` names a service.
pub fn stats_key(s: &Service) -> String {
    match s.key {
        ServiceKey::Tcp(p) => format!("TCP {}:{p}", s.vip),
        ServiceKey::Udp(p) => format!("UDP {}:{p}", s.vip),
        ServiceKey::Fwmark(m) => format!("FWM {m}"),
    }
}

fn check(id: String, kind: &'static str, title: String, proves: &str) -> Check {
    Check::new(id, kind, title, proves)
}

fn first_line(s: &str) -> &str {
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("")
}

fn short(s: &str, n: usize) -> String {
    super::probe::first_words(s, n)
}

/// Services whose IPVS counters (all directors together) show fewer new
/// connections than their answered requests, beyond the slack for reused
/// connection entries. The kernel folds its per-CPU counters into what
/// `ipvsadm` reads every 2 s, later on a loaded machine: gather reads the
/// counters again while this names any service.
pub fn counters_behind(t: &Topology, ev: &Evidence) -> Vec<String> {
    let mut out = Vec::new();
    for s in &t.services {
        let Some(tr) = ev.traffic.get(&s.name) else { continue };
        let answered: u64 = tr.answers.values().map(|n| u64::from(*n)).sum();
        if answered == 0 {
            continue;
        }
        if let Ok((total, _)) = service_delta(t, ev, s)
            && total.conns + slack(tr.sent) < answered
        {
            out.push(s.name.clone());
        }
    }
    out
}

pub fn decide(t: &Topology, plan: &Plan, ev: &Evidence) -> Vec<Check> {
    let cx = Ctx { t, plan, ev };
    let mut out = Vec::new();
    for d in t.hosts_with_role(Role::Director) {
        if t.services_of_director(d.id).next().is_some() {
            out.push(ipvs_table(&cx, d));
        }
    }
    for d in t.hosts_with_role(Role::Director) {
        if t.services_of_director(d.id).next().is_some() {
            out.push(director_audit(&cx, d));
        }
    }
    if let Some(ha) = &t.ha {
        for inst in &ha.instances {
            out.push(vrrp(&cx, inst));
        }
    }
    for h in &t.hosts {
        if t.services_of_real_server(h.id).next().is_some() {
            out.push(real_server_audit(&cx, h));
        }
    }
    for s in &t.services {
        out.push(health(&cx, s));
    }
    for s in &t.services {
        out.push(distribution(&cx, s));
        if expect(s) == Expect::Sticky {
            out.push(stickiness(&cx, s));
        }
        out.push(path(&cx, s));
        if s.mode != Mode::Nat {
            out.push(arp(&cx, s));
        }
    }
    if t.storage.is_some() {
        out.push(storage(&cx));
    }
    for c in &t.checks {
        out.push(user_check(&cx, c));
    }
    out
}

/// Shared storage: the file the first real server wrote through its mount is
/// what every real server serves.
fn storage(cx: &Ctx) -> Check {
    use super::probe::{STORAGE_FILE, STORAGE_WRITE, storage_read_key, storage_readers, storage_writer};
    let host = cx.t.storage.as_ref().map_or("?", |st| cx.name(st.host));
    let rsync =
        cx.t.storage
            .as_ref()
            .is_some_and(|st| st.sync == crate::model::SyncMode::Rsync);
    let mut c = check(
        format!("storage/{host}"),
        "storage",
        format!("Shared storage from {host}"),
        if rsync {
            "a file written on the storage host reaches every real server's copy with rsync (each serves its own copy, fetched from one source)"
        } else {
            "a file written on one real server through the shared mount is served by every real server (they serve one directory, not copies)"
        },
    );
    let readers = storage_readers(cx.t);
    if readers.is_empty() {
        return c.skip("not checked: no real server shares the storage");
    }
    let Some((writer, _)) = storage_writer(cx.t) else {
        return c.skip("not checked: no real server mounts the share");
    };
    let wrote = match cx.before(&writer.name, STORAGE_WRITE) {
        Err(e) => return c.settle(vec![e], String::new()),
        Ok(o) if o.rc != 0 => {
            return c.settle(
                vec![format!(
                    "{} could not write {STORAGE_FILE} into the share: {}",
                    writer.name,
                    first_line(&o.out)
                )],
                String::new(),
            );
        }
        Ok(o) => o.out.trim_end().to_string(),
    };
    c.evidence
        .push(format!("{} wrote {STORAGE_FILE}: {wrote}", writer.name));
    let mut problems = Vec::new();
    for rs in &readers {
        let key = storage_read_key(&rs.name);
        let read = cx.ev.after.iter().find_map(|(_, probes)| probes.get(&key));
        match read {
            None => problems.push(format!("{}: no result for probe `{key}`", rs.name)),
            Some(o) if o.rc == 0 && o.out.trim_end() == wrote => {
                c.evidence.push(format!("{} serves it", rs.name));
            }
            Some(o) => {
                c.evidence.push(format!("{} gave: {}", rs.name, short(&o.out, 60)));
                problems.push(format!("{} does not serve the file {} wrote", rs.name, writer.name));
            }
        }
    }
    c.settle(
        problems,
        format!("{} real server(s) serve the file {} wrote", readers.len(), writer.name),
    )
}

fn ipvs_table(cx: &Ctx, d: &Host) -> Check {
    let c = check(
        format!("ipvs/{}", d.name),
        "ipvs",
        format!("IPVS table on {}", d.name),
        "the kernel balances exactly the services and real servers the topology declares (live `ipvsadm -Sn` equals the plan)",
    );
    let desired: Vec<ipvs::IpvsService> = cx
        .plan
        .phases
        .iter()
        .flat_map(|p| &p.hosts)
        .filter(|h| h.host == d.name)
        .flat_map(|h| &h.steps)
        .filter_map(|s| match &s.resource {
            Resource::IpvsTable { services, .. } => Some(services.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    let out = match cx.before(&d.name, "ipvs-save") {
        Ok(o) => o,
        Err(e) => return c.settle(vec![e], String::new()),
    };
    if out.rc != 0 {
        return c.settle(
            vec![format!("cannot read the IPVS table: {}", first_line(&out.out))],
            String::new(),
        );
    }
    let mut c = c;
    c.evidence = out.out.lines().map(|l| format!("live: {l}")).collect();
    if c.evidence.is_empty() {
        c.evidence.push("live: (empty table)".into());
    }
    let live = match ipvs::parse_save(&out.out) {
        Ok(l) => l,
        Err(e) => return c.settle(vec![format!("cannot parse `ipvsadm -Sn`: {e}")], String::new()),
    };
    let ka: Vec<&Service> = cx.t.services_of_director(d.id).filter(|s| s.keepalived).collect();
    let a = ipvs::audit(
        &desired,
        &[],
        &crate::compile::context::keepalived_table(cx.t, d),
        &live,
    );
    let mut problems: Vec<String> = Vec::new();
    for ch in a.owned.iter().chain(&a.keepalived) {
        problems.push(ch.description.clone());
        c.evidence.push(format!("repair: ipvsadm {}", ch.args));
    }
    problems.extend(a.undeclared.iter().map(|u| format!("undeclared service {u}")));
    c.evidence.extend(a.notes);
    let n = desired.len();
    let rs: usize = desired.iter().map(|s| s.real_servers.len()).sum();
    let mut ok = format!("{n} service(s) and {rs} real server(s) exactly as planned");
    if !ka.is_empty() {
        let (in_pool, total) = (a.in_pool, a.total);
        ok = if n == 0 {
            format!(
                "{} keepalived service(s) as configured, {in_pool} of {total} real servers in the pool",
                ka.len()
            )
        } else {
            format!(
                "{ok}; {} keepalived service(s) as configured, {in_pool} of {total} real servers in the pool",
                ka.len()
            )
        };
    }
    c.settle(problems, ok)
}

fn vrrp(cx: &Ctx, inst: &crate::model::VrrpInstance) -> Check {
    let mut c = check(
        format!("vrrp/{}", inst.name),
        "vrrp",
        format!("VRRP instance {}", inst.name),
        "exactly one director holds the instance's VIPs, and the others hear its adverts (so they take over when it fails)",
    );
    if let Some(w) = cx.ev.vrrp_wait.filter(|w| *w >= 0.5) {
        c.evidence
            .push(format!("waited {w:.1} s for VRRP to settle before looking"));
    }
    let mut problems = Vec::new();
    let holder = vip_holder(cx, inst, &mut problems);
    let holder_addr = inst
        .members
        .iter()
        .find(|m| Some(cx.name(m.host)) == holder)
        .map(|m| m.address.to_string());
    for m in &inst.members {
        vrrp_member(cx, inst, m, holder, holder_addr.as_deref(), &mut c, &mut problems);
    }
    let configured = inst.members.iter().max_by_key(|m| m.priority).map(|m| cx.name(m.host));
    if let (Some(h), Some(cfg)) = (holder, configured)
        && h != cfg
    {
        c.evidence.push(format!(
            "held by {h}, not by {cfg} (highest priority){}",
            if inst.nopreempt {
                ": nopreempt keeps it there"
            } else {
                ": the master may be down"
            }
        ));
    }
    c.settle(
        problems,
        format!(
            "{} holds {}; the others hear its adverts",
            holder.unwrap_or("?"),
            inst.vips.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
        ),
    )
}

/// The member holding the instance's VIPs (the first by name when they are
/// spread), with a problem for a VIP held by none or by several (split
/// brain), and for VIPs spread over several members.
fn vip_holder<'a>(cx: &Ctx<'a>, inst: &crate::model::VrrpInstance, problems: &mut Vec<String>) -> Option<&'a str> {
    let mut holders: BTreeSet<&str> = BTreeSet::new();
    for vip in &inst.vips {
        let mut held_by = Vec::new();
        for m in &inst.members {
            let name = cx.name(m.host);
            match cx.before(name, "addr") {
                Err(e) => problems.push(e),
                Ok(o) => {
                    if parse::addresses(&o.out).iter().any(|(_, a, _)| a == vip) {
                        held_by.push(name);
                    }
                }
            }
        }
        match held_by.as_slice() {
            [] => problems.push(format!("no director holds {vip}")),
            [one] => {
                holders.insert(*one);
            }
            many => problems.push(format!("{vip} is held by {} at once (split brain)", many.join(" and "))),
        }
    }
    if holders.len() > 1 {
        problems.push(format!(
            "the instance's VIPs are spread over {}",
            holders.iter().copied().collect::<Vec<_>>().join(", ")
        ));
    }
    holders.iter().next().copied()
}

/// One member's part as evidence: the holder holds the VIPs, every other
/// member must be a BACKUP hearing the holder (`holder_addr`) as its master.
fn vrrp_member(
    cx: &Ctx,
    inst: &crate::model::VrrpInstance,
    m: &crate::model::VrrpMember,
    holder: Option<&str>,
    holder_addr: Option<&str>,
    c: &mut Check,
    problems: &mut Vec<String>,
) {
    let name = cx.name(m.host);
    let role = format!("{name} ({} priority {})", m.state.as_str(), m.priority);
    let data = cx
        .before(name, "vrrp-data")
        .ok()
        .filter(|o| o.rc == 0)
        .map(|o| parse::keepalived_data(&o.out))
        .and_then(|d| d.into_iter().find(|d| d.instance == inst.name));
    let holds = Some(name) == holder;
    match (&data, holds) {
        (Some(d), true) => c
            .evidence
            .push(format!("{role}: holds the VIPs, keepalived state {}", d.state)),
        (None, true) => c.evidence.push(format!("{role}: holds the VIPs")),
        (Some(d), false) => {
            c.evidence.push(format!(
                "{role}: keepalived state {}, hears master {}",
                d.state,
                d.master_router.as_deref().unwrap_or("(none)")
            ));
            if d.state == "MASTER" {
                problems.push(format!("{name} is MASTER too but holds no VIP"));
            } else if let (Some(want), Some(got)) = (holder_addr, &d.master_router)
                && want != got.as_str()
            {
                problems.push(format!(
                    "{name} hears master {got}, not {holder:?} ({want})",
                    holder = holder.unwrap_or("?")
                ));
            }
        }
        (None, false) => {
            let why = cx
                .before(name, "vrrp-data")
                .map(|o| first_line(&o.out).to_string())
                .unwrap_or_else(|e| e);
            c.evidence.push(format!("{role}: no keepalived data ({why})"));
            problems.push(format!("cannot tell whether {name} hears the master's adverts: {why}"));
        }
    }
}

fn director_audit(cx: &Ctx, d: &Host) -> Check {
    let mut c = check(
        format!("audit/{}", d.name),
        "audit",
        format!("Director {}", d.name),
        "the director holds the VIPs it serves (VRRP decides which one in HA labs) and forwards packets in NAT",
    );
    let mut problems = Vec::new();
    let addrs = match cx.before(&d.name, "addr") {
        Ok(o) => parse::addresses(&o.out),
        Err(e) => return c.settle(vec![e], String::new()),
    };
    let sysctls = cx.sysctls(&d.name);
    let mut vips: Vec<Ipv4Addr> = cx.t.services_of_director(d.id).map(|s| s.vip).collect();
    vips.sort();
    vips.dedup();
    for vip in vips {
        let held = addrs.iter().find(|(_, a, _)| *a == vip);
        let vrrp = cx.t.ha.is_some();
        match held {
            Some((iface, _, p)) => c.evidence.push(format!("VIP {vip}/{p} on {iface}")),
            None if vrrp => c
                .evidence
                .push(format!("VIP {vip} not here (VRRP gives it to one director)")),
            None => problems.push(format!("VIP {vip} is not configured on {}", d.name)),
        }
    }
    if cx.t.services_of_director(d.id).any(|s| s.mode == Mode::Nat) {
        let v = sysctls.get("net.ipv4.ip_forward").map(String::as_str).unwrap_or("?");
        c.evidence.push(format!("net.ipv4.ip_forward = {v}"));
        if v != "1" {
            problems.push(format!(
                "net.ipv4.ip_forward = {v} (want 1): NAT replies from real servers are not forwarded to the client"
            ));
        }
    }
    c.settle(problems, "holds its VIPs; forwarding as its mode needs".into())
}

fn real_server_audit(cx: &Ctx, h: &Host) -> Check {
    let mut c = check(
        format!("audit/{}", h.name),
        "audit",
        format!("Real server {}", h.name),
        "the real server is set up for its mode: effective ARP sysctls (max of all and the interface), VIP placement, tunl0 and rp_filter for TUN",
    );
    let addrs = match cx.before(&h.name, "addr") {
        Ok(o) => parse::addresses(&o.out),
        Err(e) => return c.settle(vec![e], String::new()),
    };
    let links = cx.links(&h.name);
    let sysctls = cx.sysctls(&h.name);
    let mut problems = Vec::new();
    let services: Vec<&Service> = cx.t.services_of_real_server(h.id).collect();
    let modes: BTreeSet<Mode> = services.iter().map(|s| s.mode).collect();
    let vips = |m: Mode| -> BTreeSet<Ipv4Addr> { services.iter().filter(|s| s.mode == m).map(|s| s.vip).collect() };
    let has = |iface: &str, vip: Ipv4Addr| addrs.iter().any(|(i, a, p)| i == iface && *a == vip && *p == 32);
    if modes.contains(&Mode::Dr) || modes.contains(&Mode::Tun) {
        for i in &h.interfaces {
            let ign = parse::effective(&sysctls, "arp_ignore", &i.name);
            let ann = parse::effective(&sysctls, "arp_announce", &i.name);
            c.evidence.push(format!(
                "{}: effective arp_ignore {}, arp_announce {}",
                i.name,
                ign.map_or("?".into(), |v| v.to_string()),
                ann.map_or("?".into(), |v| v.to_string())
            ));
            if !matches!(ign, Some(1 | 2)) {
                problems.push(format!(
                    "arp_ignore on {} is effectively {} (want 1): {} answers ARP for the VIP it holds",
                    i.name,
                    ign.map_or("unknown".into(), |v| v.to_string()),
                    h.name
                ));
            }
            if ann != Some(2) {
                problems.push(format!(
                    "arp_announce on {} is effectively {} (want 2): the VIP may be announced as the source of ARP requests",
                    i.name,
                    ann.map_or("unknown".into(), |v| v.to_string())
                ));
            }
        }
    }
    for vip in vips(Mode::Dr) {
        if has("lo", vip) {
            c.evidence.push(format!("VIP {vip}/32 on lo"));
        } else {
            problems.push(format!(
                "VIP {vip}/32 is not on lo: forwarded packets for the VIP are dropped"
            ));
        }
    }
    if modes.contains(&Mode::Tun) {
        match links.iter().find(|l| l.name == "tunl0") {
            Some(l) if l.up => c.evidence.push("tunl0 up".into()),
            Some(_) => problems.push("tunl0 is down: tunnelled requests are not decapsulated".into()),
            None => problems.push("there is no tunl0 (ipip module not loaded?)".into()),
        }
        let rp = parse::effective(&sysctls, "rp_filter", "tunl0");
        c.evidence.push(format!(
            "tunl0: effective rp_filter {}",
            rp.map_or("?".into(), |v| v.to_string())
        ));
        if !matches!(rp, Some(0 | 2)) {
            problems.push(format!(
                "rp_filter on tunl0 is effectively {} (want 0): decapsulated requests from the client are dropped",
                rp.map_or("unknown".into(), |v| v.to_string())
            ));
        }
        for vip in vips(Mode::Tun) {
            if has("tunl0", vip) {
                c.evidence.push(format!("VIP {vip}/32 on tunl0"));
            } else {
                problems.push(format!("VIP {vip}/32 is not on tunl0"));
            }
        }
    }
    for vip in vips(Mode::Nat) {
        if let Some((i, _, _)) = addrs.iter().find(|(_, a, _)| *a == vip) {
            problems.push(format!(
                "holds the NAT VIP {vip} on {i}: it would answer for the director"
            ));
        } else {
            c.evidence.push(format!("NAT: VIP {vip} not held here (correct)"));
        }
    }
    c.settle(
        problems,
        format!(
            "set up for {}",
            modes.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
        ),
    )
}

fn health(cx: &Ctx, s: &Service) -> Check {
    let c = check(
        format!("health/{}", s.name),
        "health",
        format!("Real servers of {} answer on their own addresses", s.name),
        "each real server's web server answers the director directly, which is what health checks see",
    );
    if super::probe::http(s).is_none() {
        return c.skip("not checked: UDP real servers are seen through the VIP only (distribution)");
    }
    let mut c = c;
    let mut problems = Vec::new();
    for d in &s.directors {
        let dn = cx.name(*d);
        for rs in &s.real_servers {
            let host = cx.t.host(rs.host);
            let port = real_port(s, rs.port);
            let target = format!("{dn} → {} {}:{port}", host.name, rs.address);
            match cx.before(dn, &format!("health:{}:{}", s.name, host.name)) {
                Err(e) => problems.push(e),
                Ok(o) if o.rc == 127 => {
                    c.evidence.push(format!("{target}: curl exit 127 (no curl on {dn})"));
                    problems.push(format!(
                        "cannot ask {} from {dn}: curl is not installed on {dn} (install it, or set `packages: true`)",
                        host.name
                    ));
                }
                Ok(o) if o.rc != 0 => {
                    let e = super::probe::curl_error(&o.rc.to_string());
                    c.evidence.push(format!("{target}: {e}"));
                    problems.push(format!("{} does not answer on {}:{port} ({e})", host.name, rs.address));
                }
                Ok(o) => {
                    let want = host.page.as_deref().unwrap_or("").trim_end();
                    if o.out.trim_end() == want {
                        c.evidence.push(format!("{target}: its own page"));
                    } else {
                        c.evidence.push(format!("{target}: {}", short(&o.out, 60)));
                        problems.push(format!(
                            "{} answers on {}:{port}, but not with its own page",
                            host.name, rs.address
                        ));
                    }
                }
            }
        }
    }
    c.settle(
        problems,
        format!("{} real server(s) answer with their own page", s.real_servers.len()),
    )
}

fn distribution(cx: &Ctx, s: &Service) -> Check {
    let c = check(
        format!("distribution/{}", s.name),
        "distribution",
        format!("Reachability and distribution of {}", s.name),
        "every request through the VIP is answered by a real server, and the shares follow the scheduler and weights",
    );
    if cx.t.verify.client.is_none() {
        return c.skip("not checked: the lab has no client host");
    }
    let Some(u) = url(s) else {
        return c.skip("not checked: verify sends no traffic to a non-TCP firewall-mark service");
    };
    let Some(tr) = cx.ev.traffic.get(&s.name) else {
        let client = cx.name(cx.t.verify.client.unwrap_or(crate::model::HostId(0)));
        let why = cx
            .ev
            .unreachable
            .get(client)
            .cloned()
            .unwrap_or_else(|| "no traffic was recorded".into());
        return c.settle(vec![format!("no requests were sent to {u}: {why}")], String::new());
    };
    let mut c = c;
    let mut problems = Vec::new();
    let answered_total: u32 = tr.answers.values().sum();
    let failed_total: u32 = tr.failures.values().sum();
    c.evidence.push(format!(
        "{} requests to {}: {answered_total} answered, {failed_total} failed",
        tr.sent, tr.url
    ));
    c.evidence.push(format!("expected: {}", expect_words(s)));
    let per_host = answers_per_host(cx, s, tr, &mut c.evidence, &mut problems);
    if failed_total > 0 {
        let what: Vec<String> = tr.failures.iter().map(|(k, n)| format!("{n}× {k}")).collect();
        problems.push(format!(
            "{failed_total} of {} requests failed ({})",
            tr.sent,
            what.join(", ")
        ));
    }
    let judge = ShareJudge::new(cx, s, tr, answered_total, &mut c.evidence);
    let mut counted_short = false;
    for (ri, rs) in s.real_servers.iter().enumerate() {
        let answered = per_host.get(cx.name(rs.host)).copied().unwrap_or(0);
        let (share, short) = judge.judge(cx, s, ri, rs, answered, &mut problems);
        counted_short |= short;
        c.shares.push(share);
    }
    if counted_short {
        c.evidence.extend(counter_lines(cx.t, cx.ev, s));
    }
    pattern_problems(cx, s, &per_host, answered_total, judge.active, &mut problems);
    let summary: Vec<String> = c
        .shares
        .iter()
        .map(|sh| format!("{} {}", sh.host, sh.answered))
        .collect();
    c.settle(
        problems,
        format!("{answered_total}/{} answered: {}", tr.sent, summary.join(", ")),
    )
}

/// Whose page is each answer: the answers per real server (by host name);
/// answers that are no real server's page are shown in `evidence` and
/// counted as one problem.
fn answers_per_host<'a>(
    cx: &Ctx<'a>,
    s: &Service,
    tr: &super::Traffic,
    evidence: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> BTreeMap<&'a str, u32> {
    let mut per_host: BTreeMap<&str, u32> = BTreeMap::new();
    let mut unknown = 0;
    for (body, n) in &tr.answers {
        let owner = s.real_servers.iter().map(|r| cx.t.host(r.host)).find(|h| match s.key {
            // The UDP responders answer with their host's name.
            ServiceKey::Udp(_) => h.name == *body,
            _ => h.page.as_deref().map(str::trim_end) == Some(body.as_str()),
        });
        match owner {
            Some(h) => *per_host.entry(h.name.as_str()).or_default() += n,
            None => {
                unknown += n;
                evidence.push(format!("{n}× not a real server's page: {}", short(body, 60)));
            }
        }
    }
    if unknown > 0 {
        problems.push(format!("{unknown} answer(s) were not a real server's page"));
    }
    per_host
}

/// What each real server's answers are held against: the scheduler's
/// expectation, the weights, lc/wlc's counts and IPVS's own connection counts.
struct ShareJudge {
    exp: Expect,
    answered_total: u32,
    weight_sum: u32,
    /// Real servers with weight > 0.
    active: f64,
    /// lc/wlc: the requests each real server should answer, and the deviation allowed.
    least: Option<(Vec<f64>, f64)>,
    /// IPVS's new connections per destination (`address:port`), when read.
    conns: Option<BTreeMap<String, u64>>,
    /// How far IPVS's count may differ from the answers.
    slack: u64,
}

impl ShareJudge {
    /// Reads what the judgement needs for `s`'s traffic, saying in `evidence`
    /// how the IPVS counters and (lc/wlc) the connection counts are used.
    fn new(cx: &Ctx, s: &Service, tr: &super::Traffic, answered_total: u32, evidence: &mut Vec<String>) -> Self {
        // IPVS's own count of new connections per real server.
        let conns = match cx.service_delta(s) {
            Ok((_, dests)) => Some(dests),
            Err(e) => {
                evidence.push(format!("no IPVS counters: {e}"));
                None
            }
        };
        let slack = slack(tr.sent);
        if conns.is_some() {
            evidence.push(format!(
                "cross-check: each real server's answers equal its new IPVS connections (±{slack}, for reused connection entries)"
            ));
        }
        let exp = expect(s);
        // lc/wlc: the requests each real server should get, from the
        // connections the directors held before the traffic.
        let least = (exp == Expect::LeastConnections)
            .then(|| least_connection_expectation(cx, s, answered_total, evidence))
            .flatten();
        ShareJudge {
            exp,
            answered_total,
            weight_sum: s.real_servers.iter().map(|r| r.weight).sum(),
            active: s.real_servers.iter().filter(|r| r.weight > 0).count() as f64,
            least,
            conns,
            slack,
        }
    }

    /// The fraction of the answers real server `ri` should get, when the scheduler fixes one.
    fn expected(&self, ri: usize, rs: &crate::model::RealServer) -> Option<f64> {
        match self.exp {
            Expect::Equal if rs.weight > 0 => Some(1.0 / self.active),
            Expect::Weighted if self.weight_sum > 0 => Some(f64::from(rs.weight) / f64::from(self.weight_sum)),
            Expect::Equal | Expect::Weighted => Some(0.0),
            Expect::LeastConnections if self.answered_total > 0 => self
                .least
                .as_ref()
                .map(|(counts, _)| counts[ri] / f64::from(self.answered_total)),
            _ => None,
        }
    }

    /// Real server `ri`'s share, with a problem for each way its `answered`
    /// requests miss what it should get; and whether it answered more than
    /// IPVS counted (traffic that bypassed IPVS).
    fn judge(
        &self,
        cx: &Ctx,
        s: &Service,
        ri: usize,
        rs: &crate::model::RealServer,
        answered: u32,
        problems: &mut Vec<String>,
    ) -> (Share, bool) {
        let name = cx.name(rs.host);
        let expected = self.expected(ri, rs);
        if let Some((counts, allowed)) = &self.least
            && (f64::from(answered) - counts[ri]).abs() > *allowed
        {
            problems.push(format!(
                "{name} answered {answered} request(s) (want {:.0} ±{allowed:.0}: {} sends each to the least connected real server)",
                counts[ri],
                s.scheduler.as_str()
            ));
        }
        let ipvs_conns = self
            .conns
            .as_ref()
            .map(|m| m.get(&format!("{}:{}", rs.address, rs.port)).copied().unwrap_or(0));
        if rs.weight == 0 && answered > 0 {
            problems.push(format!("{name} has weight 0 but answered {answered} request(s)"));
        }
        if rs.weight > 0 && answered == 0 && matches!(self.exp, Expect::Equal | Expect::Weighted) {
            problems.push(format!("{name} (weight {}) answered no request", rs.weight));
        } else if let (Some(e), true) = (expected, self.answered_total > 0 && self.least.is_none()) {
            let share = f64::from(answered) / f64::from(self.answered_total);
            if (share - e).abs() > cx.t.verify.tolerance + 1e-9 {
                problems.push(format!(
                    "{name} answered {:.0}% (want {:.0}% ±{:.0}%)",
                    share * 100.0,
                    e * 100.0,
                    cx.t.verify.tolerance * 100.0
                ));
            }
        }
        let mut counted_short = false;
        if let Some(n) = ipvs_conns {
            let a = u64::from(answered);
            if n > a + self.slack {
                problems.push(format!(
                    "IPVS sent {name} {n} connection(s) but only {answered} got its page"
                ));
            } else if n + self.slack < a {
                problems.push(format!(
                    "{name} answered {answered} request(s) but IPVS counted {n} connection(s) to it: traffic bypassed IPVS"
                ));
                counted_short = true;
            }
        }
        let share = Share {
            host: name.to_string(),
            weight: rs.weight,
            answered,
            expected,
            ipvs_conns,
        };
        (share, counted_short)
    }
}

/// Problems with which real servers answered at all, as the scheduler's
/// pattern wants it: a port-hashing scheduler spreads, a sticky or
/// single-target one does not, and fo/ovf pick the highest weight.
fn pattern_problems(
    cx: &Ctx,
    s: &Service,
    per_host: &BTreeMap<&str, u32>,
    answered_total: u32,
    active: f64,
    problems: &mut Vec<String>,
) {
    let exp = expect(s);
    if exp == Expect::PortHashed && per_host.len() == 1 && answered_total >= 6 && active >= 2.0 {
        problems.push(format!(
            "all {answered_total} answers came from one real server, but {} hashes the source port too",
            s.scheduler.as_str()
        ));
    }
    if matches!(exp, Expect::Sticky | Expect::Single) && per_host.len() > 1 {
        problems.push(format!(
            "{} real servers answered; {} sends one client's sequential requests to one",
            per_host.len(),
            s.scheduler.as_str()
        ));
    }
    if exp == Expect::Single
        && matches!(s.scheduler, Scheduler::Fo | Scheduler::Ovf)
        && let Some(top) = s.real_servers.iter().map(|r| r.weight).max()
        && let Some((h, _)) = per_host.iter().next()
        && let Some(rs) = s.real_servers.iter().find(|r| cx.name(r.host) == *h)
        && rs.weight < top
    {
        problems.push(format!(
            "{h} took the requests, but {} picks the highest weight ({top})",
            s.scheduler.as_str()
        ));
    }
}

/// lc/wlc: the requests each real server (in service order) should answer,
/// and the deviation allowed, from the connections its directors held before
/// the traffic (and after it, for the entries of earlier traffic that expired
/// meanwhile). `None` (said in `evidence`) when the counts were not read.
fn least_connection_expectation(
    cx: &Ctx,
    s: &Service,
    answered: u32,
    evidence: &mut Vec<String>,
) -> Option<(Vec<f64>, f64)> {
    let key = stats_key(s);
    let read = |round: &BTreeMap<String, BTreeMap<String, Out>>| -> Option<BTreeMap<String, (u64, u64)>> {
        let mut sum: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for d in &s.directors {
            let out = round_probe(cx.ev, round, &cx.t.host(*d).name, "ipvs-conns").ok()?;
            if let Some(svc) = parse::conns(&out.out).into_iter().find(|c| c.key == key) {
                for (dest, (a, i)) in svc.dests {
                    let e = sum.entry(dest).or_default();
                    e.0 += a;
                    e.1 += i;
                }
            }
        }
        Some(sum)
    };
    let Some(before) = read(&cx.ev.before) else {
        evidence.push(format!(
            "shares not judged: the connection counts before the traffic were not read ({} decides by them)",
            s.scheduler.as_str()
        ));
        return None;
    };
    let dest = |rs: &crate::model::RealServer| format!("{}:{}", rs.address, rs.port);
    let loads: Vec<(u32, u64)> = s
        .real_servers
        .iter()
        .map(|rs| {
            let (a, i) = before.get(&dest(rs)).copied().unwrap_or_default();
            let weight = match (s.scheduler, rs.weight) {
                (_, 0) => 0,
                (Scheduler::Lc, _) => 1,
                (_, w) => w,
            };
            (weight, a * 256 + i)
        })
        .collect();
    let counts = least_connections(&loads, answered);
    let total = |m: &BTreeMap<String, (u64, u64)>| -> u64 { m.values().map(|(a, i)| a + i).sum() };
    // Earlier traffic's entries that expired during the measurement shift
    // requests towards their real servers: allowed, one request each.
    let expired = read(&cx.ev.after).map_or(0, |after| {
        (total(&before) + u64::from(answered)).saturating_sub(total(&after))
    });
    let allowed = (cx.t.verify.tolerance * f64::from(answered)).ceil().max(2.0) + expired as f64;
    let shown: Vec<String> = s
        .real_servers
        .iter()
        .zip(&counts)
        .map(|(rs, c)| {
            let (a, i) = before.get(&dest(rs)).copied().unwrap_or_default();
            format!("{} {a}+{i} → {c:.0}", cx.name(rs.host))
        })
        .collect();
    evidence.push(format!(
        "connections before the traffic (active+inactive) → requests each should get: {}{}",
        shown.join(", "),
        if expired > 0 {
            format!("; {expired} earlier connection(s) expired meanwhile")
        } else {
            String::new()
        }
    ));
    Some((counts, allowed))
}

/// What least-connection scheduling gives `n` sequential requests (each one
/// finished before the next: it leaves one inactive connection behind) over
/// real servers with these (weight, overhead) where overhead is ActiveConn ×
/// 256 + InActConn: each request goes to the lowest overhead per weight, so
/// the loads are filled up to one level T (water-filling), and a real server
/// gets `max(0, T × weight − overhead)`. Weight 0 gets none.
pub fn least_connections(loads: &[(u32, u64)], n: u32) -> Vec<f64> {
    let given = |t: f64| -> f64 {
        loads
            .iter()
            .filter(|(w, _)| *w > 0)
            .map(|(w, o)| (t * f64::from(*w) - *o as f64).max(0.0))
            .sum()
    };
    if n == 0 || !loads.iter().any(|(w, _)| *w > 0) {
        return vec![0.0; loads.len()];
    }
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    while given(hi) < f64::from(n) {
        hi *= 2.0;
    }
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if given(mid) < f64::from(n) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    loads
        .iter()
        .map(|(w, o)| {
            if *w == 0 {
                0.0
            } else {
                (hi * f64::from(*w) - *o as f64).max(0.0)
            }
        })
        .collect()
}

fn stickiness(cx: &Ctx, s: &Service) -> Check {
    let c = check(
        format!("stickiness/{}", s.name),
        "stickiness",
        format!("Stickiness of {}", s.name),
        "all requests from one client land on one real server (persistence or source hashing)",
    );
    let Some(tr) = cx.ev.traffic.get(&s.name) else {
        return if url(s).is_none() || cx.t.verify.client.is_none() {
            c.skip("not checked: no traffic can be sent to this service")
        } else {
            c.settle(vec!["no requests were recorded".into()], String::new())
        };
    };
    let mut owners: BTreeMap<&str, u32> = BTreeMap::new();
    for (body, n) in &tr.answers {
        let owner = s
            .real_servers
            .iter()
            .map(|r| cx.t.host(r.host))
            .find(|h| h.page.as_deref().map(str::trim_end) == Some(body.as_str()))
            .map_or("(unknown)", |h| h.name.as_str());
        *owners.entry(owner).or_default() += n;
    }
    let mut c = c;
    c.evidence = owners.iter().map(|(h, n)| format!("{h}: {n}")).collect();
    let problems = match owners.len() {
        0 => vec!["no request was answered".to_string()],
        1 => vec![],
        n => vec![format!("the client's requests were spread over {n} real servers")],
    };
    let who = owners.keys().next().copied().unwrap_or("");
    c.settle(problems, format!("all answered requests went to {who}"))
}

fn path(cx: &Ctx, s: &Service) -> Check {
    let proves = match s.mode {
        Mode::Nat => {
            "replies pass back through the director (its OutPkts grow) and every real server routes the client via the director"
        }
        Mode::Dr | Mode::Tun => {
            "requests enter through the director but replies go straight to the client (the director's OutPkts do not grow)"
        }
    };
    let c = check(
        format!("path/{}", s.name),
        "path",
        format!("Packet path of {} ({})", s.name, s.mode.as_str()),
        proves,
    );
    if url(s).is_none() || cx.t.verify.client.is_none() {
        return c.skip("not checked: verify sends no traffic to this service (UDP, or no client)");
    }
    if !cx.ev.traffic.contains_key(&s.name) {
        return c.settle(vec!["no requests were recorded for this service".into()], String::new());
    }
    let mut c = c;
    let mut problems = Vec::new();
    match cx.service_delta(s) {
        Err(e) => problems.push(e),
        Ok((d, _)) => {
            c.evidence.push(format!(
                "director counters for {}: InPkts +{}, OutPkts +{}",
                stats_key(s),
                d.in_pkts,
                d.out_pkts
            ));
            if d.in_pkts == 0 {
                problems.push("no request packet went through the director".into());
                c.evidence.extend(counter_lines(cx.t, cx.ev, s));
            }
            match s.mode {
                Mode::Nat if d.out_pkts == 0 => problems.push(
                    "no reply passed back through the director: in NAT the director must rewrite every reply".into(),
                ),
                Mode::Dr | Mode::Tun if d.out_pkts > 0 => problems.push(format!(
                    "{} reply packet(s) went back through the director: replies must go straight to the client",
                    d.out_pkts
                )),
                _ => {}
            }
        }
    }
    if s.mode == Mode::Nat {
        let client = cx.t.verify.client.and_then(|c| cx.t.host(c).primary_address());
        for rs in &s.real_servers {
            let h = cx.t.host(rs.host);
            let allowed = nat_gateways(cx.t, s, h);
            match cx.before(&h.name, "route") {
                Err(e) => problems.push(e),
                Ok(o) => {
                    let line = first_line(&o.out);
                    c.evidence.push(format!(
                        "{}: ip route get {} → {line}",
                        h.name,
                        client.map_or("?".into(), |a| a.to_string())
                    ));
                    match parse::route_via(&o.out) {
                        _ if o.rc != 0 => problems.push(format!(
                            "{} has no route back to the client ({line}): NAT replies cannot leave",
                            h.name
                        )),
                        Some(via) if allowed.contains(&via) => {}
                        Some(via) => problems.push(format!(
                            "{} routes replies to the client via {via}, not via the director ({})",
                            h.name,
                            allowed.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(" or ")
                        )),
                        None => problems.push(format!(
                            "{} reaches the client directly, so replies bypass the director and come from the wrong address",
                            h.name
                        )),
                    }
                }
            }
        }
    }
    let ok = match s.mode {
        Mode::Nat => "replies pass through the director".to_string(),
        _ => "replies bypass the director".to_string(),
    };
    c.settle(problems, ok)
}

/// The addresses a NAT real server may use as its way back to the client:
/// its directors' addresses on its networks, and HA virtual addresses there.
fn nat_gateways(t: &Topology, s: &Service, rs: &Host) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    for i in &rs.interfaces {
        for d in &s.directors {
            if let Some(di) = t.host(*d).interface_on(i.network) {
                out.insert(di.address);
            }
        }
        if let Some(ha) = &t.ha {
            let net = t.network(i.network);
            for inst in &ha.instances {
                out.extend(inst.vips.iter().filter(|v| net.cidr.contains(**v)));
            }
        }
    }
    out
}

fn arp(cx: &Ctx, s: &Service) -> Check {
    let c = check(
        format!("arp/{}", s.name),
        "arp",
        format!("ARP ownership of {} ({})", s.vip, s.name),
        "on the VIP's network only the active director answers ARP for the VIP, so requests reach the director, never a real server directly",
    );
    let Some((prober, iface)) = arp_prober(cx.t, s) else {
        return c.skip("not checked: no host besides directors and real servers on the VIP's network to ask");
    };
    let pn = cx.name(prober);
    let mut c = c;
    let mut problems = Vec::new();
    let owners = cx.mac_owners();
    let holders = cx.vip_holders(s);
    let expected: BTreeSet<String> = holders.iter().filter_map(|(_, m)| m.clone()).collect();
    let who = |mac: &str| owners.get(mac).cloned().unwrap_or_else(|| "an unknown host".into());
    match holders.as_slice() {
        [] => problems.push(format!("no director holds the VIP {}", s.vip)),
        hs => {
            for (h, m) in hs {
                c.evidence
                    .push(format!("{h} holds {} (MAC {})", s.vip, m.as_deref().unwrap_or("?")));
            }
        }
    }
    match cx.after(pn, &format!("neigh:{}", s.vip)) {
        Err(e) => problems.push(e),
        Ok(o) => {
            let line = first_line(&o.out);
            c.evidence.push(format!(
                "{pn}: ip neigh show {} → {}",
                s.vip,
                if line.is_empty() { "(none)" } else { line }
            ));
            match parse::neighbour_mac(&o.out) {
                None => problems.push(format!("{pn} has no usable neighbour entry for the VIP on {iface}")),
                Some(m) if expected.contains(&m) => {}
                Some(m) => problems.push(format!(
                    "{pn} sends traffic for the VIP to {m}, which is {}, not the director",
                    who(&m)
                )),
            }
        }
    }
    match cx.after(pn, &format!("arping:{}", s.vip)) {
        Err(e) => problems.push(e),
        Ok(o) if o.rc == 127 => c
            .evidence
            .push(format!("{pn}: no arping, only the neighbour entry was checked")),
        Ok(o) => {
            let macs = parse::arping_macs(&o.out);
            c.evidence.push(format!(
                "{pn}: arping {} → {}",
                s.vip,
                if macs.is_empty() {
                    "no reply".to_string()
                } else {
                    macs.iter()
                        .map(|m| format!("{m} ({})", who(m)))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
            for m in macs.iter().filter(|m| !expected.contains(*m)) {
                problems.push(format!("{} ({m}) answers ARP for the VIP", who(m)));
            }
        }
    }
    c.settle(
        problems,
        format!(
            "only {} answers for {}",
            holders.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>().join(", "),
            s.vip
        ),
    )
}

fn user_check(cx: &Ctx, u: &UserCheck) -> Check {
    let mut c = check(
        format!("check/{}", u.name),
        "check",
        u.name.clone(),
        u.description.as_deref().unwrap_or("a check the topology declares"),
    );
    let host = cx.name(u.host);
    let mut want = format!("exit {}", u.status);
    if let Some(r) = &u.output {
        want.push_str(&format!(" and output matching /{}/", r.as_str()));
    }
    c.evidence.push(format!("{host}: {}", short(&u.run, 100)));
    c.evidence.push(format!("want: {want}"));
    let Some(run) = cx.ev.custom.iter().find(|r| r.name == u.name) else {
        return c.settle(vec!["it did not run".into()], String::new());
    };
    if let Some(e) = &run.error {
        return c.settle(vec![format!("{host} could not be reached: {e}")], String::new());
    }
    let Some(last) = &run.last else {
        return c.settle(vec!["it did not run".into()], String::new());
    };
    c.evidence.push(format!(
        "got: exit {} after {} tr{} ({:.1} s)",
        last.rc,
        run.tries,
        if run.tries == 1 { "y" } else { "ies" },
        run.seconds
    ));
    for l in last.out.lines().take(10) {
        c.evidence.push(format!("| {l}"));
    }
    let mut problems = Vec::new();
    if last.rc != u.status {
        problems.push(format!("exit {} (want {})", last.rc, u.status));
    }
    if let Some(r) = &u.output
        && !r.is_match(&last.out)
    {
        problems.push(format!("output does not match /{}/", r.as_str()));
    }
    let prefix = u.description.clone().map(|d| format!("{d}: ")).unwrap_or_default();
    if !problems.is_empty() {
        problems[0] = format!("{prefix}{}", problems[0]);
    }
    c.settle(problems, format!("{prefix}{want}"))
}

#[cfg(test)]
mod tests {
    use super::least_connections;

    fn round(v: Vec<f64>) -> Vec<i64> {
        v.into_iter().map(|x| x.round() as i64).collect()
    }

    /// Issue 15, defect 3: lc/wlc after earlier traffic. The requests follow
    /// the connections already there, so a real server may rightly get none.
    #[test]
    fn least_connections_fill_up_to_one_level() {
        // A fresh lab: shares follow the weights.
        assert_eq!(round(least_connections(&[(1, 0), (2, 0)], 60)), [20, 40]);
        // After 60 wrr requests (20/40 inactive) the loads are level already.
        assert_eq!(round(least_connections(&[(1, 20), (2, 40)], 60)), [20, 40]);
        // A real server added next to loaded ones takes the first requests.
        assert_eq!(round(least_connections(&[(1, 20), (2, 40), (1, 0)], 60)), [10, 20, 30]);
        assert_eq!(round(least_connections(&[(1, 20), (1, 0)], 12)), [0, 12]);
        // Active connections weigh 256 each; weight 0 gets nothing.
        assert_eq!(round(least_connections(&[(1, 256), (1, 0), (0, 0)], 10)), [0, 10, 0]);
        assert_eq!(round(least_connections(&[(0, 0)], 10)), [0]);
    }
}
