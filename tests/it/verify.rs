//! `verify`'s decisions on evidence recorded from real labs (kernel lab,
//! `lvslab verify --save-evidence`): fresh NAT/DR/TUN labs pass, each
//! breakage made by hand fails exactly the checks that should catch it, and
//! recorded evidence edited in one place fails the rule about that place.
//! Reports: text snapshot, JUnit validated against tests/junit/junit.xsd.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use lvslab::verify::{Check, Evidence, Out, Report, UserCheckRun, Verdict, decide};

use crate::repo;

fn evidence(name: &str) -> Evidence {
    let path = repo().join("tests/verify/evidence").join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn topology(text: &str) -> lvslab::model::Topology {
    match lvslab::load_str("test.yaml", text.to_string()) {
        Ok(l) => l.topology,
        Err(d) => panic!("{d}"),
    }
}

fn shipped(mode: &str) -> String {
    std::fs::read_to_string(repo().join(format!("topologies/{mode}.yaml"))).unwrap()
}

fn run(topo_text: &str, ev: &Evidence) -> Vec<Check> {
    let t = topology(topo_text);
    let plan = lvslab::compile::compile(&t).unwrap();
    decide(&t, &plan, ev)
}

fn failed(checks: &[Check]) -> BTreeSet<String> {
    checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| c.id.clone())
        .collect()
}

fn get<'a>(checks: &'a [Check], id: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id}: {:?}", checks.iter().map(|c| &c.id).collect::<Vec<_>>()))
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Edit one probe's output in recorded evidence.
fn edit(ev: &mut Evidence, after: bool, host: &str, probe: &str, f: impl FnOnce(&mut Out)) {
    let round = if after { &mut ev.after } else { &mut ev.before };
    let out = round
        .get_mut(host)
        .and_then(|m| m.get_mut(probe))
        .unwrap_or_else(|| panic!("no probe {probe} on {host}"));
    f(out);
}

#[test]
fn fresh_labs_pass_every_check() {
    for (mode, n) in [("nat", 7), ("dr", 8), ("tun", 8)] {
        let checks = run(&shipped(mode), &evidence(&format!("{mode}-fresh")));
        assert_eq!(checks.len(), n, "{mode}: {checks:#?}");
        for c in &checks {
            assert_eq!(
                c.verdict,
                Verdict::Pass,
                "{mode}: {} {}: {}",
                c.id,
                c.message,
                c.evidence.join(" | ")
            );
        }
    }
    let nat = run(&shipped("nat"), &evidence("nat-fresh"));
    let d = get(&nat, "distribution/http");
    let shares: Vec<(&str, u32, Option<u64>)> = d
        .shares
        .iter()
        .map(|s| (s.host.as_str(), s.answered, s.ipvs_conns))
        .collect();
    assert_eq!(
        shares,
        [("web1", 20, Some(20)), ("web2", 40, Some(40))],
        "wrr 1:2 over 60 requests"
    );
}

#[test]
fn each_recorded_breakage_fails_the_checks_that_catch_it() {
    // (topology, recorded evidence, checks that must fail, words in the report)
    let cases: [(&str, &str, &[&str], &str); 7] = [
        (
            "nat",
            "nat-weight",
            &["ipvs/director", "distribution/http"],
            "real server 192.168.2.100:80 in TCP 192.168.4.5:80: weight 5 (want 1)",
        ),
        (
            "nat",
            "nat-route",
            &["path/http", "distribution/http"],
            "web1 has no route back to the client",
        ),
        (
            "nat",
            "nat-web-stopped",
            &["distribution/http", "health/http"],
            "but only 0 got its page",
        ),
        ("dr", "dr-arp", &["arp/http", "audit/web1"], "answers ARP for the VIP"),
        (
            "dr",
            "dr-web-stopped",
            &["distribution/http", "health/http"],
            "web2 (weight 1) answered no request",
        ),
        (
            "tun",
            "tun-weight-0",
            &["ipvs/director", "distribution/http"],
            "real server 192.168.6.100:80 in TCP 192.168.4.253:80: weight 0 (want 1)",
        ),
        (
            "tun",
            "tun-web-stopped",
            &["distribution/http", "health/http"],
            "but only 0 got its page",
        ),
    ];
    for (mode, fixture, want, words) in cases {
        let checks = run(&shipped(mode), &evidence(fixture));
        assert_eq!(failed(&checks), set(want), "{fixture}: {checks:#?}");
        let messages: Vec<&str> = checks.iter().map(|c| c.message.as_str()).collect();
        assert!(
            messages.iter().any(|m| m.contains(words)),
            "{fixture}: no message says {words:?}: {messages:#?}"
        );
    }
}

#[test]
fn nat_path_rules() {
    let base = evidence("nat-fresh");
    // A real server whose way back to the client is not the director.
    let mut ev = base.clone();
    edit(&mut ev, false, "web2", "route", |o| {
        o.out = o.out.replace("via 192.168.2.5", "via 192.168.2.1");
    });
    let c = run(&shipped("nat"), &ev);
    assert_eq!(failed(&c), set(&["path/http"]));
    assert!(
        get(&c, "path/http")
            .message
            .contains("web2 routes replies to the client via 192.168.2.1, not via the director (192.168.2.5)")
    );
    // One that reaches the client directly (it would answer from the wrong address).
    let mut ev = base.clone();
    edit(&mut ev, false, "web1", "route", |o| {
        o.out = o.out.replace("via 192.168.2.5 ", "")
    });
    let c = run(&shipped("nat"), &ev);
    assert!(
        get(&c, "path/http")
            .message
            .contains("web1 reaches the client directly"),
        "{c:#?}"
    );
    // Replies that never came back through the director.
    let mut ev = base.clone();
    let before = ev.before["director"]["ipvs-stats"].out.clone();
    edit(&mut ev, true, "director", "ipvs-stats", |o| o.out = before);
    let c = run(&shipped("nat"), &ev);
    assert!(
        get(&c, "path/http")
            .message
            .contains("no request packet went through the director")
    );
    assert!(get(&c, "distribution/http").message.contains("traffic bypassed IPVS"));
    // Both checks show the raw counters behind their deltas, and gather would
    // read the counters again for this service (they may only be late).
    let t = topology(&shipped("nat"));
    assert_eq!(
        lvslab::verify::decide::counters_behind(&t, &ev),
        vec!["http".to_string()]
    );
    assert!(lvslab::verify::decide::counters_behind(&t, &base).is_empty());
    for id in ["path/http", "distribution/http"] {
        let raw: Vec<&String> = get(&c, id)
            .evidence
            .iter()
            .filter(|e| e.starts_with("director: TCP 192.168.4.5:80 before the traffic Conns "))
            .collect();
        assert_eq!(raw.len(), 1, "{id}: {:#?}", get(&c, id).evidence);
    }
    ev.stats_rereads = 4;
    let c = run(&shipped("nat"), &ev);
    assert!(
        get(&c, "path/http")
            .evidence
            .iter()
            .any(|e| e.contains("read 4 more time(s) after the traffic"))
    );
    // Forwarding off.
    let mut ev = base;
    edit(&mut ev, false, "director", "sysctl", |o| {
        o.out = o.out.replace("ip_forward:1", "ip_forward:0");
    });
    let c = run(&shipped("nat"), &ev);
    assert_eq!(failed(&c), set(&["audit/director"]));
    assert!(
        get(&c, "audit/director")
            .message
            .contains("net.ipv4.ip_forward = 0 (want 1)")
    );
}

#[test]
fn dr_rules() {
    let base = evidence("dr-fresh");
    // Replies through the director.
    let mut ev = base.clone();
    edit(&mut ev, true, "director", "ipvs-stats", |o| {
        let mut lines: Vec<String> = o.out.lines().map(String::from).collect();
        for l in lines.iter_mut().filter(|l| l.starts_with("TCP")) {
            let mut w: Vec<String> = l.split_whitespace().map(String::from).collect();
            w[4] = "77".into();
            *l = w.join(" ");
        }
        o.out = lines.join("\n");
    });
    let c = run(&shipped("dr"), &ev);
    assert_eq!(failed(&c), set(&["path/http"]));
    assert!(
        get(&c, "path/http")
            .message
            .contains("77 reply packet(s) went back through the director")
    );
    // The VIP missing from a real server's lo.
    let mut ev = base.clone();
    edit(&mut ev, false, "web2", "addr", |o| {
        o.out = o
            .out
            .lines()
            .filter(|l| !l.contains("192.168.4.253/32"))
            .collect::<Vec<_>>()
            .join("\n");
    });
    let c = run(&shipped("dr"), &ev);
    assert_eq!(failed(&c), set(&["audit/web2"]));
    assert!(
        get(&c, "audit/web2")
            .message
            .contains("VIP 192.168.4.253/32 is not on lo")
    );
    // arp_announce left at 0 on the interface and on all.
    let mut ev = base.clone();
    edit(&mut ev, false, "web1", "sysctl", |o| {
        o.out = o.out.replace("conf/all/arp_announce:2", "conf/all/arp_announce:0");
    });
    let c = run(&shipped("dr"), &ev);
    assert!(
        get(&c, "audit/web1")
            .message
            .contains("arp_announce on eth0 is effectively 0 (want 2)"),
        "{c:#?}"
    );
    // The client's neighbour entry points at a real server.
    let mut ev = base.clone();
    let web1_mac = lvslab::verify::parse::links(&ev.before["web1"]["link"].out)
        .into_iter()
        .find(|l| l.name == "eth0")
        .and_then(|l| l.mac)
        .unwrap();
    edit(&mut ev, true, "client", "neigh:192.168.4.253", |o| {
        o.out = format!("192.168.4.253 dev eth0 lladdr {web1_mac} REACHABLE\n");
    });
    let c = run(&shipped("dr"), &ev);
    assert_eq!(failed(&c), set(&["arp/http"]));
    assert!(
        get(&c, "arp/http")
            .message
            .contains(&format!("sends traffic for the VIP to {web1_mac}, which is web1 eth0"))
    );
    // No arping on the client: the neighbour entry alone decides, and says so.
    let mut ev = base.clone();
    edit(&mut ev, true, "client", "arping:192.168.4.253", |o| {
        *o = Out {
            out: "no arping on this host\n".into(),
            rc: 127,
        }
    });
    let c = run(&shipped("dr"), &ev);
    assert!(failed(&c).is_empty());
    assert!(get(&c, "arp/http").evidence.iter().any(|e| e.contains("no arping")));
    // Nobody holds the VIP.
    let mut ev = base;
    edit(&mut ev, false, "director", "addr", |o| {
        o.out = o
            .out
            .lines()
            .filter(|l| !l.contains("192.168.4.253"))
            .collect::<Vec<_>>()
            .join("\n");
    });
    let c = run(&shipped("dr"), &ev);
    assert_eq!(failed(&c), set(&["arp/http", "audit/director"]));
    assert!(
        get(&c, "arp/http")
            .message
            .contains("no director holds the VIP 192.168.4.253")
    );
}

#[test]
fn tun_rules() {
    let base = evidence("tun-fresh");
    let mut ev = base.clone();
    edit(&mut ev, false, "web2", "link", |o| {
        o.out = o.out.replace("<NOARP,UP,LOWER_UP>", "<NOARP>")
    });
    let c = run(&shipped("tun"), &ev);
    assert_eq!(failed(&c), set(&["audit/web2"]));
    assert!(get(&c, "audit/web2").message.contains("tunl0 is down"));
    let mut ev = base;
    edit(&mut ev, false, "web1", "sysctl", |o| {
        o.out = o.out.replace("conf/all/rp_filter:0", "conf/all/rp_filter:1");
    });
    let c = run(&shipped("tun"), &ev);
    assert_eq!(failed(&c), set(&["audit/web1"]));
    assert!(
        get(&c, "audit/web1")
            .message
            .contains("rp_filter on tunl0 is effectively 1 (want 0)")
    );
}

#[test]
fn distribution_rules() {
    let base = evidence("nat-fresh");
    // An answer that is no real server's page.
    let mut ev = base.clone();
    let tr = ev.traffic.get_mut("http").unwrap();
    let web2 = tr.answers.keys().find(|b| b.contains("web2")).unwrap().clone();
    *tr.answers.get_mut(&web2).unwrap() -= 1;
    tr.answers.insert("<h1>It works!</h1>".into(), 1);
    let c = run(&shipped("nat"), &ev);
    assert!(
        get(&c, "distribution/http")
            .message
            .contains("1 answer(s) were not a real server's page"),
        "{c:#?}"
    );
    // Weight 0 in the topology, yet it answered (and the live table differs).
    let zero = shipped("nat").replace("{ host: web1, weight: 1 }", "{ host: web1, weight: 0 }");
    let c = run(&zero, &base);
    assert!(
        get(&c, "distribution/http")
            .message
            .contains("web1 has weight 0 but answered 20 request(s)")
    );
    assert_eq!(failed(&c), set(&["distribution/http", "ipvs/director"]));
    // Persistence: one client's requests spread over two real servers.
    let sticky = shipped("nat").replace("scheduler: wrr", "scheduler: wrr\n    persistence: 300");
    let c = run(&sticky, &base);
    assert!(
        get(&c, "stickiness/http")
            .message
            .contains("spread over 2 real servers")
    );
    assert!(failed(&c).contains("distribution/http"));
    // The tolerance is the topology's.
    let strict = shipped("nat").replace("tolerance: 0.1", "tolerance: 0.0");
    assert!(
        failed(&run(&strict, &base)).is_empty(),
        "exactly 20/40 meets a zero tolerance"
    );
}

#[test]
fn ipvs_table_and_reachability_rules() {
    let mut ev = evidence("nat-fresh");
    edit(&mut ev, false, "director", "ipvs-save", |o| {
        o.out.push_str("-A -t 10.0.0.1:80 -s rr\n")
    });
    let c = run(&shipped("nat"), &ev);
    assert_eq!(failed(&c), set(&["ipvs/director"]));
    assert!(
        get(&c, "ipvs/director")
            .message
            .contains("undeclared service TCP 10.0.0.1:80 (-s rr)")
    );

    let mut ev = evidence("nat-fresh");
    ev.unreachable.insert("web1".into(), "connection refused".into());
    let c = run(&shipped("nat"), &ev);
    assert!(
        get(&c, "audit/web1")
            .message
            .contains("web1 could not be reached: connection refused")
    );
    assert!(failed(&c).contains("path/http"));
}

#[test]
fn udp_services_are_judged_by_their_replies() {
    // The DR lab's service as UDP 53: the responders answer with host names.
    let udp = shipped("dr").replace("    port: 80\n", "    port: 53\n    protocol: udp\n");
    let mut ev = evidence("dr-fresh");
    for after in [false, true] {
        for probe in ["ipvs-stats", "ipvs-save"] {
            if !after || probe == "ipvs-stats" {
                edit(&mut ev, after, "director", probe, |o| {
                    o.out = o
                        .out
                        .replace("TCP  192.168.4.253:80 ", "UDP  192.168.4.253:53 ")
                        .replace("-t 192.168.4.253:80", "-u 192.168.4.253:53")
                        .replace(":80 ", ":53 ")
                        .replace(":80\n", ":53\n");
                });
            }
        }
    }
    let tr = ev.traffic.get_mut("http").unwrap();
    tr.url = "udp://192.168.4.253:53".into();
    tr.answers = [("web1".to_string(), 30), ("web2".to_string(), 30)].into();
    let c = run(&udp, &ev);
    let d = get(&c, "distribution/http");
    assert_eq!(d.verdict, Verdict::Pass, "{d:#?}");
    assert!(
        d.evidence
            .iter()
            .any(|e| e.contains("60 requests to udp://192.168.4.253:53")),
        "{d:#?}"
    );
    assert_eq!(get(&c, "ipvs/director").verdict, Verdict::Pass);
    let h = get(&c, "health/http");
    assert_eq!(h.verdict, Verdict::Skip, "UDP health is not claimed");
    assert!(h.message.starts_with("not checked"));

    // One real server silent: rr's shares fail, and it is named.
    ev.traffic.get_mut("http").unwrap().answers = [("web1".to_string(), 60)].into();
    let c = run(&udp, &ev);
    let d = get(&c, "distribution/http");
    assert_eq!(d.verdict, Verdict::Fail);
    assert!(d.message.contains("web2 (weight 1) answered no request"), "{d:#?}");

    // A reply that is no real server's name.
    ev.traffic.get_mut("http").unwrap().answers = [("web1".to_string(), 30), ("intruder".to_string(), 30)].into();
    let d = get(&run(&udp, &ev), "distribution/http").clone();
    assert!(
        d.message.contains("30 answer(s) were not a real server's page"),
        "{d:#?}"
    );
}

fn run_udp_script(script: &str, path: Option<&std::path::Path>) -> lvslab::verify::Traffic {
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(script);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let out = cmd.output().unwrap();
    lvslab::verify::gather::parse_traffic("udp://x", 3, &String::from_utf8_lossy(&out.stdout))
}

#[test]
fn udp_traffic_script_sends_one_datagram_per_new_socket() {
    let s = lvslab::verify::gather::traffic_script("udp://192.168.4.214:5353", 3);
    assert!(s.contains("/dev/udp/192.168.4.214/5353"), "{s}");
    assert!(s.contains("socat -t 3 -T 3 - UDP4:192.168.4.214:5353"), "{s}");
    crate::assert_sh_parses("udp traffic", &s);
    // Run it against a responder on loopback that answers after a second, as
    // a loaded lab does. socat's default `-t 0.5` gave up on such replies at
    // both ends (the real servers' responder closed before its answer, the
    // client stopped listening): correct labs failed verify with "lost"
    // datagrams. The responder is the real servers' own (`-t 5`).
    let port = crate::ssh::free_port();
    let mut responder = std::process::Command::new("socat")
        .arg("-t")
        .arg("5")
        .arg(format!("UDP4-RECVFROM:{port},bind=127.0.0.1,fork"))
        .arg("SYSTEM:read -r line; sleep 1; echo web9")
        .spawn()
        .expect("socat is installed (.ci/run installs it)");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let script = lvslab::verify::gather::traffic_script(&format!("udp://127.0.0.1:{port}"), 3);
    let started = std::time::Instant::now();
    let t = run_udp_script(&script, None);
    assert_eq!(t.answers.get("web9"), Some(&3), "{t:?}");
    // With bash each datagram takes as long as its reply, not a fixed wait.
    assert!(started.elapsed().as_secs_f64() < 6.0, "{:?}", started.elapsed());
    // Without bash (only socat, timeout and dd on PATH): the socat path.
    let dir = tempfile::tempdir().unwrap();
    for prog in ["socat", "timeout", "dd"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(prog))
            .find(|p| p.exists())
            .unwrap();
        std::os::unix::fs::symlink(found, dir.path().join(prog)).unwrap();
    }
    let script2 = lvslab::verify::gather::traffic_script(&format!("udp://127.0.0.1:{port}"), 2);
    let t = run_udp_script(&script2, Some(dir.path()));
    assert_eq!(t.answers.get("web9"), Some(&2), "{t:?}");
    let _ = responder.kill();
    let _ = responder.wait();
    // Nobody listening: three failures, none answered.
    let t = run_udp_script(&script, None);
    assert!(t.answers.is_empty(), "{t:?}");
    assert_eq!(t.failures.values().sum::<u32>(), 3, "{t:?}");
}

const WITH_CHECKS: &str = "
checks:
  - name: web1 serves upload.txt
    description: the shared upload directory reaches web1
    host: web1
    run: curl -s http://192.168.2.100/upload.txt
    output: '^hello'
  - name: director counts connections
    host: director
    run: ipvsadm -Ln --stats
    status: 0
";

fn user_run(name: &str, host: &str, rc: i32, out: &str) -> UserCheckRun {
    UserCheckRun {
        name: name.into(),
        host: host.into(),
        tries: 3,
        last: Some(Out { out: out.into(), rc }),
        seconds: 2.0,
        error: None,
    }
}

#[test]
fn topology_checks() {
    let topo = format!("{}{WITH_CHECKS}", shipped("nat"));
    let mut ev = evidence("nat-fresh");
    ev.custom = vec![
        user_run("web1 serves upload.txt", "web1", 0, "hello from storage\n"),
        user_run("director counts connections", "director", 0, "IP Virtual Server\n"),
    ];
    let c = run(&topo, &ev);
    assert!(failed(&c).is_empty());
    let u = get(&c, "check/web1 serves upload.txt");
    assert_eq!(
        u.message,
        "the shared upload directory reaches web1: exit 0 and output matching /^hello/"
    );
    assert!(
        u.evidence.iter().any(|e| e == "got: exit 0 after 3 tries (2.0 s)"),
        "{u:#?}"
    );

    ev.custom[0] = user_run("web1 serves upload.txt", "web1", 0, "<h1>404 Not Found</h1>\n");
    ev.custom[1] = user_run("director counts connections", "director", 2, "");
    let c = run(&topo, &ev);
    assert_eq!(
        get(&c, "check/web1 serves upload.txt").message,
        "the shared upload directory reaches web1: output does not match /^hello/"
    );
    assert_eq!(get(&c, "check/director counts connections").message, "exit 2 (want 0)");

    ev.custom[1].error = Some("director could not be reached".into());
    let c = run(&topo, &ev);
    assert!(
        get(&c, "check/director counts connections")
            .message
            .contains("could not be reached")
    );
}

/// The retry loop, for real: a check that passes only once a file appears.
#[tokio::test]
async fn topology_checks_retry_until_their_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let text = format!(
        "lab: retry\nmode: nat\nnetworks:\n  lan: {{ cidr: 192.168.4.0/24 }}\nhosts:\n  client:\n    role: client\n    interfaces: [{{ network: lan, address: 192.168.4.10 }}]\nchecks:\n  - name: appears\n    host: client\n    run: cat {f}\n    output: ready\n    timeout: 20\n  - name: never\n    host: client\n    run: 'exit 3'\n    timeout: 2\n",
        f = flag.display()
    );
    let t = topology(&text);
    let conns: BTreeMap<String, std::sync::Arc<dyn lvslab::exec::transport::Transport>> = BTreeMap::from([(
        "client".to_string(),
        std::sync::Arc::new(lvslab::exec::transport::LocalTransport::new("client"))
            as std::sync::Arc<dyn lvslab::exec::transport::Transport>,
    )]);
    let f2 = flag.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        std::fs::write(f2, "ready\n").unwrap();
    });
    let ev = lvslab::verify::gather(&t, &conns, BTreeMap::new(), 1).await;
    writer.await.unwrap();
    let plan = lvslab::compile::compile(&t).unwrap();
    let c = decide(&t, &plan, &ev);
    let appears = ev.custom.iter().find(|r| r.name == "appears").unwrap();
    assert!(appears.tries >= 2, "it failed first, then passed: {appears:?}");
    assert_eq!(get(&c, "check/appears").verdict, Verdict::Pass);
    let never = ev.custom.iter().find(|r| r.name == "never").unwrap();
    assert!(
        never.tries >= 2 && never.seconds >= 2.0,
        "retried until the timeout: {never:?}"
    );
    assert_eq!(get(&c, "check/never").message, "exit 3 (want 0)");
}

fn report(mode: &str, fixture: &str) -> Report {
    let t = topology(&shipped(mode));
    let plan = lvslab::compile::compile(&t).unwrap();
    let ev = evidence(fixture);
    let checks = decide(&t, &plan, &ev);
    Report::new(&t, &ev, checks)
}

#[test]
fn text_report_of_a_breakage() {
    let r = report("nat", "nat-weight");
    assert!(!r.passed);
    let mut text = lvslab::report::verify_text(&r);
    // The run's duration varies; everything else is the recorded lab.
    text = text.replace(&format!("{:.1} s", r.seconds), "N s");
    insta::assert_snapshot!(text);
}

fn xmllint(path: &Path) -> std::process::Output {
    Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(repo().join("tests/junit/junit.xsd"))
        .arg(path)
        .output()
        .expect("xmllint runs (apt-get install libxml2-utils; .ci/run installs it)")
}

#[test]
fn junit_reports_are_valid_junit_xml() {
    let dir = tempfile::tempdir().unwrap();
    // A failing report, a passing one, and one with markup in names and output.
    let mut hostile = report("nat", "nat-fresh");
    hostile.checks[0].title = "a <b> & \"c\" 'd'".into();
    hostile.checks[0].evidence.push("control \u{1} char and ]]> end".into());
    hostile.checks[1].verdict = Verdict::Skip;
    hostile.checks[1].message = "not checked: <reason>".into();
    for (name, r) in [
        ("fail", report("nat", "nat-weight")),
        ("pass", report("dr", "dr-fresh")),
        ("hostile", hostile),
    ] {
        let path = dir.path().join(format!("{name}.xml"));
        std::fs::write(&path, lvslab::report::verify_junit(&r)).unwrap();
        let out = xmllint(&path);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let junit = lvslab::report::verify_junit(&report("nat", "nat-weight"));
    assert_eq!(junit.matches("<testcase ").count(), 7);
    assert_eq!(junit.matches("<failure ").count(), 2);
    assert!(junit.contains("<testsuite name=\"lvslab.verify.nat\" tests=\"7\" failures=\"2\""));
    // The schema is not a rubber stamp: a malformed count is refused.
    let bad = dir.path().join("bad.xml");
    std::fs::write(&bad, junit.replace("tests=\"7\"", "tests=\"seven\"")).unwrap();
    assert!(!xmllint(&bad).status.success());
}

#[test]
fn json_report_schema() {
    let r = report("nat", "nat-weight");
    let v: serde_json::Value = serde_json::from_str(&lvslab::report::verify_json(&r).unwrap()).unwrap();
    assert_eq!(v["schema"], "lvslab.verify/v1");
    assert_eq!(v["passed"], false);
    assert_eq!(v["counts"]["failed"], 2);
    let d = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "distribution/http")
        .unwrap();
    assert_eq!(d["verdict"], "fail");
    assert_eq!(d["shares"][0]["host"], "web1");
    assert!(d["proves"].as_str().unwrap().starts_with("every request"));
}

#[test]
fn ha_labs_by_keepalived_rules() {
    for (mode, fixture, n) in [("ha", "ha-fresh", 12), ("dual-master", "dual-fresh", 16)] {
        let checks = run(&shipped(mode), &evidence(fixture));
        assert_eq!(checks.len(), n, "{mode}: {checks:#?}");
        assert!(failed(&checks).is_empty(), "{mode}: {checks:#?}");
    }
    let base = evidence("ha-fresh");
    let c = run(&shipped("ha"), &base);
    let v = get(&c, "vrrp/VI_1");
    assert!(
        v.evidence
            .iter()
            .any(|e| e == "director2 (BACKUP priority 98): keepalived state BACKUP, hears master 192.168.4.54"),
        "{v:#?}"
    );

    // Both directors claim the VIP.
    let mut ev = base.clone();
    edit(&mut ev, false, "director2", "addr", |o| {
        o.out.push_str("11: eth0    inet 192.168.4.253/32 scope global eth0\n");
    });
    let c = run(&shipped("ha"), &ev);
    assert!(
        get(&c, "vrrp/VI_1")
            .message
            .contains("held by director1 and director2 at once (split brain)")
    );

    // The backup hears nobody: it would take over at once.
    let mut ev = base.clone();
    edit(&mut ev, false, "director2", "vrrp-data", |o| {
        o.out = " VRRP Instance = VI_1\n   State = MASTER\n".into();
    });
    let c = run(&shipped("ha"), &ev);
    assert!(
        get(&c, "vrrp/VI_1")
            .message
            .contains("director2 is MASTER too but holds no VIP")
    );

    // keepalived took web1 out (its check fails): allowed, and said.
    let mut ev = base.clone();
    edit(&mut ev, false, "director1", "ipvs-save", |o| {
        o.out = o
            .out
            .lines()
            .filter(|l| !l.contains("192.168.4.52"))
            .map(|l| format!("{l}\n"))
            .collect();
    });
    let c = run(&shipped("ha"), &ev);
    let i = get(&c, "ipvs/director1");
    assert_eq!(i.verdict, Verdict::Pass, "{i:#?}");
    assert!(i.message.contains("1 of 2 real servers in the pool"), "{i:#?}");
    assert!(
        i.evidence
            .iter()
            .any(|e| e.contains("web1 (192.168.4.52:80) is out of TCP 192.168.4.253:80: keepalived removed it"))
    );

    // A weight keepalived would never set.
    let mut ev = base.clone();
    edit(&mut ev, false, "director2", "ipvs-save", |o| {
        o.out = o
            .out
            .replace("-r 192.168.4.53:80 -g -w 1", "-r 192.168.4.53:80 -g -w 3");
    });
    let c = run(&shipped("ha"), &ev);
    assert_eq!(failed(&c), set(&["ipvs/director2"]));
    assert!(
        get(&c, "ipvs/director2")
            .message
            .contains("real server 192.168.4.53:80 in keepalived's TCP 192.168.4.253:80: weight 3 (want 1)"),
        "{:#?}",
        get(&c, "ipvs/director2")
    );

    // The sorry server in the table: only when no real server is left.
    let mut ev = base;
    edit(&mut ev, false, "director1", "ipvs-save", |o| {
        o.out = "-A -t 192.168.4.253:80 -s rr -p 50\n-a -t 192.168.4.253:80 -r 192.168.4.51:80 -g -w 1\n".into();
    });
    let c = run(&shipped("ha"), &ev);
    assert!(
        get(&c, "ipvs/director1")
            .evidence
            .iter()
            .any(|e| e.contains("sorry server 192.168.4.51:80 is in TCP 192.168.4.253:80"))
    );
}

#[test]
fn secrets_never_reach_evidence() {
    let mut ev = evidence("ha-fresh");
    edit(&mut ev, false, "director1", "vrrp-data", |o| {
        o.out.push_str("   Password = 1111\n")
    });
    ev.mask(&["1111"]);
    let json = serde_json::to_string(&ev).unwrap();
    assert!(!json.contains("1111"));
    assert!(json.contains("Password = ********"));
}

#[test]
fn ipvs_counts_may_fall_slightly_short_of_answers() {
    // A client reusing a source port whose IPVS entry is in TIME_WAIT gets the
    // entry reused, not a new connection counted: a small shortfall is normal.
    let with_web2_conns = |delta: i64| {
        let mut ev = evidence("nat-fresh");
        edit(&mut ev, true, "director", "ipvs-stats", |o| {
            o.out = o
                .out
                .lines()
                .map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    if w.first() == Some(&"->") && w.get(1) == Some(&"192.168.2.200:80") {
                        let n: i64 = w[2].parse().unwrap();
                        format!("  -> {} {} {}", w[1], n + delta, w[3..].join(" "))
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
        });
        run(&shipped("nat"), &ev)
    };
    assert!(
        failed(&with_web2_conns(-3)).is_empty(),
        "3 short of 60 is within the slack of 6"
    );
    let c = with_web2_conns(-20);
    assert!(
        get(&c, "distribution/http")
            .message
            .contains("web2 answered 40 request(s) but IPVS counted 20 connection(s) to it"),
        "{c:#?}"
    );
}

#[test]
fn shared_storage_rule() {
    let topo = shipped("storage");
    let mut ev = evidence("dr-fresh");
    let wrote = "written by web1 through the share, token 1f";
    ev.before.entry("web1".into()).or_default().insert(
        "storage-write".into(),
        Out {
            out: format!("{wrote}\n"),
            rc: 0,
        },
    );
    let reads = |ev: &mut Evidence, web2: &str| {
        let d = ev.after.entry("director".into()).or_default();
        d.insert(
            "storage-read:web1".into(),
            Out {
                out: format!("{wrote}\n"),
                rc: 0,
            },
        );
        d.insert(
            "storage-read:web2".into(),
            Out {
                out: web2.into(),
                rc: 0,
            },
        );
    };
    reads(&mut ev, &format!("{wrote}\n"));
    let c = run(&topo, &ev);
    let s = get(&c, "storage/nfs");
    assert_eq!(s.verdict, Verdict::Pass, "{s:#?}");
    assert!(
        s.message.contains("2 real server(s) serve the file web1 wrote"),
        "{s:#?}"
    );

    // web2 serves its own copy, not the share: caught.
    reads(&mut ev, "an old local file\n");
    let s = get(&run(&topo, &ev), "storage/nfs").clone();
    assert_eq!(s.verdict, Verdict::Fail);
    assert!(s.message.contains("web2 does not serve the file web1 wrote"), "{s:#?}");

    // The write itself failed (the mount is read-only, say).
    ev.before.get_mut("web1").unwrap().insert(
        "storage-write".into(),
        Out {
            out: "sh: can't create /var/www/html/shared/lvslab-verify.txt: Read-only file system\n".into(),
            rc: 2,
        },
    );
    let s = get(&run(&topo, &ev), "storage/nfs").clone();
    assert!(
        s.message
            .contains("web1 could not write lvslab-verify.txt into the share"),
        "{s:#?}"
    );
}
