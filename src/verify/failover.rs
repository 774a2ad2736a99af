//! `verify --failover`: the disruptive HA checks. Each breaks something on
//! purpose, measures how the lab copes, and puts it back with the plan's own
//! commands:
//!
//! - `failover/INSTANCE`: the client requests the VIP every 100 ms while
//!   keepalived is stopped on the director holding it; the VIP must move to
//!   another member and requests succeed again. Reports the longest time
//!   without a successful answer (the gap), failed requests, how long the VIP
//!   took to move, and whether it came back when keepalived was restarted.
//! - `healthcheck/SERVICE`: one real server's web server is stopped; keepalived
//!   must take it out of the pool (or to weight 0), no request may reach it,
//!   and it must return once restarted. Reports both times.
//! - `sorry/SERVICE`: every real server's web server is stopped; the sorry
//!   server must enter the table and answer the client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::gather::{parse_traffic, traffic_script};
use super::probe::http;
use super::{Check, parse};
use crate::exec::transport::Transport;
use crate::model::{HostId, Service, Topology, VrrpInstance};
use crate::plan::{Plan, Resource};

type Conns = BTreeMap<String, Arc<dyn Transport>>;

struct Cx<'a> {
    t: &'a Topology,
    plan: &'a Plan,
    conns: &'a Conns,
}

fn check(id: String, kind: &'static str, title: String, proves: &str) -> Check {
    Check::new(id, kind, title, proves)
}

fn settle(c: Check, problems: Vec<String>, ok: String) -> Check {
    c.settle(problems, ok)
}

fn skip(c: Check, why: &str) -> Check {
    c.skip(why)
}

/// One client request: when (seconds on the client's clock) and whether it was answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    pub at: f64,
    pub ok: bool,
}

/// The client's request loop: a request every `interval_ms` for `seconds`,
/// one line per request: `UPTIME HTTP_CODE`. A service with several URLs
/// (a firewall mark) is asked on its first.
pub fn probe_loop_script(url: &str, seconds: u32, interval_ms: u32) -> String {
    let url = url.split_whitespace().next().unwrap_or(url);
    let k = if url.starts_with("https://") { " -k" } else { "" };
    format!(
        "set +e\nread s _ < /proc/uptime; s=${{s%.*}}; end=$((s + {seconds}))\n\
         while :; do\n  read t _ < /proc/uptime\n  [ \"${{t%.*}}\" -ge \"$end\" ] && break\n  \
         c=$(curl -s{k} --connect-timeout 1 -m 1 -o /dev/null -w '%{{http_code}}' {u})\n  echo \"$t ${{c:-000}}\"\n  sleep {secs}\ndone",
        u = crate::shell::quote(url),
        secs = f64::from(interval_ms) / 1000.0
    )
}

pub fn parse_probes(out: &str) -> Vec<Probe> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let at = w.next()?.parse().ok()?;
            Some(Probe {
                at,
                ok: w.next()? == "200",
            })
        })
        .collect()
}

/// What a failover looked like from the client.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gap {
    /// The longest time between two consecutive answered requests, in seconds.
    pub longest: f64,
    pub failed: usize,
    pub sent: usize,
    /// Requests were answered again after the last failure.
    pub recovered: bool,
    /// The mean time between requests actually achieved, in seconds.
    pub every: f64,
}

pub fn gap(probes: &[Probe]) -> Gap {
    let mut longest: f64 = 0.0;
    let mut last_ok: Option<f64> = None;
    for p in probes.iter().filter(|p| p.ok) {
        if let Some(l) = last_ok {
            longest = longest.max(p.at - l);
        }
        last_ok = Some(p.at);
    }
    let last_fail = probes.iter().rposition(|p| !p.ok);
    let recovered = match last_fail {
        None => true,
        Some(i) => probes[i + 1..].iter().any(|p| p.ok),
    };
    let every = match (probes.first(), probes.last()) {
        (Some(a), Some(b)) if probes.len() > 1 => (b.at - a.at) / (probes.len() - 1) as f64,
        _ => 0.0,
    };
    Gap {
        longest,
        failed: probes.iter().filter(|p| !p.ok).count(),
        sent: probes.len(),
        recovered,
        every,
    }
}

impl Cx<'_> {
    fn conn(&self, host: &str) -> Result<&Arc<dyn Transport>, String> {
        self.conns.get(host).ok_or_else(|| format!("{host} is not reachable"))
    }

    async fn run(&self, host: &str, script: &str) -> Result<crate::exec::transport::CmdOutput, String> {
        self.conn(host)?.run(script).await.map_err(|e| e.to_string())
    }

    /// The plan's commands to stop (`revert`) and start (`apply`) a service on a host.
    fn service_cmds(&self, host: &str, pred: impl Fn(&str) -> bool) -> Option<(String, String)> {
        self.plan
            .phases
            .iter()
            .flat_map(|p| &p.hosts)
            .filter(|h| h.host == host)
            .flat_map(|h| &h.steps)
            .find(|s| matches!(&s.resource, Resource::Service { name, .. } if pred(name)))
            .map(|s| (s.revert.join("\n"), s.apply.join("\n")))
    }

    async fn holder(&self, inst: &VrrpInstance) -> Option<HostId> {
        let vip = *inst.vips.first()?;
        for m in &inst.members {
            let name = &self.t.host(m.host).name;
            if let Ok(o) = self.run(name, "ip -o -4 addr").await
                && parse::addresses(&o.stdout).iter().any(|(_, a, _)| *a == vip)
            {
                return Some(m.host);
            }
        }
        None
    }

    /// Poll `script` on `host` every half second until `pred` holds; the time it took.
    async fn wait_for(
        &self,
        host: &str,
        script: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if let Ok(o) = self.run(host, script).await
                && pred(&o.stdout)
            {
                return Some(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The director that holds a service's VIP (the first director if none does).
    async fn active_director(&self, s: &Service) -> String {
        for d in &s.directors {
            let name = &self.t.host(*d).name;
            if let Ok(o) = self.run(name, "ip -o -4 addr").await
                && parse::addresses(&o.stdout).iter().any(|(_, a, _)| *a == s.vip)
            {
                return name.clone();
            }
        }
        s.directors
            .first()
            .map(|d| self.t.host(*d).name.clone())
            .unwrap_or_default()
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Run every disruptive check the topology allows.
pub async fn run(t: &Topology, plan: &Plan, conns: &Conns) -> Vec<Check> {
    let cx = Cx { t, plan, conns };
    let mut out = Vec::new();
    if let Some(ha) = &t.ha {
        for inst in &ha.instances {
            out.push(failover(&cx, inst).await);
        }
    }
    for s in t.services.iter().filter(|s| s.keepalived) {
        if s.health_check.is_some() {
            out.push(health_check(&cx, s).await);
        }
        if s.sorry_server.is_some() {
            out.push(sorry(&cx, s).await);
        }
    }
    out
}

async fn failover(cx: &Cx<'_>, inst: &VrrpInstance) -> Check {
    let c = check(
        format!("failover/{}", inst.name),
        "failover",
        format!("Failover of VRRP instance {}", inst.name),
        "when the director holding the VIP fails, another takes it over and clients are answered again within a few adverts",
    );
    let target = match failover_target(cx.t, inst) {
        Ok(target) => target,
        Err(why) => return skip(c, &why),
    };
    let mut c = c;
    let mut problems = Vec::new();
    let Some(master) = cx.holder(inst).await else {
        return settle(c, vec!["no member holds the VIP before the test".into()], String::new());
    };
    let master_name = cx.t.host(master).name.clone();
    let Some((stop, start)) = cx.service_cmds(&master_name, |n| n == "keepalived") else {
        return settle(
            c,
            vec![format!("{master_name} has no keepalived step in the plan")],
            String::new(),
        );
    };
    let advert = inst.advert_int.max(1);
    let window = 2 + 3 * advert + 8;
    // The client starts asking; two seconds later keepalived stops on the master.
    let client_conn = match cx.conn(&target.client) {
        Ok(cc) => Arc::clone(cc),
        Err(e) => return settle(c, vec![e], String::new()),
    };
    let script = probe_loop_script(&target.url, window, 100);
    let probes = tokio::spawn(async move { client_conn.run(&script).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped_at = Instant::now();
    if let Err(e) = cx.run(&master_name, &stop).await {
        problems.push(format!("stopping keepalived on {master_name}: {e}"));
    }
    c.evidence.push(format!(
        "stopped keepalived on {master_name}, which held {}",
        target.vip
    ));
    let moved = watch_takeover(cx, inst, master, stopped_at, window).await;
    match &moved {
        Some((h, d)) => c
            .evidence
            .push(format!("{h} took over {} after {}", target.vip, secs(*d))),
        None => problems.push(format!("no other member took over {} within {window} s", target.vip)),
    }
    check_sync_peers(cx, &target.peers, &moved, &mut c, &mut problems).await;
    let log = client_log(probes.await, &mut problems);
    let g = gap(&parse_probes(&log));
    judge_gap(&g, &target.url, advert, &mut c, &mut problems);
    // Put keepalived back, and see whether the VIP returns.
    if let Err(e) = cx.run(&master_name, &start).await {
        problems.push(format!("restarting keepalived on {master_name}: {e}"));
    }
    check_preempt(cx, inst, master, &master_name, &mut c, &mut problems).await;
    notify_logs(cx, inst, &mut c).await;
    let ok = format!(
        "{} took over; gap {:.2} s, {} of {} requests failed",
        moved.as_ref().map_or("?", |(h, _)| h.as_str()),
        g.longest,
        g.failed,
        g.sent
    );
    settle(c, problems, ok)
}

/// What a failover test of one instance aims at.
struct FailoverTarget<'a> {
    /// The client host that sends the requests.
    client: String,
    /// The other instances of the instance's sync group.
    peers: Vec<&'a VrrpInstance>,
    /// The VIP of the HTTP service asked during the test.
    vip: std::net::Ipv4Addr,
    /// That service's URL.
    url: String,
}

/// The client, sync peers and HTTP service a failover test of `inst` uses;
/// or why the instance is not checked (no client, no HTTP service on its
/// VIPs, or it moves with a sync peer that is checked instead).
fn failover_target<'a>(t: &'a Topology, inst: &VrrpInstance) -> Result<FailoverTarget<'a>, String> {
    let Some(client) = t.verify.client.map(|c| t.host(c).name.clone()) else {
        return Err("not checked: the lab has no client host".into());
    };
    let peers = sync_peers(t, inst);
    let Some(s) = t
        .services
        .iter()
        .find(|s| inst.vips.contains(&s.vip) && http(s).is_some())
    else {
        return Err(match peers.first() {
            Some(p) => format!(
                "not checked alone: it is in a sync group and moves with {} (see failover/{})",
                p.name, p.name
            ),
            None => "not checked: no TCP service uses this instance's VIPs".into(),
        });
    };
    let Some(url) = http(s) else {
        return Err("not checked: no TCP service uses this instance's VIPs".into());
    };
    Ok(FailoverTarget {
        client,
        peers,
        vip: s.vip,
        url,
    })
}

/// The member that took `inst`'s VIP over from `master`, and how long after
/// `stopped_at` it was seen there (asked every 250 ms for `window` seconds).
async fn watch_takeover(
    cx: &Cx<'_>,
    inst: &VrrpInstance,
    master: HostId,
    stopped_at: Instant,
    window: u32,
) -> Option<(String, Duration)> {
    while stopped_at.elapsed() < Duration::from_secs(u64::from(window)) {
        if let Some(h) = cx.holder(inst).await
            && h != master
        {
            return Some((cx.t.host(h).name.clone(), stopped_at.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// Whether each sync peer moved with the VIP to `moved`'s member: a sync
/// group moves together, the real servers' gateway following the VIP.
async fn check_sync_peers(
    cx: &Cx<'_>,
    peers: &[&VrrpInstance],
    moved: &Option<(String, Duration)>,
    c: &mut Check,
    problems: &mut Vec<String>,
) {
    for p in peers {
        let holder = cx.holder(p).await.map(|h| cx.t.host(h).name.clone());
        match (moved, holder) {
            (Some((h, _)), Some(ph)) if *h == ph => c.evidence.push(format!(
                "{} ({}) moved with it to {ph} (vrrp_sync_group)",
                p.name,
                p.vips.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
            )),
            (Some((h, _)), ph) => problems.push(format!(
                "{} of the same sync group is on {}, not with the VIP on {h}",
                p.name,
                ph.as_deref().unwrap_or("no director")
            )),
            (None, _) => {}
        }
    }
}

/// The client's request log from its finished request loop; empty (and a
/// problem recorded) when the loop could not be run or joined.
fn client_log(
    joined: Result<Result<crate::exec::transport::CmdOutput, impl std::fmt::Display>, impl std::fmt::Display>,
    problems: &mut Vec<String>,
) -> String {
    match joined {
        Ok(Ok(o)) => o.stdout,
        Ok(Err(e)) => {
            problems.push(format!("the client's requests: {e}"));
            String::new()
        }
        Err(e) => {
            problems.push(format!("the client's requests: {e}"));
            String::new()
        }
    }
}

/// Records what the client saw and judges it: requests sent, answered again
/// at the end, and a gap of at most 3 adverts plus 2 s.
fn judge_gap(g: &Gap, url: &str, advert: u32, c: &mut Check, problems: &mut Vec<String>) {
    let limit = f64::from(3 * advert + 2);
    c.evidence.push(format!(
        "client: {} requests to {url} (asked for every 100 ms; one every {:.2} s), {} failed, longest time without an answer {:.2} s",
        g.sent, g.every, g.failed, g.longest
    ));
    if g.sent == 0 {
        problems.push("the client sent no request".into());
    } else if !g.recovered {
        problems.push("requests were still failing at the end of the test".into());
    } else if g.longest > limit {
        problems.push(format!(
            "clients went {:.2} s without an answer (want at most {limit:.0} s: 3 adverts of {advert} s plus 2 s)",
            g.longest
        ));
    }
}

/// After keepalived restarted on `master`: whether the VIP came back to it
/// (asked every 250 ms), as it must with preemption and must not with `nopreempt`.
async fn check_preempt(
    cx: &Cx<'_>,
    inst: &VrrpInstance,
    master: HostId,
    master_name: &str,
    c: &mut Check,
    problems: &mut Vec<String>,
) {
    let advert = inst.advert_int.max(1);
    let back_within = Duration::from_secs(u64::from(3 * advert + 8 + inst.preempt_delay.unwrap_or(0)));
    let restarted = Instant::now();
    let mut back: Option<Duration> = None;
    while restarted.elapsed() < back_within {
        if cx.holder(inst).await == Some(master) {
            back = Some(restarted.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let preempts = !inst.nopreempt;
    let after = match (back, preempts) {
        (Some(d), true) => format!(
            "keepalived restarted on {master_name}: it preempted the VIP back after {}",
            secs(d)
        ),
        (None, false) => format!("keepalived restarted on {master_name}: the VIP stayed put (nopreempt)"),
        (Some(d), false) => {
            problems.push(format!(
                "{master_name} took the VIP back after {} despite nopreempt",
                secs(d)
            ));
            String::new()
        }
        (None, true) => {
            problems.push(format!(
                "{master_name} did not take the VIP back within {} after keepalived restarted",
                secs(back_within)
            ));
            String::new()
        }
    };
    if !after.is_empty() {
        c.evidence.push(after);
    }
}

/// What keepalived's notify script logged about `inst` on each member
/// meanwhile (its last three lines), as evidence.
async fn notify_logs(cx: &Cx<'_>, inst: &VrrpInstance, c: &mut Check) {
    for m in &inst.members {
        let name = &cx.t.host(m.host).name;
        if let Ok(o) = cx
            .run(
                name,
                &format!(
                    "grep -F ' {} ' /var/log/lvslab-vrrp.log 2>/dev/null | tail -n 3",
                    inst.name
                ),
            )
            .await
        {
            for l in o.stdout.lines() {
                c.evidence.push(format!("{name} log: {l}"));
            }
        }
    }
}

/// The other instances of `inst`'s `vrrp_sync_group` (NAT through keepalived:
/// instances with the same members on other networks; see compile::context).
fn sync_peers<'a>(t: &'a Topology, inst: &VrrpInstance) -> Vec<&'a VrrpInstance> {
    let Some(ha) = &t.ha else { return Vec::new() };
    let nat = t
        .services
        .iter()
        .any(|s| s.keepalived && s.mode == crate::model::Mode::Nat);
    let members = |i: &VrrpInstance| {
        let mut m: Vec<HostId> = i.members.iter().map(|m| m.host).collect();
        m.sort();
        m
    };
    if !nat {
        return Vec::new();
    }
    ha.instances
        .iter()
        .filter(|i| i.name != inst.name && i.network != inst.network && members(i) == members(inst))
        .collect()
}

/// Real servers of `s` in `ipvsadm -Sn` output that are in the pool (weight > 0).
fn in_pool(save: &str, s: &Service) -> Vec<String> {
    let target = s.ipvsadm_target();
    crate::plan::ipvs::parse_save(save)
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.target == target)
        .flat_map(|l| l.dests)
        .filter(|d| d.weight > 0)
        .map(|d| d.address)
        .collect()
}

fn web_service(name: &str) -> bool {
    name.starts_with("web-")
}

async fn health_check(cx: &Cx<'_>, s: &Service) -> Check {
    let c = check(
        format!("healthcheck/{}", s.name),
        "healthcheck",
        format!("Health checks of {}", s.name),
        "keepalived takes a failed real server out of the pool (no request reaches it) and puts it back when it recovers",
    );
    let Some(hc) = &s.health_check else {
        return skip(c, "not checked: no health check");
    };
    let Some(victim) = s.real_servers.iter().find(|r| r.weight > 0) else {
        return skip(c, "not checked: no real server with weight > 0");
    };
    let vname = cx.t.host(victim.host).name.clone();
    let vaddr = format!("{}:{}", victim.address, victim.port);
    let Some((stop, start)) = cx.service_cmds(&vname, web_service) else {
        return skip(c, "not checked: the victim's web server is not a plan step");
    };
    let mut c = c;
    let mut problems = Vec::new();
    let director = cx.active_director(s).await;
    // delay_loop, then each try waits for its connect timeout and the delay before the next.
    let expected = s.delay_loop + hc.retry.max(1) * (hc.connect_timeout + hc.delay_before_retry);
    let timeout = Duration::from_secs(u64::from(expected + 10));
    if let Err(e) = cx.run(&vname, &stop).await {
        problems.push(format!("stopping {vname}'s web server: {e}"));
    }
    c.evidence
        .push(format!("stopped {vname}'s web server; watching {director}'s table"));
    let gone = cx
        .wait_for(&director, "ipvsadm -Sn", timeout, |o| !in_pool(o, s).contains(&vaddr))
        .await;
    match gone {
        Some(d) => c.evidence.push(format!(
            "{vname} left the pool after {} (expected within about {expected} s: delay_loop {} + {} × (connect_timeout {} + delay_before_retry {}))",
            secs(d),
            s.delay_loop,
            hc.retry.max(1),
            hc.connect_timeout,
            hc.delay_before_retry
        )),
        None => problems.push(format!("{vname} was still in the pool after {}", secs(timeout))),
    }
    // Requests now must not reach it.
    if let (Some(client), Some(u)) = (cx.t.verify.client.map(|c| cx.t.host(c).name.clone()), http(s)) {
        match cx.run(&client, &traffic_script(&u, 10)).await {
            Ok(o) => {
                let tr = parse_traffic(&u, 10, &o.stdout);
                let vpage = cx.t.host(victim.host).page.clone().unwrap_or_default();
                let to_victim = tr.answers.get(vpage.trim_end()).copied().unwrap_or(0);
                let answered: u32 = tr.answers.values().sum();
                c.evidence.push(format!(
                    "10 requests meanwhile: {answered} answered, none by {vname}: {}",
                    to_victim == 0
                ));
                if answered < 10 {
                    problems.push(format!("{} of 10 requests failed while {vname} was out", 10 - answered));
                }
            }
            Err(e) => problems.push(format!("the client's requests: {e}")),
        }
    }
    if let Err(e) = cx.run(&vname, &start).await {
        problems.push(format!("restarting {vname}'s web server: {e}"));
    }
    let back = cx
        .wait_for(&director, "ipvsadm -Sn", timeout, |o| in_pool(o, s).contains(&vaddr))
        .await;
    match back {
        Some(d) => c.evidence.push(format!(
            "{vname} returned to the pool {} after its web server restarted",
            secs(d)
        )),
        None => problems.push(format!("{vname} did not return to the pool within {}", secs(timeout))),
    }
    let ok = format!(
        "{vname} left the pool after {} and returned after {}",
        gone.map_or("?".into(), secs),
        back.map_or("?".into(), secs)
    );
    settle(c, problems, ok)
}

async fn sorry(cx: &Cx<'_>, s: &Service) -> Check {
    let c = check(
        format!("sorry/{}", s.name),
        "sorry",
        format!("Sorry server of {}", s.name),
        "when every real server fails its health check, the sorry server answers instead",
    );
    let Some((saddr, sport)) = s.sorry_server else {
        return skip(c, "not checked: no sorry server");
    };
    let Some(u) = http(s) else {
        return skip(
            c,
            "not checked: the sorry server is asked over HTTP, and this service is not",
        );
    };
    let Some(client) = cx.t.verify.client.map(|c| cx.t.host(c).name.clone()) else {
        return skip(c, "not checked: the lab has no client host");
    };
    let mut c = c;
    let mut problems = Vec::new();
    let director = cx.active_director(s).await;
    let victims = web_servers(cx, s);
    for (name, stop, _) in &victims {
        if let Err(e) = cx.run(name, stop).await {
            problems.push(format!("stopping {name}'s web server: {e}"));
        }
    }
    c.evidence.push(format!(
        "stopped the web server of {}",
        victims.iter().map(|v| v.0.as_str()).collect::<Vec<_>>().join(", ")
    ));
    let sorry_addr = format!("{saddr}:{sport}");
    let timeout = Duration::from_secs(60);
    let entered = cx
        .wait_for(&director, "ipvsadm -Sn", timeout, |o| only_sorry(o, s, &sorry_addr))
        .await;
    match entered {
        Some(d) => c.evidence.push(format!(
            "the sorry server {sorry_addr} entered the table after {}",
            secs(d)
        )),
        None => problems.push(format!(
            "the sorry server {sorry_addr} was not in the table after {}",
            secs(timeout)
        )),
    }
    let page = sorry_page_at(cx.t, saddr);
    ask_sorry_server(cx, &client, &u, page.as_deref(), &mut c, &mut problems).await;
    for (name, _, start) in &victims {
        if let Err(e) = cx.run(name, start).await {
            problems.push(format!("restarting {name}'s web server: {e}"));
        }
    }
    let all = s.real_servers.iter().filter(|r| r.weight > 0).count();
    let back = cx
        .wait_for(&director, "ipvsadm -Sn", timeout, |o| {
            in_pool(o, s).len() >= all && !in_pool(o, s).contains(&sorry_addr)
        })
        .await;
    match back {
        Some(d) => c.evidence.push(format!(
            "the real servers returned (sorry server gone) after {}",
            secs(d)
        )),
        None => problems.push(format!("the real servers did not all return within {}", secs(timeout))),
    }
    let ok = format!("the sorry server answered after {}", entered.map_or("?".into(), secs));
    settle(c, problems, ok)
}

/// Each real server of `s` whose web server is a plan step: its host's name
/// and the plan's commands to stop and start that web server.
fn web_servers(cx: &Cx<'_>, s: &Service) -> Vec<(String, String, String)> {
    s.real_servers
        .iter()
        .filter_map(|r| {
            let name = cx.t.host(r.host).name.clone();
            cx.service_cmds(&name, web_service)
                .map(|(stop, start)| (name, stop, start))
        })
        .collect()
}

/// Whether `s`'s entry in `ipvsadm -Sn` output sends the client only to the
/// sorry server: the sorry server is in, and every real server out (or at
/// weight 0, with inhibit_on_failure).
fn only_sorry(save: &str, s: &Service, sorry_addr: &str) -> bool {
    crate::plan::ipvs::parse_save(save)
        .unwrap_or_default()
        .iter()
        .filter(|l| l.target == s.ipvsadm_target())
        .any(|l| {
            l.dests.iter().any(|d| d.address == sorry_addr)
                && l.dests.iter().all(|d| d.address == sorry_addr || d.weight == 0)
        })
}

/// The page the host holding the sorry address serves (its own, else the
/// generated sorry page); none when no host holds it.
fn sorry_page_at(t: &Topology, saddr: std::net::Ipv4Addr) -> Option<String> {
    t.hosts.iter().find(|h| h.has_address(saddr)).map(|h| {
        h.page
            .clone()
            .unwrap_or_else(|| crate::compile::context::sorry_page(&t.lab, &h.name))
    })
}

/// Whether the client gets the sorry page: three requests, up to three
/// rounds a second apart, until all three of a round get it. Connection
/// entries and persistence templates of the real servers just removed may
/// still catch a request for a moment (seen under emulation: 1 of 3 at once).
async fn ask_sorry_server(
    cx: &Cx<'_>,
    client: &str,
    u: &str,
    sorry_page: Option<&str>,
    c: &mut Check,
    problems: &mut Vec<String>,
) {
    let mut last = 0;
    for round in 1..=3 {
        match cx.run(client, &traffic_script(u, 3)).await {
            Ok(o) => {
                let tr = parse_traffic(u, 3, &o.stdout);
                last = sorry_page
                    .and_then(|p| tr.answers.get(p.trim_end()))
                    .copied()
                    .unwrap_or(0);
                c.evidence.push(format!(
                    "3 requests (round {round}): {last} answered by the sorry server"
                ));
            }
            Err(e) => {
                problems.push(format!("the client's requests: {e}"));
                break;
            }
        }
        if last == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if last != 3 {
        problems.push(format!(
            "only {last} of 3 requests got the sorry page, in each of 3 rounds"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(at: f64, ok: bool) -> Probe {
        Probe { at, ok }
    }

    #[test]
    fn gaps() {
        let g = gap(&[
            p(1.0, true),
            p(1.1, true),
            p(1.2, false),
            p(2.0, false),
            p(4.6, true),
            p(4.7, true),
        ]);
        assert!((g.longest - 3.5).abs() < 1e-9, "{g:?}");
        assert_eq!((g.failed, g.sent, g.recovered), (2, 6, true));
        assert!((g.every - 0.74).abs() < 1e-9, "{g:?}");
        let g = gap(&[p(1.0, true), p(1.1, false)]);
        assert!(!g.recovered);
        let g = gap(&[p(1.0, true), p(1.1, true), p(1.25, true)]);
        assert!((g.longest - 0.15).abs() < 1e-9 && g.failed == 0);
    }

    #[test]
    fn the_probe_loop_asks_one_url_and_accepts_the_lab_certificate() {
        let s = probe_loop_script("https://192.168.4.253/index.html http://192.168.4.253/", 1, 100);
        assert!(s.contains("curl -s -k "), "{s}");
        assert!(
            s.contains("https://192.168.4.253/index.html") && !s.contains("http://192.168.4.253/"),
            "{s}"
        );
        assert!(!probe_loop_script("http://192.168.4.5/", 1, 100).contains(" -k "));
    }

    #[test]
    fn the_probe_loop_runs_and_parses() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(probe_loop_script("http://127.0.0.1:9/", 1, 100))
            .output()
            .unwrap();
        let probes = parse_probes(&String::from_utf8_lossy(&out.stdout));
        assert!(!probes.is_empty(), "{out:?}");
        assert!(probes.iter().all(|p| !p.ok));
        assert!(probes.windows(2).all(|w| w[1].at >= w[0].at));
    }
}
