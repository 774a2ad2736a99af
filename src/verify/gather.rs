//! Collecting evidence: a few batched round trips per host, all hosts at once.
//!
//! 1. *before*: every host's links, addresses and sysctls; directors' IPVS table
//!    and counters and what each real server answers on its own address;
//!    real servers' route back to the client; the ARP prober forgets the VIP.
//! 2. *traffic*: the client sends N requests per service.
//! 3. *after*: the directors' counters again; the prober's neighbour entry for
//!    the VIP and who answers ARP for it.
//! 4. the topology's own checks, retried as they say.
//!
//! Nothing here decides anything: see [`super::decide`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::probe::*;
use super::{Evidence, Out, Traffic, UserCheckRun};
use crate::exec::batch::{batch, parse_batch};
use crate::exec::transport::Transport;
use crate::model::{Mode, Role, Service, SyncMode, Topology};
use crate::shell::quote;

const MARKER: &str = "@@lvslab-verify";

/// keepalived writes what its VRRP instances know (state, the master it hears)
/// to /tmp/keepalived.data on SIGUSR1. Only those lines are kept: the dump
/// also holds the VRRP password.
pub const KEEPALIVED_DATA: &str = "p=$(cat /run/keepalived.pid 2>/dev/null) || { echo 'keepalived is not running (no /run/keepalived.pid)'; exit 3; }\n\
rm -f /tmp/keepalived.data; kill -USR1 \"$p\" || exit 3\n\
i=0; while [ ! -s /tmp/keepalived.data ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; sleep 0.2\n\
grep -E '^ *(VRRP Instance|State|Master router|Master priority|Last transition) = ' /tmp/keepalived.data";

/// curl with the options every probe uses (self-signed lab certificates accepted).
fn curl_cmd(url: &str) -> String {
    let k = if url.contains("https://") { " -k" } else { "" };
    format!("curl -s{k} --connect-timeout 2 -m 3")
}

fn health_key(s: &Service, rs: &str) -> String {
    format!("health:{}:{rs}", s.name)
}

/// Probe scripts of round 1, per host: (key, commands).
pub fn before_probes(t: &Topology) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let common = [
        ("link", "ip -o link"),
        ("addr", "ip -o -4 addr"),
        (
            "sysctl",
            "grep -H . /proc/sys/net/ipv4/conf/*/arp_ignore /proc/sys/net/ipv4/conf/*/arp_announce /proc/sys/net/ipv4/conf/*/rp_filter /proc/sys/net/ipv4/ip_forward",
        ),
    ];
    let client_addr = t.verify.client.and_then(|c| t.host(c).primary_address());
    for h in &t.hosts {
        let mut p: Vec<(String, String)> = Vec::new();
        let involved = h.role == Role::Director
            || t.services_of_real_server(h.id).next().is_some()
            || Some(h.id) == t.verify.client
            || t.services
                .iter()
                .any(|s| arp_prober(t, s).map(|(id, _)| id) == Some(h.id));
        if !involved {
            continue;
        }
        for (k, c) in common {
            p.push((k.into(), c.into()));
        }
        if h.role == Role::Director && t.services_of_director(h.id).next().is_some() {
            p.push(("ipvs-save".into(), "ipvsadm -Sn".into()));
            p.push(("ipvs-stats".into(), "ipvsadm -Ln --stats --exact".into()));
            // Least-connection schedulers decide by these: what is there before the traffic.
            p.push(("ipvs-conns".into(), "ipvsadm -Ln --exact".into()));
            for s in t.services_of_director(h.id).filter(|s| http(s).is_some()) {
                for rs in &s.real_servers {
                    let port = real_port(s, rs.port);
                    let u = match port {
                        443 => format!("https://{}/index.html", rs.address),
                        p => format!("http://{}:{p}/", rs.address),
                    };
                    p.push((
                        health_key(s, &t.host(rs.host).name),
                        format!("{} {}", curl_cmd(&u), quote(&u)),
                    ));
                }
            }
        }
        if t.ha
            .as_ref()
            .is_some_and(|ha| ha.instances.iter().any(|i| i.members.iter().any(|m| m.host == h.id)))
        {
            p.push(("vrrp-data".into(), KEEPALIVED_DATA.into()));
        }
        if let Some(addr) = client_addr
            && t.services_of_real_server(h.id).any(|s| s.mode == Mode::Nat)
        {
            p.push(("route".into(), format!("ip route get {addr}")));
        }
        for s in t.services.iter().filter(|s| s.mode != Mode::Nat) {
            if let Some((id, iface)) = arp_prober(t, s)
                && id == h.id
            {
                p.push((
                    format!("neigh-flush:{}", s.vip),
                    format!("ip neigh flush to {} dev {} 2>/dev/null; true", s.vip, quote(&iface)),
                ));
            }
        }
        out.insert(h.name.clone(), p);
    }
    out
}

const RESULT: &str = "@@lvslab-response";

/// The client's traffic script for one service: one curl process making `n`
/// requests (to the service's URLs in turn when it has several: a
/// firewall mark over 80 and 443), each on a new connection (`Connection: close`), each body
/// followed by a line `@@lvslab-response HTTP_CODE CURL_EXIT`. One process
/// instead of `n` keeps this fast on slow machines (and under emulation).
///
/// UDP (`udp://VIP:PORT`): `n` datagrams, each from a new socket (a new source
/// port, so a new IPVS connection), each reply followed by the same result
/// line (`200 0` answered, `000 28` no reply within 3 s): see [`udp_script`].
pub fn traffic_script(url: &str, n: u32) -> String {
    if let Some(target) = url.strip_prefix("udp://") {
        return udp_script(target, n);
    }
    format!(
        "set +e\nf=$(mktemp) || exit 1\ni=0\nwhile [ $i -lt {n} ]; do for u in {urls}; do [ $i -lt {n} ] || break; i=$((i+1)); printf 'url = \"%s\"\\n' \"$u\"; done; done > \"$f\"\n{curl} -H 'Connection: close' -w '\\n{RESULT} %{{http_code}} %{{exitcode}}\\n' -K \"$f\"\nrm -f \"$f\"",
        urls = url.split_whitespace().map(quote).collect::<Vec<_>>().join(" "),
        curl = curl_cmd(url),
    )
}

/// `n` datagrams to `target` (`VIP:PORT`), each from a new connected socket,
/// each reply followed by a result line. With bash (every Debian and RHEL
/// host): `/dev/udp` and one `dd` read per datagram, which returns as soon as
/// the reply is there (or at once on an ICMP error). Without bash: socat,
/// whose `-t 3` makes it wait 3 s after sending even when the reply came
/// sooner (its default 0.5 s gave up on replies that a loaded machine sends
/// later: lost datagrams that were not lost).
pub fn udp_script(target: &str, n: u32) -> String {
    let (host, port) = target.rsplit_once(':').unwrap_or((target, ""));
    let report =
        format!("if [ -n \"$r\" ]; then printf '%s\\n{RESULT} 200 0\\n' \"$r\"; else echo '{RESULT} 000 28'; fi");
    let bash = format!(
        "i=0; while [ $i -lt {n} ]; do i=$((i+1)); r=; \
         if exec 3<>/dev/udp/{host}/{port}; then echo lvslab >&3 && r=$(timeout 3 dd bs=65536 count=1 <&3 2>/dev/null); exec 3<&-; fi 2>/dev/null; \
         {report}; done"
    );
    format!(
        "set +e\nif command -v bash >/dev/null 2>&1; then bash -c {bash}; else \
         i=0; while [ $i -lt {n} ]; do i=$((i+1)); r=$(echo lvslab | socat -t 3 -T 3 - UDP4:{t} 2>/dev/null); {report}; done; fi",
        bash = quote(&bash),
        t = quote(target),
    )
}

/// Parse a traffic script's output.
pub fn parse_traffic(url: &str, sent: u32, out: &str) -> Traffic {
    let mut t = Traffic {
        url: url.to_string(),
        sent,
        ..Traffic::default()
    };
    let mut body = String::new();
    let mut seen = 0;
    for line in out.split_inclusive('\n') {
        let Some(result) = line.trim_end().strip_prefix(RESULT) else {
            body.push_str(line);
            continue;
        };
        seen += 1;
        let mut w = result.split_whitespace();
        let code = w.next().unwrap_or("000");
        let exit = w.next().unwrap_or("");
        let outcome = match (code, exit) {
            ("200", _) => {
                *t.answers.entry(body.trim_end().to_string()).or_default() += 1;
                body.clear();
                continue;
            }
            ("000", e) if e.parse::<u32>().is_ok_and(|e| e != 0) => curl_error(e),
            ("000", _) => "no HTTP response".to_string(),
            (code, _) => format!("HTTP {code}"),
        };
        body.clear();
        *t.failures.entry(outcome).or_default() += 1;
    }
    if seen < sent {
        t.failures.insert(
            format!("no result (curl stopped: {})", super::probe::first_words(&body, 80)),
            sent - seen,
        );
    }
    t
}

fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{t:x}")
}

/// Write a file with a fresh token into the shared directory; it prints what
/// it wrote.
fn storage_write(t: &Topology, token: &str) -> Option<(String, String)> {
    let (writer, dir) = storage_writer(t)?;
    let writer = writer.name.clone();
    let file = quote(&format!("{dir}/{STORAGE_FILE}"));
    let line = quote(&format!("written by {writer} into the shared directory, token {token}"));
    Some((writer, format!("printf '%s\\n' {line} > {file} && cat {file}")))
}

/// rsync mode: the command each real server runs to fetch the shared content
/// (the playbook's `rsync-shared` step does the same).
pub fn rsync_fetch(st: &crate::model::Storage) -> String {
    format!("rsync -a --delete rsync://{}/lvslab/ {}/", st.address, quote(&st.mount))
}

/// Each real server's copy of the file: over HTTP from a director when the
/// share is under the document root (what clients would get), else read on
/// the real server itself.
fn storage_reads(t: &Topology, out: &mut BTreeMap<String, Vec<(String, String)>>) {
    let Some(st) = t.storage.as_ref() else { return };
    let docroot = t.web.docroot.trim_end_matches('/');
    let director = t.hosts.iter().find(|h| h.role == Role::Director);
    for rs in storage_readers(t) {
        if st.sync == SyncMode::Rsync {
            // Fetch (as `up` would), then read this real server's copy.
            let cmd = format!(
                "{} && cat {}",
                rsync_fetch(st),
                quote(&format!("{}/{STORAGE_FILE}", st.mount))
            );
            out.entry(rs.name.clone())
                .or_default()
                .push((storage_read_key(&rs.name), cmd));
            continue;
        }
        let rel = st.mount.strip_prefix(docroot).filter(|r| r.starts_with('/'));
        // Where the director reaches this real server's web server.
        let reach = t
            .services
            .iter()
            .filter(|s| http(s).is_some())
            .find_map(|s| s.real_servers.iter().find(|r| r.host == rs.id).map(|r| (s, r)))
            .map(|(s, r)| (r.address, real_port(s, r.port)))
            .filter(|(_, port)| *port != 443);
        let (host, cmd) = match (rel, director, reach) {
            (Some(rel), Some(d), Some((addr, port))) => {
                let u = format!("http://{addr}:{port}{rel}/{STORAGE_FILE}");
                (d.name.clone(), format!("{} {}", curl_cmd(&u), quote(&u)))
            }
            _ => (
                rs.name.clone(),
                format!("cat {}", quote(&format!("{}/{STORAGE_FILE}", st.mount))),
            ),
        };
        out.entry(host).or_default().push((storage_read_key(&rs.name), cmd));
    }
}

fn after_probes(t: &Topology) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    storage_reads(t, &mut out);
    for h in t.hosts.iter().filter(|h| h.role == Role::Director) {
        if t.services_of_director(h.id).next().is_some() {
            // The kernel folds its per-CPU counters into what ipvsadm reads
            // every 2 s (the rate estimator): wait for the last requests to show.
            let p = out.entry(h.name.clone()).or_default();
            // Right after the traffic: how many connections it left (and how
            // many earlier ones expired meanwhile).
            p.push(("ipvs-conns".into(), "ipvsadm -Ln --exact".into()));
            p.push(("ipvs-stats".into(), "sleep 2.5; ipvsadm -Ln --stats --exact".into()));
        }
    }
    for s in t.services.iter().filter(|s| s.mode != Mode::Nat) {
        if let Some((id, iface)) = arp_prober(t, s) {
            let p = out.entry(t.host(id).name.clone()).or_default();
            let vip = s.vip;
            if p.iter().any(|(k, _)| k == &format!("neigh:{vip}")) {
                continue;
            }
            p.push((format!("neigh:{vip}"), format!("ip neigh show {vip}")));
            let i = quote(&iface);
            p.push((
                format!("arping:{vip}"),
                format!(
                    "if command -v arping >/dev/null 2>&1; then arping -c 2 -w 2 -I {i} {vip}; \
                     elif command -v busybox >/dev/null 2>&1; then busybox arping -c 2 -w 2 -I {i} {vip}; \
                     else echo 'no arping on this host'; exit 127; fi; true"
                ),
            ));
        }
    }
    out
}

async fn round(
    conns: &BTreeMap<String, Arc<dyn Transport>>,
    probes: BTreeMap<String, Vec<(String, String)>>,
    unreachable: &mut BTreeMap<String, String>,
) -> BTreeMap<String, BTreeMap<String, Out>> {
    let mut tasks = Vec::new();
    for (host, items) in probes {
        if unreachable.contains_key(&host) {
            continue;
        }
        let Some(t) = conns.get(&host).cloned() else {
            unreachable.insert(host.clone(), "no connection".into());
            continue;
        };
        tasks.push(tokio::spawn(async move {
            let cmds: Vec<Vec<String>> = items.iter().map(|(_, c)| vec![c.clone()]).collect();
            let script = batch(&cmds, MARKER, false);
            let res = t.run(&script).await;
            (host, items, res)
        }));
    }
    let mut out = BTreeMap::new();
    for task in tasks {
        let Ok((host, items, res)) = task.await else {
            continue;
        };
        match res {
            Err(e) => {
                unreachable.insert(host, e.to_string());
            }
            Ok(o) => {
                let parsed = parse_batch(&o.stdout, MARKER, items.len());
                let m: BTreeMap<String, Out> = items
                    .into_iter()
                    .zip(parsed)
                    .map(|((k, _), obs)| {
                        let o = obs.map_or(
                            Out {
                                out: "(no output: the probe did not run)".into(),
                                rc: -1,
                            },
                            |o| Out {
                                out: o.output,
                                rc: o.rc,
                            },
                        );
                        (k, o)
                    })
                    .collect();
                out.insert(host, m);
            }
        }
    }
    out
}

/// Gather all evidence. `conns` holds a transport per reachable host;
/// `failed` the hosts that could not be reached and why.
pub async fn gather(
    t: &Topology,
    conns: &BTreeMap<String, Arc<dyn Transport>>,
    failed: BTreeMap<String, String>,
    requests: u32,
) -> Evidence {
    let start = Instant::now();
    let mut unreachable = failed;
    let vrrp_wait = settle_vrrp(t, conns).await;
    let mut probes = before_probes(t);
    if let Some((writer, cmd)) = storage_write(t, &nonce()) {
        probes.entry(writer).or_default().push((STORAGE_WRITE.into(), cmd));
    }
    let before = round(conns, probes, &mut unreachable).await;

    // Traffic: one script per service, all from the client, one after another
    // (so that one service's requests do not disturb another's scheduling).
    let mut traffic = BTreeMap::new();
    if let Some(client) = t.verify.client.map(|c| t.host(c).name.clone()) {
        let items: Vec<(String, String)> = t
            .services
            .iter()
            .filter_map(|s| url(s).map(|u| (s.name.clone(), u)))
            .collect();
        if !items.is_empty() && !unreachable.contains_key(&client) {
            let probes = BTreeMap::from([(
                client.clone(),
                items
                    .iter()
                    .map(|(name, u)| (name.clone(), traffic_script(u, requests)))
                    .collect(),
            )]);
            let res = round(conns, probes, &mut unreachable).await;
            if let Some(outs) = res.get(&client) {
                for (name, u) in &items {
                    if let Some(o) = outs.get(name) {
                        traffic.insert(name.clone(), parse_traffic(u, requests, &o.out));
                    }
                }
            }
        }
    }

    let after = round(conns, after_probes(t), &mut unreachable).await;
    let mut ev = Evidence {
        lab: t.lab.clone(),
        requests,
        unreachable,
        before,
        traffic,
        after,
        custom: Vec::new(),
        seconds: 0.0,
        vrrp_wait,
        stats_rereads: 0,
    };
    reread_lagging_counters(t, conns, &mut ev).await;
    ev.custom = run_user_checks(t, conns, &ev.unreachable).await;
    ev.seconds = start.elapsed().as_secs_f64();
    ev
}

/// While some service's IPVS counters still show fewer new connections than
/// its answers, read the directors' counters again (at most 4 times, 1.5 s
/// apart): the kernel's estimator folds per-CPU counters into what `ipvsadm`
/// reads every 2 s, and later than that on a loaded machine. Traffic that
/// really bypassed IPVS never shows up, and then decide says so.
async fn reread_lagging_counters(t: &Topology, conns: &BTreeMap<String, Arc<dyn Transport>>, ev: &mut Evidence) {
    const REREADS: u32 = 4;
    while ev.stats_rereads < REREADS {
        let behind = super::decide::counters_behind(t, ev);
        if behind.is_empty() {
            return;
        }
        let mut probes: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for s in t.services.iter().filter(|s| behind.contains(&s.name)) {
            for d in &s.directors {
                probes
                    .entry(t.host(*d).name.clone())
                    .or_insert_with(|| vec![("ipvs-stats".into(), "sleep 1.5; ipvsadm -Ln --stats --exact".into())]);
            }
        }
        let fresh = round(conns, probes, &mut ev.unreachable).await;
        for (host, outs) in fresh {
            if let Some(o) = outs.get("ipvs-stats").filter(|o| o.rc == 0) {
                ev.after.entry(host).or_default().insert("ipvs-stats".into(), o.clone());
            }
        }
        ev.stats_rereads += 1;
    }
}

/// Wait (at most 30 s) until each VRRP instance has settled: its first VIP
/// held by exactly one member, and (unless `nopreempt`) by the member with
/// the highest priority among those whose keepalived runs. Right after
/// keepalived starts, the master takes a few adverts to claim the VIP, and a
/// higher-priority member that started later preempts it: until then two
/// members say MASTER and the client's ARP entry may name either. Returns how
/// long that took, or `None` without HA.
async fn settle_vrrp(t: &Topology, conns: &BTreeMap<String, Arc<dyn Transport>>) -> Option<f64> {
    let ha = t.ha.as_ref()?;
    let start = Instant::now();
    loop {
        let mut settled = true;
        for inst in &ha.instances {
            let Some(vip) = inst.vips.first() else { continue };
            // (priority, holds the VIP) of each member whose keepalived runs.
            let mut running: Vec<(u8, bool)> = Vec::new();
            let mut holders = 0;
            for m in &inst.members {
                let Some(c) = conns.get(&t.host(m.host).name) else {
                    continue;
                };
                let Ok(o) = c
                    .run("ip -o -4 addr; p=$(cat /run/keepalived.pid 2>/dev/null) && kill -0 \"$p\" 2>/dev/null && echo keepalived-runs")
                    .await
                else {
                    continue;
                };
                let holds = super::parse::addresses(&o.stdout).iter().any(|(_, a, _)| a == vip);
                holders += usize::from(holds);
                if o.stdout.lines().any(|l| l == "keepalived-runs") {
                    running.push((m.priority, holds));
                }
            }
            let top_holds = running.iter().max_by_key(|(p, _)| *p).is_none_or(|(_, holds)| *holds);
            settled &= holders == 1 && (inst.nopreempt || top_holds);
        }
        if settled || start.elapsed() >= Duration::from_secs(30) {
            return Some(start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run_user_checks(
    t: &Topology,
    conns: &BTreeMap<String, Arc<dyn Transport>>,
    unreachable: &BTreeMap<String, String>,
) -> Vec<UserCheckRun> {
    let mut tasks = Vec::new();
    for c in &t.checks {
        let host = t.host(c.host).name.clone();
        let conn = conns.get(&host).cloned();
        let down = unreachable.get(&host).cloned();
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut run = UserCheckRun {
                name: c.name.clone(),
                host: host.clone(),
                tries: 0,
                last: None,
                seconds: 0.0,
                error: None,
            };
            let Some(conn) = conn.filter(|_| down.is_none()) else {
                run.error = Some(down.unwrap_or_else(|| "no connection".into()));
                return run;
            };
            let deadline = start + Duration::from_secs(c.timeout_secs.into());
            loop {
                run.tries += 1;
                match conn.run(&format!("exec 2>&1\n{}\n", c.run)).await {
                    Err(e) => {
                        run.error = Some(e.to_string());
                        break;
                    }
                    Ok(o) => {
                        let passed = super::probe::user_check_passes(&c, o.status, &o.stdout);
                        run.last = Some(Out {
                            out: o.stdout,
                            rc: o.status,
                        });
                        if passed || Instant::now() >= deadline {
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_secs(c.interval_secs.into())).await;
            }
            run.seconds = start.elapsed().as_secs_f64();
            run
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        if let Ok(r) = task.await {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_lines() {
        let page = "<h1>web1 192.168.2.100</h1>\n<p>two lines</p>\n";
        let r = RESULT;
        let out = format!("{page}\n{r} 200 0\n{page}\n{r} 200 0\n\n{r} 000 7\n\n{r} 000 28\n<h1>no</h1>\n{r} 404 0\n");
        let t = parse_traffic("http://192.168.4.5/", 6, &out);
        assert_eq!(t.answers["<h1>web1 192.168.2.100</h1>\n<p>two lines</p>"], 2);
        assert_eq!(t.failures.get("no result (curl stopped: )"), Some(&1), "{t:?}");
        assert_eq!(t.failures["curl exit 7 (connection refused or no route)"], 1);
        assert_eq!(t.failures["curl exit 28 (timed out)"], 1);
        assert_eq!(t.failures["HTTP 404"], 1);
    }

    #[test]
    fn the_traffic_script_runs_and_its_output_parses() {
        // Against a URL nothing listens on: every request fails the same way.
        let script = traffic_script("http://127.0.0.1:9/", 3);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let t = parse_traffic("http://127.0.0.1:9/", 3, &String::from_utf8_lossy(&out.stdout));
        assert!(t.answers.is_empty());
        assert_eq!(t.failures.values().sum::<u32>(), 3, "{t:?}");
    }

    #[test]
    fn the_traffic_script_opens_one_connection_per_request() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut conns = 0;
            for stream in listener.incoming().take(5) {
                let mut stream = stream.unwrap();
                conns += 1;
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let body = format!("<h1>web{}</h1>\n", 1 + conns % 2);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            conns
        });
        let u = format!("http://127.0.0.1:{port}/");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(traffic_script(&u, 5))
            .output()
            .unwrap();
        let t = parse_traffic(&u, 5, &String::from_utf8_lossy(&out.stdout));
        assert_eq!(server.join().unwrap(), 5, "one connection per request");
        assert_eq!(t.answers["<h1>web1</h1>"], 2, "{t:?}");
        assert_eq!(t.answers["<h1>web2</h1>"], 3, "{t:?}");
        assert!(t.failures.is_empty(), "{t:?}");
    }

    #[test]
    fn urls() {
        let topo = crate::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/topologies/nat.yaml"
        )))
        .unwrap()
        .topology;
        assert_eq!(url(&topo.services[0]).as_deref(), Some("http://192.168.4.5/"));
    }
}
