//! Compiled plans of the example topologies: pinned by snapshots, and the
//! facts each LVS mode depends on asserted explicitly.

use lvslab::plan::{Plan, Resource};

use crate::{assert_sh_parses, plan, repo, topologies};

fn host_steps<'a>(plan: &'a Plan, host: &str) -> Vec<&'a lvslab::plan::Step> {
    plan.phases
        .iter()
        .flat_map(|p| p.hosts.iter())
        .filter(|h| h.host == host)
        .flat_map(|h| h.steps.iter())
        .collect()
}

fn applies(plan: &Plan, host: &str) -> Vec<String> {
    host_steps(plan, host).iter().flat_map(|s| s.apply.clone()).collect()
}

fn position(cmds: &[String], needle: &str) -> usize {
    cmds.iter()
        .position(|c| c == needle)
        .unwrap_or_else(|| panic!("`{needle}` not in:\n{}", cmds.join("\n")))
}

#[test]
fn every_example_validates_and_its_plan_is_pinned() {
    let all = topologies();
    assert_eq!(all.len(), 10, "the course labs ship as examples");
    for path in all {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let plan = plan(&path);
        insta::assert_snapshot!(format!("{name}.text"), lvslab::report::plan_text(&plan));
        let scripts: Vec<String> = lvslab::report::plan_sh(&plan)
            .into_iter()
            .map(|(host, script)| {
                assert_sh_parses(&format!("{name}/{host}"), &script);
                script
            })
            .collect();
        insta::assert_snapshot!(format!("{name}.sh"), scripts.join("\n"));
    }
}

#[test]
fn plan_json_schema_is_stable() {
    let plan = plan(&repo().join("topologies/nat.yaml"));
    insta::assert_snapshot!("nat.json", lvslab::report::plan_json(&plan).unwrap());
}

#[test]
fn compilation_is_deterministic() {
    for path in topologies() {
        let a = lvslab::report::plan_json(&plan(&path)).unwrap();
        let b = lvslab::report::plan_json(&plan(&path)).unwrap();
        assert_eq!(a, b, "{}", path.display());
    }
}

#[test]
fn nat_plan_forwards_routes_back_and_masquerades() {
    let plan = plan(&repo().join("topologies/nat.yaml"));
    let director = applies(&plan, "director");
    position(&director, "sysctl -qw net.ipv4.ip_forward=1");
    let svc = position(&director, "ipvsadm -A -t 192.168.4.5:80 -s wrr");
    let w1 = position(&director, "ipvsadm -a -t 192.168.4.5:80 -r 192.168.2.100:80 -m -w 1");
    let w2 = position(&director, "ipvsadm -a -t 192.168.4.5:80 -r 192.168.2.200:80 -m -w 2");
    assert!(svc < w1 && svc < w2);
    for web in ["web1", "web2"] {
        position(&applies(&plan, web), "ip route replace default via 192.168.2.5");
    }
    // The VIP is the director's own public address: no extra address step.
    assert!(!director.iter().any(|c| c.starts_with("ip addr add")));
}

#[test]
fn dr_plan_silences_arp_before_the_vip_reaches_lo() {
    let plan = plan(&repo().join("topologies/dr.yaml"));
    for web in ["web1", "web2"] {
        let cmds = applies(&plan, web);
        let vip = position(&cmds, "ip addr add 192.168.4.253/32 dev lo");
        for s in [
            "sysctl -qw net.ipv4.conf.all.arp_ignore=1",
            "sysctl -qw net.ipv4.conf.lo.arp_ignore=1",
            "sysctl -qw net.ipv4.conf.all.arp_announce=2",
            "sysctl -qw net.ipv4.conf.lo.arp_announce=2",
        ] {
            assert!(position(&cmds, s) < vip, "{web}: `{s}` must come before the VIP");
        }
        assert!(
            !cmds.iter().any(|c| c.starts_with("ip route replace default")),
            "DR real servers keep their gateway"
        );
    }
    let director = applies(&plan, "director");
    position(&director, "ip addr add 192.168.4.253/32 dev eth0");
    position(&director, "ipvsadm -a -t 192.168.4.253:80 -r 192.168.4.52:80 -g -w 1");
    position(&director, "ipvsadm -a -t 192.168.4.253:80 -r 192.168.4.53:80 -g -w 1");
    assert!(
        !director.iter().any(|c| c.contains("ip_forward")),
        "DR needs no forwarding"
    );
}

#[test]
fn tun_plan_loads_ipip_and_puts_the_vip_on_tunl0() {
    let plan = plan(&repo().join("topologies/tun.yaml"));
    for web in ["web1", "web2"] {
        let cmds = applies(&plan, web);
        let ipip = position(&cmds, "modprobe ipip");
        let up = position(
            &cmds,
            "ip link show dev tunl0 >/dev/null 2>&1 || { echo 'no interface tunl0 on this host: name each interface as the host calls it (`name:` under interfaces)' >&2; exit 1; }; ip link set dev tunl0 up",
        );
        let vip = position(&cmds, "ip addr add 192.168.4.253/32 dev tunl0");
        position(&cmds, "sysctl -qw net.ipv4.conf.all.rp_filter=0");
        position(&cmds, "sysctl -qw net.ipv4.conf.tunl0.rp_filter=0");
        assert!(ipip < up && up < vip);
    }
    let director = applies(&plan, "director");
    position(&director, "ipvsadm -a -t 192.168.4.253:80 -r 192.168.4.100:80 -i -w 1");
    position(&director, "ipvsadm -a -t 192.168.4.253:80 -r 192.168.6.100:80 -i -w 1");
    position(&director, "ip route replace 192.168.6.0/24 via 192.168.4.1");
    position(&applies(&plan, "router"), "sysctl -qw net.ipv4.ip_forward=1");
}

#[test]
fn ha_plan_leaves_ipvs_to_keepalived() {
    let plan = plan(&repo().join("topologies/ha.yaml"));
    for d in ["director1", "director2"] {
        let steps = host_steps(&plan, d);
        assert!(
            !steps.iter().any(|s| matches!(s.resource, Resource::IpvsTable { .. })),
            "{d}: keepalived owns IPVS"
        );
        assert!(
            !steps.iter().any(|s| matches!(s.resource, Resource::Address { .. })),
            "{d}: VRRP owns the VIP"
        );
        let svc = steps
            .iter()
            .find(|s| s.id == "service:keepalived")
            .expect("keepalived service");
        let Resource::Service { config_hash, .. } = &svc.resource else {
            unreachable!()
        };
        assert_eq!(config_hash.len(), 16);
    }
}

#[test]
fn service_restarts_follow_the_config_it_depends_on() {
    // Same topology, different VRRP priority: the keepalived config differs, so the service hash must.
    let path = repo().join("topologies/ha.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let hash = |text: String| {
        let t = lvslab::load_str("ha.yaml", text).ok().unwrap().topology;
        let plan = lvslab::compile::compile(&t).unwrap();
        host_steps(&plan, "director1")
            .iter()
            .find_map(|s| match &s.resource {
                Resource::Service { config_hash, .. } if s.id == "service:keepalived" => Some(config_hash.clone()),
                _ => None,
            })
            .unwrap()
    };
    let a = hash(text.clone());
    assert_eq!(a, hash(text.clone()));
    assert_ne!(a, hash(text.replace("priority: 100", "priority: 101")));
}

#[test]
fn addresses_left_out_are_assigned_in_file_order() {
    let t = crate::load(&repo().join("topologies/storage.yaml")).topology;
    let addrs: Vec<String> = t.hosts.iter().map(|h| h.interfaces[0].address.to_string()).collect();
    assert_eq!(
        addrs,
        [
            "192.168.4.1",
            "192.168.4.2",
            "192.168.4.3",
            "192.168.4.4",
            "192.168.4.5"
        ]
    );
}

/// The steps that depend on a host's OS family (packages and the web server),
/// with their commands, for `lab` run as real machines of `os`.
fn family_plan(lab: &str, os: &str, web: &str) -> Plan {
    let text = std::fs::read_to_string(repo().join(format!("topologies/{lab}.yaml"))).unwrap();
    let text = text.replacen(
        "\nmode:",
        &format!("\nprovider: ssh\ndefaults: {{ os: {os}, init: systemd }}\nmode:"),
        1,
    );
    let text = match text.find("\nweb:\n") {
        Some(_) => text.replacen("\nweb:\n", &format!("\nweb:\n  server: {web}\n"), 1),
        None => format!("{text}\nweb: {{ server: {web} }}\n"),
    };
    let t = match lvslab::load_str("test.yaml", text) {
        Ok(l) => l.topology,
        Err(d) => panic!("{d}"),
    };
    lvslab::compile::compile(&t).unwrap()
}

fn family_steps(lab: &str, os: &str, web: &str) -> String {
    let plan = family_plan(lab, os, web);
    let mut out = String::new();
    for phase in &plan.phases {
        for hp in &phase.hosts {
            for s in &hp.steps {
                let web = matches!(&s.resource, Resource::Service { name, .. } if name.starts_with("web-"));
                let docroot = s.id.ends_with("/index.html");
                if !matches!(s.resource, Resource::Package { .. }) && !web && !docroot {
                    continue;
                }
                out.push_str(&format!("{} {}: {}\n  observe: {}\n", hp.host, s.id, s.why, s.observe));
                for a in &s.apply {
                    out.push_str(&format!("  apply: {a}\n"));
                }
            }
        }
    }
    out
}

#[test]
fn packages_and_web_server_per_os_family() {
    for os in ["debian", "rhel"] {
        for (lab, web) in [("storage", "apache2"), ("ha", "nginx"), ("persistence", "apache2")] {
            let steps = family_steps(lab, os, web);
            insta::assert_snapshot!(format!("family-{lab}-{os}"), steps);
        }
    }
    // The names differ where the families differ.
    let deb = family_steps("storage", "debian", "apache2");
    let rhel = family_steps("storage", "rhel", "apache2");
    assert!(
        deb.contains("package:apache2") && deb.contains("systemctl restart apache2"),
        "{deb}"
    );
    assert!(rhel.contains("systemctl restart httpd"), "{rhel}");
    // keepalived's sorry server gets its web server too.
    assert!(family_steps("ha", "debian", "nginx").contains("sorry package:nginx"));
    assert!(
        rhel.contains("package:httpd") && rhel.contains("package:nfs-utils"),
        "{rhel}"
    );
    assert!(
        deb.contains("package:nfs-kernel-server") && deb.contains("package:nfs-common"),
        "{deb}"
    );
    assert!(family_steps("ha", "rhel", "nginx").contains("/usr/share/nginx/html/index.html"));
    assert!(family_steps("ha", "debian", "nginx").contains("/var/www/html/index.html"));
    // lvslab's own daemons (HTTPS on 443, UDP responders) get a unit file of
    // their own on systemd hosts, written before the service and restarting it.
    for (lab, unit, exec) in [
        (
            "persistence",
            "lvslab-web-443",
            "ExecStart=sh -c 'cd /var/www/html && exec openssl s_server",
        ),
        (
            "schedulers",
            "lvslab-udp-5353-192-168-4-214",
            "ExecStart=socat -t 5 UDP4-RECVFROM:5353,bind=192.168.4.214,fork 'SYSTEM:read -r line; echo web1'",
        ),
    ] {
        let plan = family_plan(lab, "debian", "apache2");
        let steps = host_steps(&plan, "web1");
        let file = steps
            .iter()
            .position(|s| s.id == format!("file:/etc/systemd/system/{unit}.service"))
            .unwrap_or_else(|| panic!("{lab}: no unit file for {unit}"));
        let service = steps
            .iter()
            .position(|s| matches!(&s.resource, Resource::Service { manager: lvslab::plan::ServiceManager::Systemd { unit: u }, restart_on, .. } if u == unit && restart_on.iter().any(|r| r.ends_with(&format!("{unit}.service")))))
            .unwrap_or_else(|| panic!("{lab}: no {unit} service restarting on its unit file"));
        assert!(file < service, "{lab}: the unit file comes first");
        let Resource::File { content, .. } = &steps[file].resource else {
            unreachable!()
        };
        assert!(content.contains(exec), "{lab}: {content}");
        assert!(content.contains("WantedBy=multi-user.target"));
        assert!(steps[service].apply[0].starts_with("systemctl daemon-reload && systemctl restart"));
    }
    // The shipped labs run in namespaces of this machine: no package steps.
    for path in topologies() {
        assert!(
            !lvslab::report::plan_text(&plan(&path)).contains("package:"),
            "{}",
            path.display()
        );
    }
}

/// What `up` writes on real hosts so that the lab survives a reboot, for a
/// Debian and a RHEL-family host: derived from the host's own steps.
#[test]
fn reboot_persistence_per_os_family() {
    for os in ["debian", "rhel"] {
        for lab in ["persistence", "tun", "storage"] {
            let plan = family_plan(lab, os, "apache2");
            let phase = plan.phases.last().unwrap();
            assert_eq!(phase.name, "persist");
            let mut out = String::new();
            for hp in &phase.hosts {
                for s in &hp.steps {
                    out.push_str(&format!("{} {}: {}\n", hp.host, s.id, s.why));
                    for a in &s.apply {
                        out.push_str(&format!("  apply: {a}\n"));
                    }
                    for r in &s.revert {
                        out.push_str(&format!("  revert: {r}\n"));
                    }
                }
            }
            insta::assert_snapshot!(format!("persist-{lab}-{os}"), out);
            for (host, script) in lvslab::report::plan_sh(&plan) {
                assert_sh_parses(&format!("{lab}-{os}/{host}"), &script);
            }
        }
    }
    let deb = family_plan("persistence", "debian", "apache2");
    let rhel = family_plan("persistence", "rhel", "apache2");
    let text = |p: &Plan| {
        lvslab::report::plan_sh(p)
            .into_iter()
            .map(|(_, s)| s)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(text(&deb).contains("/etc/ipvsadm.rules") && text(&deb).contains("AUTO=\"true\""));
    assert!(text(&rhel).contains("/etc/sysconfig/ipvsadm") && text(&rhel).contains("systemctl enable ipvsadm.service"));
    for p in [&deb, &rhel] {
        let t = text(p);
        assert!(
            t.contains("net.ipv4.conf.all.arp_ignore = 1"),
            "the DR sysctls as a drop-in"
        );
        assert!(
            t.contains("ip addr replace 192.168.4.240/32 dev lo") || t.contains("dev lo"),
            "the VIP on lo at boot"
        );
        assert!(t.contains("iptables -t mangle -C PREROUTING"), "the mark rules at boot");
        assert!(t.contains("systemctl enable apache2") || t.contains("systemctl enable httpd"));
    }
    assert!(
        text(&family_plan("tun", "debian", "apache2")).contains("ipip"),
        "modules-load.d"
    );
    // Namespaces (and hosts without systemd) get no persist phase.
    for path in topologies() {
        assert!(
            plan(&path).phases.iter().all(|p| p.name != "persist"),
            "{}",
            path.display()
        );
    }
}

/// The firewall-mark step on a host with nftables but no iptables: run for
/// real in a fresh network namespace of this machine, with a PATH that holds
/// `nft` and `grep` only. Absent → applied (one `nft -f` transaction) →
/// present → reverted → absent, and the `lvslab` table is gone.
#[test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
fn fwmark_rules_use_nftables_where_iptables_is_missing() {
    let p = plan(&repo().join("topologies/persistence.yaml"));
    let step = host_steps(&p, "director")
        .into_iter()
        .find(|s| s.id == "command:fwmark-8")
        .expect("the mark step");
    let Resource::Command { check, run, revert, .. } = &step.resource else {
        panic!("a command step")
    };
    let revert = revert.as_deref().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let which = |tool: &str| {
        let path = String::from_utf8(
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert!(
            !path.trim().is_empty(),
            "{tool} is installed (.ci/run installs nftables and util-linux)"
        );
        path
    };
    for tool in ["nft", "grep"] {
        std::os::unix::fs::symlink(which(tool).trim(), bin.path().join(tool)).unwrap();
    }
    // One shell in one new network namespace runs the whole sequence.
    let script = format!(
        "set -u\n\
         if {check}; then echo 'present before'; exit 1; fi\n\
         {run} || {{ echo 'apply failed'; exit 1; }}\n\
         {check} || {{ echo 'absent after apply'; nft list ruleset; exit 1; }}\n\
         nft list chain ip lvslab mark-8\n\
         {revert}\n\
         if {check}; then echo 'present after revert'; exit 1; fi\n\
         if nft list tables | grep -q lvslab; then echo 'table left behind'; exit 1; fi\n\
         echo ok\n"
    );
    // Found on this PATH before the test's PATH (nft and grep only) applies.
    let unshare = which("unshare");
    let out = std::process::Command::new(unshare.trim())
        .args(["-n", "/bin/sh", "-c", &script])
        .env("PATH", bin.path())
        .output()
        .expect("unshare (util-linux) runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.ends_with("ok\n"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ip daddr 192.168.4.253 tcp dport { 80, 443 } meta mark set 0x00000008"),
        "{stdout}"
    );
}

/// Hosts without `os:` take the family their facts name (and only those);
/// a family lvslab does not map is refused for a host that needs packages.
#[test]
fn detected_os_families_fill_only_undeclared_hosts() {
    use lvslab::exec::{connect::apply_detected_os, transport::Facts};
    let text = "lab: d\nmode: dr\nprovider: ssh\nnetworks: { lan: { cidr: 10.9.0.0/24 } }\nhosts:\n  \
                a: { role: client, interfaces: [{ network: lan }] }\n  \
                b: { role: client, os: debian, interfaces: [{ network: lan }] }\n  \
                c: { role: client, interfaces: [{ network: lan }] }\n  \
                d: { role: client, packages: false, interfaces: [{ network: lan }] }\n";
    let mut t = match lvslab::load_str("t.yaml", text.to_string()) {
        Ok(l) => l.topology,
        Err(d) => panic!("{d}"),
    };
    let fact = |family: &str| Facts {
        os_family: family.into(),
        package_manager: String::new(),
        init: "systemd".into(),
    };
    let facts = std::collections::BTreeMap::from([
        ("a".to_string(), fact("rhel")),
        ("b".to_string(), fact("rhel")),
        ("d".to_string(), fact("arch")),
    ]);
    let found = apply_detected_os(&mut t, &facts).unwrap();
    assert_eq!(found, ["a rhel"]);
    let os = |n: &str| t.host_by_name(n).unwrap().os.map(|o| o.as_str());
    assert_eq!(os("a"), Some("rhel"));
    assert_eq!(os("b"), Some("debian"), "a declared family is never overridden");
    assert_eq!(os("c"), None, "no facts (unreachable): left as it is");
    assert_eq!(os("d"), None, "no packages: an unmapped family is fine");
    let plan = lvslab::compile::compile(&t).unwrap();
    assert!(
        plan.notes.iter().any(|n| n.starts_with("c: no `os:` declared")),
        "{:?}",
        plan.notes
    );
    let text_arch = text.replace("packages: false, ", "");
    let mut t = lvslab::load_str("t.yaml", text_arch).ok().unwrap().topology;
    let err = apply_detected_os(&mut t, &facts).unwrap_err();
    assert!(
        err.contains("d: its OS family is `arch`") && err.contains("`packages: false`"),
        "{err}"
    );
}

/// Issue 16: what `up` records of a plan, `down` must accept back: every
/// resource of every example's plan (and of each OS family's) passes the
/// check a lab record gets when it is read.
#[test]
fn every_planned_resource_passes_the_record_check() {
    let mut plans: Vec<Plan> = topologies().iter().map(|t| plan(t)).collect();
    for (lab, os, web) in [
        ("storage", "debian", "apache2"),
        ("storage", "rhel", "nginx"),
        ("ha", "rhel", "apache2"),
        ("persistence", "debian", "nginx"),
    ] {
        plans.push(family_plan(lab, os, web));
    }
    for p in &plans {
        for step in p
            .phases
            .iter()
            .flat_map(|ph| ph.hosts.iter())
            .flat_map(|h| h.steps.iter())
        {
            if let Err(e) = step.resource.check_recorded() {
                panic!("{}: {}: {e}", p.lab, step.summary);
            }
        }
    }
}

/// A default route that would cut the SSH connection running the script is
/// refused (the peer reached only through the current default route), and
/// one that would not is applied: the real kernel's routing table decides,
/// in a network namespace of its own.
#[test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
fn default_route_refused_when_it_would_cut_the_ssh_connection() {
    let step = lvslab::plan::Resource::Route {
        to: "default".into(),
        via: "10.1.0.254".into(),
        dev: None,
    };
    let apply = step.apply().join("\n");
    let run = |peer: &str, extra: &str| {
        let script = format!(
            "set -e\nip link set lo up\nip link add d0 type veth peer name d1\nip link set d1 up\nip link set d0 up\nip addr add 10.1.0.2/24 dev d0\n\
             ip route add default via 10.1.0.1\n{extra}\n\
             export SSH_CONNECTION='{peer} 40000 10.1.0.2 22'\n\
             if ( {apply} ); then echo applied; else echo refused; fi\nip -4 route show default\n"
        );
        let out = std::process::Command::new("unshare")
            .args(["-n", "/bin/sh", "-c", &script])
            .output()
            .expect("unshare (util-linux) runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // The peer is beyond the current default route: changing it cuts SSH.
    let (out, err) = run("203.0.113.9", "");
    assert!(out.starts_with("refused\ndefault via 10.1.0.1 "), "{out}");
    assert!(
        err.contains("a default route via 10.1.0.254 would cut this SSH connection: 203.0.113.9 reaches this host only through its current default route"),
        "{err}"
    );
    // A peer on a connected network, or with a route of its own, keeps its path.
    let (out, _) = run("10.1.0.7", "");
    assert!(out.starts_with("applied\ndefault via 10.1.0.254 "), "{out}");
    let (out, _) = run("203.0.113.9", "ip route add 203.0.113.0/24 via 10.1.0.1");
    assert!(out.starts_with("applied\ndefault via 10.1.0.254 "), "{out}");
    // No SSH (the boot script, a namespace lab): nothing to check.
    let (out, _) = run("", "");
    assert!(out.starts_with("applied\n"), "{out}");
}
