//! The topology language's combinations (issue 15): a lab that validates
//! must come up and verify.
//!
//! 1. `every_combination_is_refused_or_renders_configs_the_tools_accept`:
//!    every combination of mode × service kind × HA × sorry server × health
//!    check × storage × option (none, or one of the options that change
//!    rendering) is built as a topology. Either `validate` refuses it (the
//!    reasons are counted and printed), or it compiles, every rendered
//!    keepalived.conf passes the real `keepalived -t` and every per-host
//!    script passes `sh -n`.
//! 2. `covering_labs_are_pairwise_and_checked_in`: a fixed set of labs in which
//!    every pair of values (the options now each on or off, so their pairs
//!    are covered too) appears together in at least one lab. They are
//!    checked in under `tests/matrix/` (regenerate with
//!    `LVSLAB_UPDATE_MATRIX=1 cargo test --test matrix`), and the kernel lab
//!    (`tests/kernel-lab/e2e.sh matrix`) brings each one up and verifies it.
//!
//! Needs keepalived and root (keepalived -t runs in a network namespace);
//! .ci/run installs it. A missing program fails; nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on the unexpected

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Nat,
    Dr,
    Tun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ha {
    None,
    Pair,
    Dual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Storage {
    None,
    Nfs,
    Rsync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Port,
    PortMap,
    Fwmark,
    Udp,
    UdpOnePacket,
    Persist,
    PersistMask,
    Pcc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Check {
    None,
    Http,
    Tcp,
    Misc,
}

const MODES: [Mode; 3] = [Mode::Nat, Mode::Dr, Mode::Tun];
const HAS: [Ha; 3] = [Ha::None, Ha::Pair, Ha::Dual];
const STORAGES: [Storage; 3] = [Storage::None, Storage::Nfs, Storage::Rsync];
const KINDS: [Kind; 8] = [
    Kind::Port,
    Kind::PortMap,
    Kind::Fwmark,
    Kind::Udp,
    Kind::UdpOnePacket,
    Kind::Persist,
    Kind::PersistMask,
    Kind::Pcc,
];
const CHECKS: [Check; 4] = [Check::None, Check::Http, Check::Tcp, Check::Misc];
/// The options that change rendering. The first three belong to a VRRP
/// instance (lab level), the others to a service.
const OPTIONS: [&str; 6] = ["unicast", "nopreempt", "preempt_delay", "quorum", "inhibit", "digest"];

/// A service of a lab: its kind and its keepalived settings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Svc {
    kind: Kind,
    check: Check,
    sorry: bool,
    quorum: bool,
    inhibit: bool,
    digest: bool,
}

/// One dimension's value: `("mode", "nat")`.
type Value = (&'static str, &'static str);
/// Two values that must appear together in some lab.
type Pair = (Value, Value);

#[derive(Debug, Clone)]
struct Lab {
    name: String,
    mode: Mode,
    ha: Ha,
    storage: Storage,
    unicast: bool,
    nopreempt: bool,
    preempt_delay: bool,
    /// Dual-master: the second instance's (unicast, nopreempt,
    /// preempt_delay), when they differ from the first's.
    second: Option<(bool, bool, bool)>,
    services: Vec<Svc>,
}

fn lower<T: std::fmt::Debug>(v: T) -> String {
    let s = format!("{v:?}");
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

impl Lab {
    /// The VRRP instance options of the instance service `i` belongs to.
    fn opts(&self, i: usize) -> (bool, bool, bool) {
        let first = (self.unicast, self.nopreempt, self.preempt_delay);
        match (self.ha, i % 2) {
            (Ha::Dual, 1) => self.second.unwrap_or(first),
            _ => first,
        }
    }

    /// Every (dimension, value) of service `i`'s row: the lab's (its
    /// instance's options) and the service's.
    fn row(&self, i: usize, s: &Svc) -> Vec<Value> {
        let (unicast, nopreempt, preempt_delay) = self.opts(i);
        let b = |x: bool| if x { "on" } else { "off" };
        let mode = match self.mode {
            Mode::Nat => "nat",
            Mode::Dr => "dr",
            Mode::Tun => "tun",
        };
        let ha = match self.ha {
            Ha::None => "none",
            Ha::Pair => "pair",
            Ha::Dual => "dual",
        };
        let storage = match self.storage {
            Storage::None => "none",
            Storage::Nfs => "nfs",
            Storage::Rsync => "rsync",
        };
        let kind = match s.kind {
            Kind::Port => "port",
            Kind::PortMap => "port_map",
            Kind::Fwmark => "fwmark",
            Kind::Udp => "udp",
            Kind::UdpOnePacket => "udp_one_packet",
            Kind::Persist => "persist",
            Kind::PersistMask => "persist_mask",
            Kind::Pcc => "pcc",
        };
        let check = match s.check {
            Check::None => "none",
            Check::Http => "http",
            Check::Tcp => "tcp",
            Check::Misc => "misc",
        };
        vec![
            ("mode", mode),
            ("ha", ha),
            ("storage", storage),
            ("unicast", b(unicast)),
            ("nopreempt", b(nopreempt)),
            ("preempt_delay", b(preempt_delay)),
            ("kind", kind),
            ("check", check),
            ("sorry", b(s.sorry)),
            ("quorum", b(s.quorum)),
            ("inhibit", b(s.inhibit)),
            ("digest", b(s.digest)),
        ]
    }

    /// The topology file.
    fn yaml(&self) -> String {
        let nat = self.mode == Mode::Nat;
        let ha = self.ha != Ha::None;
        let needs_st = self.storage != Storage::None || self.services.iter().any(|s| s.sorry);
        let mut y = String::new();
        let _ = writeln!(
            y,
            "# Generated by tests/matrix.rs (issue 15's covering labs): do not edit by hand."
        );
        let _ = writeln!(y, "lab: {}", self.name);
        let _ = writeln!(y, "mode: {}", lower(self.mode));
        let _ = writeln!(y, "verify: {{ requests: 12 }}");
        let lan = if nat { "public" } else { "lan" };
        let inner = if nat { "private" } else { "lan" };
        let inner_net = if nat { "192.168.2" } else { "192.168.4" };
        y.push_str("networks:\n");
        if nat {
            y.push_str("  public: { cidr: 192.168.4.0/24 }\n  private: { cidr: 192.168.2.0/24 }\n");
        } else {
            y.push_str("  lan: { cidr: 192.168.4.0/24 }\n");
        }
        y.push_str("hosts:\n");
        let _ = writeln!(
            y,
            "  client: {{ role: client, interfaces: [{{ network: {lan}, address: 192.168.4.10 }}] }}"
        );
        let directors: &[(&str, u8)] = if ha { &[("d1", 2), ("d2", 3)] } else { &[("d1", 2)] };
        for (d, a) in directors {
            if nat {
                let _ = writeln!(
                    y,
                    "  {d}: {{ role: director, interfaces: [{{ network: public, address: 192.168.4.{a} }}, {{ network: private, address: 192.168.2.{a} }}] }}"
                );
            } else {
                let _ = writeln!(
                    y,
                    "  {d}: {{ role: director, interfaces: [{{ network: lan, address: 192.168.4.{a} }}] }}"
                );
            }
        }
        for (w, a) in [("web1", 11), ("web2", 12)] {
            let _ = writeln!(
                y,
                "  {w}: {{ role: real_server, interfaces: [{{ network: {inner}, address: {inner_net}.{a} }}] }}"
            );
        }
        if needs_st {
            let _ = writeln!(
                y,
                "  st: {{ role: storage, interfaces: [{{ network: {inner}, address: {inner_net}.30 }}] }}"
            );
        }
        let vip = |i: usize| format!("192.168.4.{}", 100 + i);
        if ha {
            y.push_str("ha:\n  instances:\n");
            let mut instance = |name: &str, vrid: u8, vips: Vec<String>, master: &str, opts: (bool, bool, bool)| {
                let (unicast, nopreempt, preempt_delay) = opts;
                let backup_first = nopreempt || preempt_delay;
                let _ = writeln!(y, "    - name: {name}");
                let _ = writeln!(y, "      virtual_router_id: {vrid}");
                let _ = writeln!(y, "      advert_int: 1");
                let _ = writeln!(y, "      auth_pass: \"pw{vrid}\"");
                let _ = writeln!(y, "      vips: [{}]", vips.join(", "));
                if unicast {
                    y.push_str("      unicast: true\n");
                }
                if nopreempt {
                    y.push_str("      nopreempt: true\n");
                }
                if preempt_delay {
                    y.push_str("      preempt_delay: 2\n");
                }
                y.push_str("      members:\n");
                for (d, _) in directors {
                    let state = if *d == master && !backup_first {
                        "MASTER"
                    } else {
                        "BACKUP"
                    };
                    let prio = if *d == master { 100 } else { 90 };
                    let _ = writeln!(y, "        - {{ host: {d}, state: {state}, priority: {prio} }}");
                }
            };
            let all: Vec<String> = (0..self.services.len()).map(vip).collect();
            match self.ha {
                Ha::Dual => {
                    // Services alternate between the two masters; a spare VIP
                    // keeps each instance non-empty.
                    let mut a: Vec<String> = all.iter().step_by(2).cloned().collect();
                    let mut b: Vec<String> = all.iter().skip(1).step_by(2).cloned().collect();
                    a.push("192.168.4.98".into());
                    b.push("192.168.4.99".into());
                    instance("VI_1", 51, a, "d1", self.opts(0));
                    instance("VI_2", 52, b, "d2", self.opts(1));
                }
                _ => instance("VI_1", 51, all, "d1", self.opts(0)),
            }
            if nat {
                // The real servers' gateway floats with the VIPs (a sync group).
                instance("VI_GW", 53, vec!["192.168.2.254".into()], "d1", self.opts(0));
            }
        }
        match self.storage {
            Storage::None => {}
            s => {
                let _ = writeln!(
                    y,
                    "storage: {{ host: st, export: /srv/share, mount: /var/www/html/shared, sync: {} }}",
                    lower(s)
                );
            }
        }
        y.push_str("services:\n");
        for (i, s) in self.services.iter().enumerate() {
            let _ = writeln!(y, "  - name: s{}-{}", i + 1, lower(s.kind).replace('_', "-"));
            let _ = writeln!(y, "    vip: {}", vip(i));
            let mut rs_port = "";
            match s.kind {
                Kind::Port => y.push_str("    port: 80\n    scheduler: wlc\n"),
                Kind::PortMap => {
                    y.push_str("    port: 8080\n    scheduler: rr\n");
                    rs_port = ", port: 80";
                }
                Kind::Fwmark => {
                    let _ = writeln!(y, "    fwmark: {}\n    ports: [80, 443]\n    scheduler: rr", 10 + i);
                }
                Kind::Udp => y.push_str("    port: 53\n    protocol: udp\n    scheduler: rr\n"),
                Kind::UdpOnePacket => {
                    y.push_str("    port: 5353\n    protocol: udp\n    one_packet: true\n    scheduler: rr\n")
                }
                Kind::Persist => y.push_str("    port: 80\n    scheduler: rr\n    persistence: 300\n"),
                Kind::PersistMask => y.push_str(
                    "    port: 80\n    scheduler: rr\n    persistence: 300\n    persistence_netmask: 255.255.255.0\n",
                ),
                Kind::Pcc => y.push_str("    port: 0\n    scheduler: rr\n    persistence: 300\n"),
            }
            if ha || s.check != Check::None {
                // Every 6 s: with seven services, two real servers and two
                // directors, checks every 2 s kept an emulated machine busy.
                y.push_str("    delay_loop: 6\n");
            }
            match (s.check, s.digest) {
                (Check::None, true) => y.push_str(
                    "    health_check: { type: tcp, digest: eff5bc1ef8ec9d03e640fc4370f5eacd }\n",
                ),
                (Check::None, false) => {}
                (Check::Http, true) => y.push_str(
                    "    health_check: { type: http, path: /lvslab-health.txt, digest: eff5bc1ef8ec9d03e640fc4370f5eacd, connect_timeout: 2, retry: 1, delay_before_retry: 1 }\n",
                ),
                (Check::Http, false) => y.push_str(
                    "    health_check: { type: http, path: /, status_code: 200, connect_timeout: 2, retry: 1, delay_before_retry: 1 }\n",
                ),
                (Check::Tcp, d) => {
                    let digest = if d { ", digest: eff5bc1ef8ec9d03e640fc4370f5eacd" } else { "" };
                    let _ = writeln!(
                        y,
                        "    health_check: {{ type: tcp, connect_timeout: 2, retry: 1, delay_before_retry: 1{digest} }}"
                    );
                }
                (Check::Misc, d) => {
                    let digest = if d { ", digest: eff5bc1ef8ec9d03e640fc4370f5eacd" } else { "" };
                    let _ = writeln!(y, "    health_check: {{ type: misc, script: /bin/true{digest} }}");
                }
            }
            if s.sorry {
                y.push_str("    sorry_server: { host: st }\n");
            }
            if s.quorum {
                y.push_str("    quorum: 1\n");
            }
            if s.inhibit {
                y.push_str("    inhibit_on_failure: true\n");
            }
            let _ = writeln!(
                y,
                "    real_servers: [{{ host: web1, weight: 1{rs_port} }}, {{ host: web2, weight: 1{rs_port} }}]"
            );
        }
        y
    }
}

/// What validation must refuse: the generator's own statement of the rules,
/// cross-checked against `validate` for every combination.
fn expected_refusal(l: &Lab) -> Option<&'static str> {
    let ha = l.ha != Ha::None;
    if [l.opts(0), l.opts(1)].iter().any(|(_, np, pd)| *np && *pd) {
        return Some("nopreempt with preempt_delay");
    }
    for s in &l.services {
        if s.kind == Kind::PortMap && l.mode != Mode::Nat {
            return Some("port mapping outside NAT");
        }
        if s.kind == Kind::UdpOnePacket && l.mode == Mode::Nat {
            return Some("one_packet in NAT");
        }
        if !ha && (s.check != Check::None || s.sorry || s.quorum || s.inhibit || s.digest) {
            return Some("keepalived settings without keepalived");
        }
        if s.digest && s.check != Check::Http {
            return Some("digest without an http check");
        }
        if matches!(s.kind, Kind::Udp | Kind::UdpOnePacket) && matches!(s.check, Check::Http | Check::Tcp) {
            return Some("a TCP health check on a UDP service");
        }
    }
    None
}

fn keepalived_conf_and_scripts(plan: &lvslab::plan::Plan) -> (Vec<String>, Vec<String>) {
    let mut confs = Vec::new();
    for hp in plan.phases.iter().flat_map(|p| &p.hosts) {
        for step in &hp.steps {
            if let lvslab::plan::Resource::File { path, content, .. } = &step.resource
                && path.ends_with("keepalived.conf")
            {
                confs.push(plan.resolve_secrets(content));
            }
        }
    }
    let scripts = lvslab::report::plan_sh(plan).into_iter().map(|(_, s)| s).collect();
    (confs, scripts)
}

fn hash(s: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    s.len().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Run `keepalived -t` on every file in `dir` (in a network namespace with
/// the directors' interfaces) and `sh -n` on every script, two at a time.
/// Returns the failures, each with the tool's message.
fn check_files(confs: &Path, scripts: &Path) -> Vec<String> {
    let probe = Command::new("keepalived").arg("--version").output();
    assert!(
        probe.is_ok(),
        "keepalived is not installed: run `apt-get install keepalived` (.ci/run does)"
    );
    let run = |script: &str, dir: &Path| {
        let out = Command::new("unshare")
            .args(["--net", "sh", "-c", script, "sh"])
            .arg(dir)
            .output()
            .expect("unshare runs (as root)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // keepalived -t also checks that the interfaces exist.
    let ka = run(
        "set -e; for i in 0 1 2 3; do ip link add \"eth$i\" type veth peer name \"peer$i\"; ip link set \"eth$i\" up; done; \
         cd \"$1\"; ls | xargs -r -P 2 -n 40 sh -c 'for f; do keepalived -t -f \"$f\" >/dev/null 2>\"$f.err\" || { echo \"FAIL $f: $(cat \"$f.err\")\"; }; done' _",
        confs,
    );
    let sh = run(
        "cd \"$1\"; ls | xargs -r -P 2 -n 200 sh -c 'for f; do sh -n \"$f\" 2>/dev/null || echo \"FAIL $f: $(sh -n \"$f\" 2>&1)\"; done' _",
        scripts,
    );
    ka.lines().chain(sh.lines()).map(String::from).collect()
}

/// Every combination of one service's values, as a one-service lab.
fn combinations() -> Vec<Lab> {
    let mut out = Vec::new();
    for mode in MODES {
        for kind in KINDS {
            for ha in HAS {
                for sorry in [false, true] {
                    for check in CHECKS {
                        for storage in STORAGES {
                            for option in std::iter::once("none").chain(OPTIONS) {
                                let on = |o: &str| option == o;
                                // The instance options need an `ha:` to be written in.
                                if ha == Ha::None && ["unicast", "nopreempt", "preempt_delay"].contains(&option) {
                                    continue;
                                }
                                out.push(Lab {
                                    name: "m".into(),
                                    mode,
                                    ha,
                                    storage,
                                    unicast: on("unicast"),
                                    nopreempt: on("nopreempt"),
                                    preempt_delay: on("preempt_delay"),
                                    second: None,
                                    services: vec![Svc {
                                        kind,
                                        check,
                                        sorry,
                                        quorum: on("quorum"),
                                        inhibit: on("inhibit"),
                                        digest: on("digest"),
                                    }],
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// What validating and compiling one combination gave.
enum Outcome {
    Refused(String),
    Compiled { confs: Vec<String>, scripts: Vec<String> },
    Wrong(String),
}

fn judge(lab: &Lab) -> Outcome {
    let text = lab.yaml();
    match (lvslab::load_str("matrix.yaml", text.clone()), expected_refusal(lab)) {
        (Err(d), Some(why)) => {
            let msg = d.0.iter().find(|x| x.is_error()).map(|x| x.message.clone());
            Outcome::Refused(format!("{why}: {}", msg.unwrap_or_default()))
        }
        (Err(d), None) => Outcome::Wrong(format!("refused, but should work:\n{text}\n{d}")),
        (Ok(_), Some(why)) => Outcome::Wrong(format!("validates, but cannot work ({why}):\n{text}")),
        (Ok(l), None) => match lvslab::compile::compile(&l.topology) {
            Ok(plan) => {
                // What `up` records of this plan, `down` must accept back (issue 16).
                let refused = plan
                    .phases
                    .iter()
                    .flat_map(|p| p.hosts.iter())
                    .flat_map(|h| h.steps.iter())
                    .find_map(|s| s.resource.check_recorded().err());
                if let Some(e) = refused {
                    return Outcome::Wrong(format!("a planned resource fails the record check: {e}\n{text}"));
                }
                let (confs, scripts) = keepalived_conf_and_scripts(&plan);
                Outcome::Compiled { confs, scripts }
            }
            Err(e) => Outcome::Wrong(format!("validates but does not compile: {e}\n{text}")),
        },
    }
}

#[test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
fn every_combination_is_refused_or_renders_configs_the_tools_accept() {
    let started = Instant::now();
    let confs = tempfile::tempdir().unwrap();
    let scripts = tempfile::tempdir().unwrap();
    let labs = combinations();
    // Both cores: each thread judges every other combination.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    let judged: Vec<(usize, Outcome)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let labs = &labs;
                scope.spawn(move || {
                    (w..labs.len())
                        .step_by(workers)
                        .map(|i| (i, judge(&labs[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker panicked"))
            .collect()
    });
    let mut seen_conf = BTreeSet::new();
    let mut seen_script = BTreeSet::new();
    let mut valid = 0;
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong: Vec<String> = Vec::new();
    let mut example_of: BTreeMap<String, usize> = BTreeMap::new();
    for (i, outcome) in judged {
        match outcome {
            Outcome::Refused(why) => *refused.entry(why).or_default() += 1,
            Outcome::Wrong(w) => wrong.push(w),
            Outcome::Compiled { confs: ka, scripts: sh } => {
                valid += 1;
                let mut keep = |c: &String, dir: &Path, seen: &mut BTreeSet<String>| {
                    let h = hash(c);
                    if seen.insert(h.clone()) {
                        std::fs::write(dir.join(&h), c).unwrap();
                        example_of.insert(h, i);
                    }
                };
                for c in &ka {
                    keep(c, confs.path(), &mut seen_conf);
                }
                for c in &sh {
                    keep(c, scripts.path(), &mut seen_script);
                }
            }
        }
    }
    let compiled = started.elapsed().as_secs_f64();
    let failures = check_files(confs.path(), scripts.path());
    // One example of each kind of failure (the message without the file name).
    let mut kinds: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for f in &failures {
        let (h, msg) = f.trim_start_matches("FAIL ").split_once(':').unwrap_or(("", f));
        let e = kinds.entry(msg.trim().to_string()).or_insert((0, h.to_string()));
        e.0 += 1;
    }
    for (msg, (n, h)) in &kinds {
        let example = example_of.get(h).map(|i| labs[*i].yaml()).unwrap_or_default();
        wrong.push(format!("{n}× {msg}\n  for example:\n{example}"));
    }
    let refused_total: usize = refused.values().sum();
    let mut log = format!(
        "matrix: {} combinations (mode × kind × ha × sorry × check × storage × option): {valid} validate, {refused_total} refused\n\
         matrix:   (each refusal: the rule the combination breaks, then validate's first error for it)\n",
        labs.len()
    );
    for (why, n) in &refused {
        let _ = writeln!(log, "matrix:   refused {n}× {why}");
    }
    let _ = writeln!(
        log,
        "matrix: {} distinct keepalived.conf passed keepalived -t, {} distinct per-host scripts passed sh -n ({} failed) in {:.0} s ({compiled:.0} s to validate and compile)",
        seen_conf.len(),
        seen_script.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    print!("{log}");
    // Kept for the CI log (.ci/run prints it).
    let _ = std::fs::write(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/matrix.log"),
        &log,
    );
    assert!(wrong.is_empty(), "{} problem(s):\n{}", wrong.len(), wrong.join("\n\n"));
    assert!(
        valid > 1000 && refused_total > 1000,
        "{valid} valid, {refused_total} refused"
    );
}

/// The covering labs: every valid pair of values appears in one of them.
fn covering_labs() -> Vec<Lab> {
    // Lab level: mode × ha as a 3 × 3 square, storage in a Latin square over
    // it (every mode × storage and ha × storage pair once). The VRRP instance
    // options: nopreempt and preempt_delay exclude each other, and in any
    // such square the two HA labs of a mode, like the two of a storage, are
    // one pair and one dual-master lab; so each dual-master lab's two
    // instances take nopreempt and preempt_delay (unicast on one of them),
    // and the pair labs take unicast with nopreempt, preempt_delay, nothing.
    let pair_opts = [(true, true, false), (false, false, true), (false, false, false)];
    let dual_opts = [
        ((true, true, false), (false, false, true)),
        ((false, true, false), (true, false, true)),
        ((false, false, true), (true, true, false)),
    ];
    let mut labs = Vec::new();
    for (mi, mode) in MODES.iter().enumerate() {
        for (hi, ha) in HAS.iter().enumerate() {
            let ((unicast, nopreempt, preempt_delay), second) = match ha {
                Ha::None => ((false, false, false), None),
                Ha::Pair => (pair_opts[mi], None),
                Ha::Dual => (dual_opts[mi].0, Some(dual_opts[mi].1)),
            };
            labs.push(Lab {
                name: format!("mx-{}-{}", lower(*mode), lower(*ha)),
                mode: *mode,
                ha: *ha,
                storage: STORAGES[(mi + hi) % 3],
                unicast,
                nopreempt,
                preempt_delay,
                second,
                services: Vec::new(),
            });
        }
    }
    // Service level: each lab runs every kind its mode allows; keepalived's
    // settings are chosen greedily to cover the pairs not yet covered.
    let mut covered: BTreeSet<Pair> = BTreeSet::new();
    let settings: Vec<(Check, bool, bool, bool, bool)> = CHECKS
        .iter()
        .flat_map(|c| {
            let c = *c;
            (0..16).map(move |b| (c, b & 1 != 0, b & 2 != 0, b & 4 != 0, b & 8 != 0))
        })
        .collect();
    for lab in &mut labs {
        for kind in KINDS {
            let base = Svc {
                kind,
                check: Check::None,
                sorry: false,
                quorum: false,
                inhibit: false,
                digest: false,
            };
            let probe = Lab {
                services: vec![base.clone()],
                ..lab.clone()
            };
            if expected_refusal(&probe).is_some() {
                continue;
            }
            let best = settings
                .iter()
                .map(|(check, sorry, quorum, inhibit, digest)| Svc {
                    check: *check,
                    sorry: *sorry,
                    quorum: *quorum,
                    inhibit: *inhibit,
                    digest: *digest,
                    ..base.clone()
                })
                .filter(|s| {
                    expected_refusal(&Lab {
                        services: vec![s.clone()],
                        ..lab.clone()
                    })
                    .is_none()
                })
                .max_by_key(|s| pairs(&lab.row(lab.services.len(), s)).difference(&covered).count())
                .unwrap_or(base);
            covered.extend(pairs(&lab.row(lab.services.len(), &best)));
            lab.services.push(best);
        }
    }
    // Pairs still missing get a service of their own in a lab that can hold it.
    for pair in valid_pairs() {
        if covered.contains(pair) {
            continue;
        }
        'labs: for lab in &mut labs {
            for kind in KINDS {
                for (check, sorry, quorum, inhibit, digest) in &settings {
                    let s = Svc {
                        kind,
                        check: *check,
                        sorry: *sorry,
                        quorum: *quorum,
                        inhibit: *inhibit,
                        digest: *digest,
                    };
                    let row = pairs(&lab.row(lab.services.len(), &s));
                    if row.contains(pair)
                        && expected_refusal(&Lab {
                            services: vec![s.clone()],
                            ..lab.clone()
                        })
                        .is_none()
                    {
                        covered.extend(row);
                        lab.services.push(s);
                        break 'labs;
                    }
                }
            }
        }
    }
    labs
}

/// The pairs of values of one row.
fn pairs(row: &[Value]) -> BTreeSet<Pair> {
    let mut out = BTreeSet::new();
    for (i, a) in row.iter().enumerate() {
        for b in &row[i + 1..] {
            out.insert((*a, *b));
        }
    }
    out
}

/// Every pair of values that some valid single-service lab has.
fn valid_pairs() -> &'static BTreeSet<Pair> {
    static PAIRS: std::sync::OnceLock<BTreeSet<Pair>> = std::sync::OnceLock::new();
    PAIRS.get_or_init(|| {
        let mut out = BTreeSet::new();
        for mode in MODES {
            for ha in HAS {
                for storage in STORAGES {
                    for bits in 0..8u8 {
                        let (unicast, nopreempt, preempt_delay) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
                        if ha == Ha::None && bits != 0 {
                            continue;
                        }
                        for kind in KINDS {
                            for check in CHECKS {
                                for flags in 0..16u8 {
                                    let s = Svc {
                                        kind,
                                        check,
                                        sorry: flags & 1 != 0,
                                        quorum: flags & 2 != 0,
                                        inhibit: flags & 4 != 0,
                                        digest: flags & 8 != 0,
                                    };
                                    let lab = Lab {
                                        name: String::new(),
                                        mode,
                                        ha,
                                        storage,
                                        unicast,
                                        nopreempt,
                                        preempt_delay,
                                        second: None,
                                        services: vec![s.clone()],
                                    };
                                    if expected_refusal(&lab).is_none() {
                                        out.extend(pairs(&lab.row(0, &s)));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    })
}

fn matrix_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/matrix")
}

#[test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
fn covering_labs_are_pairwise_and_checked_in() {
    let labs = covering_labs();
    let want = valid_pairs();
    let mut covered = BTreeSet::new();
    for l in &labs {
        for (i, s) in l.services.iter().enumerate() {
            covered.extend(pairs(&l.row(i, s)));
        }
    }
    let missing: Vec<_> = want.difference(&covered).collect();
    assert!(missing.is_empty(), "pairs no covering lab has: {missing:?}");
    // Every covering lab validates and compiles, and the tools accept what
    // it renders (pairs of options meet here, which one-option combinations
    // never show: keepalived refuses nopreempt with preempt_delay).
    let confs = tempfile::tempdir().unwrap();
    let scripts = tempfile::tempdir().unwrap();
    for l in &labs {
        let text = l.yaml();
        match lvslab::load_str(&format!("{}.yaml", l.name), text.clone()) {
            Ok(loaded) => {
                let plan = lvslab::compile::compile(&loaded.topology).unwrap_or_else(|e| panic!("{}: {e}", l.name));
                let (ka, sh) = keepalived_conf_and_scripts(&plan);
                for (i, c) in ka.iter().enumerate() {
                    std::fs::write(confs.path().join(format!("{}-{i}", l.name)), c).unwrap();
                }
                for (i, c) in sh.iter().enumerate() {
                    std::fs::write(scripts.path().join(format!("{}-{i}", l.name)), c).unwrap();
                }
            }
            Err(d) => panic!("covering lab {} does not validate:\n{d}\n{text}", l.name),
        }
    }
    let failures = check_files(confs.path(), scripts.path());
    assert!(failures.is_empty(), "{failures:#?}");
    let services: usize = labs.iter().map(|l| l.services.len()).sum();
    let line = format!(
        "matrix: {} covering labs (tests/matrix/) with {services} services cover all {} valid pairs of values; the kernel lab brings each up and verifies it\n",
        labs.len(),
        want.len()
    );
    print!("{line}");
    let _ = std::fs::write(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/matrix-covering.log"),
        &line,
    );
    let dir = matrix_dir();
    if std::env::var_os("LVSLAB_UPDATE_MATRIX").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for l in &labs {
            std::fs::write(dir.join(format!("{}.yaml", l.name)), l.yaml()).unwrap();
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: LVSLAB_UPDATE_MATRIX=1 cargo test --test matrix",
                dir.display()
            )
        })
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = labs.iter().map(|l| format!("{}.yaml", l.name)).collect();
    names.sort();
    assert_eq!(
        on_disk, names,
        "tests/matrix/ is stale: LVSLAB_UPDATE_MATRIX=1 cargo test --test matrix"
    );
    for l in &labs {
        let file = dir.join(format!("{}.yaml", l.name));
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            l.yaml(),
            "{} is stale: LVSLAB_UPDATE_MATRIX=1 cargo test --test matrix",
            file.display()
        );
    }
}
