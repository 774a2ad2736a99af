//! `lvslab drift`: findings judged from observations (pure, on the shipped
//! examples' plans), and the whole verb over SSH against a real sshd on
//! 127.0.0.1 (hand edits found, `--fix` repairs exactly them, an unreachable
//! host exits 1). IPVS drift on real kernels: tests/kernel-lab/e2e.sh.

use lvslab::drift::{self, Fix, HostObservation, Observations};
use lvslab::plan::assess::Observed;
use lvslab::plan::{Plan, Resource};

use crate::ssh::{Lab, box_steps, free_port, running};
use crate::{load, plan, repo};

fn base64(b: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b).unwrap();
    String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
}

/// What a host in the planned state answers, step by step (files read back
/// with the given content, everything else as its resource wants).
fn as_planned(plan: &Plan, host: &str, file: impl Fn(&str, &str) -> String) -> Vec<Observed> {
    drift::host_steps(plan, host)
        .iter()
        .map(|s| {
            let output = match &s.resource {
                Resource::Sysctl { value, .. } => value.clone(),
                Resource::KernelModule { .. } => "loaded".into(),
                Resource::Address { address, dev } => format!("2: {dev} inet {address} scope global {dev}"),
                Resource::Route { to, via, dev } => {
                    format!("{to} via {via} dev {}", dev.clone().unwrap_or("eth0".into()))
                }
                Resource::Link { name, .. } => format!("5: {name}@NONE: <NOARP,UP,LOWER_UP> mtu 1480"),
                Resource::Directory { mode, .. } => mode.clone(),
                Resource::File {
                    path, content, mode, ..
                } => {
                    let content = file(path, &plan.resolve_secrets(content));
                    format!(
                        "{mode}\n{}\n{}",
                        lvslab::plan::assess::sha256_hex(content.as_bytes()),
                        base64(content.as_bytes())
                    )
                }
                Resource::Line { mode, line, .. } => format!("{mode}\n-\n{}", base64(format!("{line}\n").as_bytes())),
                Resource::Service { config_hash, .. } => format!("active\n{config_hash}"),
                Resource::Package { packages, .. } => {
                    packages.iter().map(|p| format!("{p} install ok installed\n")).collect()
                }
                Resource::IpvsTable { services, .. } => lvslab::plan::ipvs::save_lines(services).join("\n"),
                Resource::Mount { source, .. } => source.clone(),
                Resource::Command { .. } => String::new(),
            };
            Observed { output, rc: 0 }
        })
        .collect()
}

fn observed(host: &str, steps: Vec<Observed>, ipvs: Option<&str>) -> HostObservation {
    HostObservation {
        host: host.into(),
        result: Ok(Observations {
            steps,
            ipvs: ipvs.map(|o| Observed {
                output: o.into(),
                rc: 0,
            }),
        }),
    }
}

/// The IPVS table a director's step wants, as `ipvsadm -Sn` prints it.
fn planned_table(p: &Plan, host: &str) -> String {
    drift::host_steps(p, host)
        .iter()
        .find_map(|s| match &s.resource {
            Resource::IpvsTable { services, .. } => Some(lvslab::plan::ipvs::save_lines(services).join("\n")),
            _ => None,
        })
        .unwrap_or_default()
}

fn messages(r: &drift::Report, host: &str) -> Vec<String> {
    r.hosts
        .iter()
        .find(|h| h.host == host)
        .unwrap()
        .findings
        .iter()
        .map(|f| f.message.clone())
        .collect()
}

#[test]
fn a_lab_as_planned_has_no_drift_and_each_edit_is_one_finding() {
    let path = repo().join("topologies/nat.yaml");
    let t = load(&path).topology;
    let p = plan(&path);
    let live = planned_table(&p, "director");
    let all = |edit: &dyn Fn(&str, &mut Vec<Observed>), ipvs: &str| -> drift::Report {
        let obs = drift::hosts(&t, &p)
            .iter()
            .map(|h| {
                let mut steps = as_planned(&p, h, |_, c| c.to_string());
                edit(h, &mut steps);
                observed(h, steps, (h == "director").then_some(ipvs))
            })
            .collect::<Vec<_>>();
        drift::decide(&t, &p, &obs, 0.1)
    };
    let clean = all(&|_, _| {}, &live);
    assert_eq!(clean.findings(), 0, "{clean:#?}");
    assert_eq!(clean.exit_code(), 0);
    let text = lvslab::report::drift_text(&clean);
    assert!(text.contains("no drift: director ("), "{text}");
    assert!(
        clean
            .summary()
            .starts_with("DRIFT nat: none: 3 host(s) match the topology"),
        "{}",
        clean.summary()
    );

    // ipvsadm -e, -E, an extra real server, an undeclared service.
    let tampered = live
        .replace("-r 192.168.2.200:80 -m -w 2", "-r 192.168.2.200:80 -m -w 7")
        .replace("-s wrr", "-s wlc")
        + "\n-a -t 192.168.4.5:80 -r 192.168.2.99:80 -m -w 1\n-A -t 192.168.4.5:22 -s rr\n";
    let r = all(&|_, _| {}, &tampered);
    assert_eq!(
        messages(&r, "director"),
        [
            "ipvs: service TCP 192.168.4.5:80: scheduler wlc (want wrr)",
            "ipvs: real server 192.168.2.200:80 in TCP 192.168.4.5:80: weight 7 (want 2)",
            "ipvs: undeclared real server 192.168.2.99:80 in TCP 192.168.4.5:80 (-m -w 1)",
            "ipvs: undeclared service TCP 192.168.4.5:22 (-s rr)",
        ]
    );
    let fixes: Vec<&Fix> = r.hosts.iter().flat_map(|h| &h.findings).map(|f| &f.fix).collect();
    assert!(
        matches!(fixes[0], Fix::Step { id } if id.starts_with("ipvs")),
        "{fixes:?}"
    );
    assert!(
        matches!(fixes[3], Fix::Never { .. }),
        "an undeclared service is never removed"
    );
    assert_eq!(r.exit_code(), 2);

    // A real server deleted.
    let r = all(
        &|_, _| {},
        &live
            .lines()
            .filter(|l| !l.contains("192.168.2.200"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert_eq!(
        messages(&r, "director"),
        ["ipvs: real server 192.168.2.200:80 missing from TCP 192.168.4.5:80 (want -m -w 2)"]
    );

    // Host-level edits: a sysctl, a route, a page, a stopped service.
    let r = all(
        &|h, steps| {
            let ids: Vec<String> = drift::host_steps(&p, h).iter().map(|s| s.id.clone()).collect();
            for (id, o) in ids.iter().zip(steps.iter_mut()) {
                if h == "director" && id == "sysctl:net.ipv4.ip_forward" {
                    o.output = "0".into();
                }
                if h == "web1" && id.starts_with("route:") {
                    o.output = String::new();
                }
                if h == "web2" && id.starts_with("service:") {
                    o.output = "inactive\n".into();
                }
                if h == "web2" && id.starts_with("file:") && id.ends_with("index.html") {
                    let mode = o.output.lines().next().unwrap().to_string();
                    o.output = format!(
                        "{mode}\n{}\n{}",
                        lvslab::plan::assess::sha256_hex(b"hacked\n"),
                        base64(b"hacked\n")
                    );
                }
            }
        },
        &live,
    );
    assert_eq!(messages(&r, "director"), ["sysctl net.ipv4.ip_forward = 0 (want 1)"]);
    assert_eq!(messages(&r, "web1"), ["route default missing (want via 192.168.2.5)"]);
    let web2 = messages(&r, "web2");
    assert!(web2.iter().any(|m| m.ends_with("index.html differs")), "{web2:?}");
    assert!(
        web2.iter()
            .any(|m| m.starts_with("service ") && m.ends_with(" not running")),
        "{web2:?}"
    );
    let text = lvslab::report::drift_text(&r);
    assert!(text.contains("web2: file "), "{text}");
    assert!(
        text.contains("    -hacked"),
        "the diff is shown under its finding:\n{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&lvslab::report::drift_json(&r).unwrap()).unwrap();
    assert_eq!(json["schema"], "lvslab.drift/v1");
    assert_eq!(json["exit_code"], 2);
    assert_eq!(json["findings"], 4, "{text}");
    assert_eq!(json["hosts"][0]["findings"][0]["kind"], "sysctl");
    assert_eq!(json["hosts"][0]["findings"][0]["fix"]["type"], "step");
}

#[test]
fn file_diffs_never_show_secrets_and_keepalived_follows_its_rules() {
    let path = repo().join("topologies/ha.yaml");
    let t = load(&path).topology;
    let p = plan(&path);
    let secret = p.secrets.values().next().unwrap().expose().to_string();
    assert!(!secret.is_empty());
    let live = "-A -t 192.168.4.253:80 -s rr -p 50\n-a -t 192.168.4.253:80 -r 192.168.4.53:80 -g -w 1\n-a -t 192.168.4.253:80 -r 192.168.4.99:80 -g -w 1\n";
    let obs: Vec<HostObservation> = drift::hosts(&t, &p)
        .iter()
        .map(|h| {
            let steps = as_planned(&p, h, |path, c| {
                if path.ends_with("keepalived.conf") && h == "director1" {
                    c.replace("priority 100", "priority 250")
                } else if path.ends_with("keepalived.conf") && h == "director2" {
                    // The password before someone changed it in the topology.
                    c.replace(&secret, "OldPassw0rd")
                } else {
                    c.to_string()
                }
            });
            observed(h, steps, h.starts_with("director").then_some(live))
        })
        .collect();
    let r = drift::decide(&t, &p, &obs, 0.1);
    let d1 = &r.hosts.iter().find(|h| h.host == "director1").unwrap();
    let file = d1
        .findings
        .iter()
        .find(|f| f.kind == "file")
        .expect("keepalived.conf differs");
    assert_eq!(file.message, "file /etc/keepalived/keepalived.conf differs");
    let diff = file.diff.as_deref().unwrap();
    assert!(
        diff.contains("-    priority 250") && diff.contains("+    priority 100"),
        "{diff}"
    );
    let text = lvslab::report::drift_text(&r) + &lvslab::report::drift_json(&r).unwrap();
    assert!(!text.contains(&secret), "the VRRP password never appears");
    let d2 = r.hosts.iter().find(|h| h.host == "director2").unwrap();
    let d2_diff = d2
        .findings
        .iter()
        .find(|f| f.kind == "file")
        .and_then(|f| f.diff.as_deref());
    assert!(
        d2_diff.is_some_and(|d| d.contains("only on lines that hold a secret")),
        "{d2:#?}"
    );
    let text = lvslab::report::drift_text(&r) + &lvslab::report::drift_json(&r).unwrap();
    assert!(!text.contains("OldPassw0rd"), "nor the one before it: {text}");
    // keepalived restarts because its file is rewritten: a note, not a finding.
    assert!(d1.notes.iter().any(|n| n.contains("restarts on --fix")), "{d1:#?}");
    // web1 out of the pool is keepalived's business; an undeclared one is drift.
    assert!(
        d1.notes.iter().any(|n| n.contains("web1 (192.168.4.52:80) is out of")),
        "{d1:#?}"
    );
    let ipvs: Vec<&drift::Finding> = d1.findings.iter().filter(|f| f.kind == "ipvs").collect();
    assert_eq!(ipvs.len(), 1, "{ipvs:#?}");
    assert_eq!(
        ipvs[0].message,
        "ipvs: undeclared real server 192.168.4.99:80 in keepalived's TCP 192.168.4.253:80 (-g -w 1)"
    );
    assert_eq!(
        ipvs[0].fix,
        Fix::Ipvsadm {
            args: vec!["-d -t 192.168.4.253:80 -r 192.168.4.99:80".into()]
        }
    );
}

/// Issue 15, defect 1: a director whose keepalived does not run (its
/// configuration refused, or stopped) has no table; `--fix` must start
/// keepalived (its service step), never build keepalived's table with
/// ipvsadm for nobody to own.
#[test]
fn keepalived_down_is_fixed_by_starting_it_never_by_ipvsadm() {
    let path = repo().join("topologies/ha.yaml");
    let t = load(&path).topology;
    let p = plan(&path);
    let obs: Vec<HostObservation> = drift::hosts(&t, &p)
        .iter()
        .map(|h| {
            let mut steps = as_planned(&p, h, |_, c| c.to_string());
            if h == "director2" {
                for (s, o) in drift::host_steps(&p, h).iter().zip(steps.iter_mut()) {
                    if s.id == "service:keepalived" {
                        o.output = "inactive\n".into();
                    }
                }
            }
            // Neither director has a table: director2's keepalived is down,
            // director1's table was emptied by hand while keepalived runs.
            observed(h, steps, h.starts_with("director").then_some(""))
        })
        .collect();
    let r = drift::decide(&t, &p, &obs, 0.1);
    let find = |host: &str| r.hosts.iter().find(|h| h.host == host).unwrap().findings.clone();
    let d2 = find("director2");
    let table: Vec<&drift::Finding> = d2.iter().filter(|f| f.kind == "ipvs").collect();
    assert!(!table.is_empty(), "{d2:#?}");
    for f in &table {
        assert!(f.message.ends_with("; keepalived is not running"), "{f:#?}");
        assert_eq!(
            f.fix,
            Fix::Step {
                id: "service:keepalived".into()
            },
            "{f:#?}"
        );
    }
    assert!(
        d2.iter().any(|f| f.message == "service keepalived not running"),
        "{d2:#?}"
    );
    // While keepalived runs, its table is put back with ipvsadm (a restart would move the VIP).
    let d1 = find("director1");
    assert!(
        d1.iter()
            .filter(|f| f.kind == "ipvs")
            .all(|f| matches!(f.fix, Fix::Ipvsadm { .. })),
        "{d1:#?}"
    );
}

#[test]
fn hosts_that_cannot_be_checked_exit_1() {
    let path = repo().join("topologies/dr.yaml");
    let t = load(&path).topology;
    let p = plan(&path);
    let obs: Vec<HostObservation> = drift::hosts(&t, &p)
        .iter()
        .map(|h| HostObservation {
            host: h.clone(),
            result: if h == "web1" {
                Err("cannot connect to 10.0.0.9:22: connection refused".into())
            } else {
                Ok(Observations {
                    steps: as_planned(&p, h, |_, c| c.to_string()),
                    ipvs: Some(Observed {
                        output: planned_table(&p, h) + "\n-A -t 192.168.4.5:22 -s rr\n",
                        rc: 0,
                    }),
                })
            },
        })
        .collect();
    let r = drift::decide(&t, &p, &obs, 0.1);
    assert_eq!(r.exit_code(), 1, "unknown beats drift");
    assert_eq!(r.unchecked(), ["web1"]);
    assert_eq!(
        r.findings(),
        1,
        "the undeclared service on the director is still reported: {r:#?}"
    );
    assert!(r.summary().contains("NOT CHECKED: "), "{}", r.summary());
}

#[test]
fn drift_and_fix_over_ssh() {
    let lab = Lab::new();
    let sshd = lab.sshd("sshd");
    let work = lab.work();
    let topo = lab.topology("drifty", sshd.port, &box_steps(&work));
    let lvslab = |args: &[&str]| {
        let mut a: Vec<std::ffi::OsString> = vec![args[0].into(), topo.clone().into()];
        a.extend(args[1..].iter().map(|s| s.into()));
        lab.lvslab(&a).run()
    };
    let up = lvslab(&["up", "--accept-new-host-keys"]);
    assert_eq!(up.code, 0, "{}{}", up.stdout, up.stderr);

    let clean = lvslab(&["drift"]);
    assert_eq!(clean.code, 0, "{}{}", clean.stdout, clean.stderr);
    assert!(
        clean
            .stdout
            .contains("DRIFT drifty: none: 1 host(s) match the topology"),
        "{}",
        clean.stdout
    );

    // Hand edits.
    std::fs::write(format!("{work}/site/index.html"), "tampered\n").unwrap();
    std::fs::remove_file(format!("{work}/marker")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(format!("{work}/site"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let pid: u32 = std::fs::read_to_string(format!("{work}/run/sleeper.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while running(pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let d = lvslab(&["drift"]);
    assert_eq!(d.code, 2, "{}{}", d.stdout, d.stderr);
    for want in [
        "box1: command marker: check exited 1".to_string(),
        format!("box1: directory {work}/site mode 700 (want 0750)"),
        format!("box1: file {work}/site/index.html differs"),
        "    -tampered".to_string(),
        "    +<h1>box1</h1>".to_string(),
        "box1: service sleeper not running".to_string(),
        "DRIFT drifty: 4 finding(s) on box1 (4 fixable with --fix), 1 host(s) checked".to_string(),
    ] {
        assert!(d.stdout.contains(&want), "missing `{want}` in:\n{}", d.stdout);
    }
    assert_eq!(
        std::fs::read_to_string(format!("{work}/site/index.html")).unwrap(),
        "tampered\n",
        "drift changes nothing"
    );

    let j = lvslab(&["drift", "--format", "json"]);
    assert_eq!(j.code, 2);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("stdout is JSON only");
    assert_eq!(v["findings"], 4);
    assert_eq!(v["hosts"][0]["host"], "box1");

    let fix = lvslab(&["drift", "--fix"]);
    assert_eq!(fix.code, 0, "{}{}", fix.stdout, fix.stderr);
    assert_eq!(fix.stdout.matches("fixed: box1: ").count(), 4, "{}", fix.stdout);
    assert_eq!(
        std::fs::read_to_string(format!("{work}/site/index.html")).unwrap(),
        "<h1>box1</h1>\n"
    );
    assert!(std::path::Path::new(&format!("{work}/marker")).exists());
    let pid2: u32 = std::fs::read_to_string(format!("{work}/run/sleeper.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(running(pid2), "the daemon runs again");
    assert_eq!(lvslab(&["drift"]).code, 0);

    // --fix recorded nothing new to undo wrongly: down still restores all.
    let down = lvslab(&["down"]);
    assert_eq!(down.code, 0, "{}{}", down.stdout, down.stderr);
    assert!(!std::path::Path::new(&format!("{work}/site")).exists());
    assert!(!running(pid2));

    // A host that cannot be reached: exit 1, said.
    let closed = lab.topology("gone", free_port(), &box_steps(&work));
    let out = lab.lvslab(&["drift".as_ref(), closed.as_os_str()]).run();
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("box1: NOT CHECKED: cannot connect to 127.0.0.1:"),
        "{}",
        out.stdout
    );
}
