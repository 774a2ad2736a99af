//! The netns provider's refusals that can be checked on this machine without
//! changing it (its kernel has no IPVS; the labs themselves run in the kernel
//! lab: tests/kernel_lab.rs).

use std::process::Command;

use crate::Lvslab;

fn world_readable_topology(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("lab.yaml");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    (dir, path)
}

#[test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
fn not_root_is_refused_with_the_fix() {
    let (dir, topo) =
        world_readable_topology("lab: nr\nmode: dr\nnetworks: { lan: { cidr: 10.9.0.0/24 } }\nhosts: {}\n");
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_lvslab"),
            "up",
        ])
        .arg(&topo)
        .args(["--provider", "netns"])
        .env("LVSLAB_STATE_DIR", dir.path().join("state"))
        .output()
        .expect("setpriv (util-linux) runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the netns provider needs root: run it with sudo"), "{err}");
}

#[test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
fn a_management_network_meeting_an_existing_route_is_refused() {
    // A route this machine already has (never changed here): its first non-default one.
    let routes = String::from_utf8(
        Command::new("ip")
            .args(["-4", "-o", "route", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let (net, line) = routes
        .lines()
        .find_map(|l| {
            let d = l.split_whitespace().next()?;
            (d.contains('/') && d.parse::<ipnetwork::Ipv4Network>().is_ok())
                .then(|| (d.to_string(), l.trim().to_string()))
        })
        .expect("this machine has a network route to collide with");
    let (dir, topo) = world_readable_topology(&format!(
        "lab: clash\nmode: dr\nnetworks: {{ lan: {{ cidr: 172.31.254.0/24 }} }}\nhosts: {{}}\nmgmt: {{ cidr: {net} }}\n"
    ));
    let out = Lvslab::new()
        .args(["up".as_ref(), topo.as_os_str(), "--provider".as_ref(), "netns".as_ref()])
        .env("LVSLAB_STATE_DIR", dir.path().join("state"))
        .run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "the management network {net} meets this machine's route `{line}`"
        )),
        "{}",
        out.stderr
    );
    assert!(
        !dir.path().join("state/clash/state.json").exists(),
        "nothing was created"
    );
}

/// lvslab with its labs recorded in `state`, as CI runs it.
fn in_state(state: &std::path::Path, args: &[&std::ffi::OsStr]) -> crate::Output {
    Lvslab::new()
        .args(args)
        .env("LVSLAB_STATE_DIR", state)
        .env("CI", "true")
        .run()
}

fn netns_exec(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn netns_list() -> String {
    String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned()
}

/// Issue 15, defects 2, 4 and 5 without a kernel with IPVS (a lab of plain
/// hosts runs here): an `up` killed half way, or a host whose interface was
/// deleted, is converged by the next `up`; an edited file (a host and a
/// network removed, an address changed) converges too, `plan` showing the
/// removals first; `down` leaves nothing, not even the lab's directory.
#[test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
fn netns_hosts_converge_after_a_kill_damage_and_edits() {
    let state = tempfile::tempdir().unwrap();
    let v1 = "lab: cvg\nmode: dr\nnetworks:\n  lan: { cidr: 10.77.0.0/24 }\n  lan2: { cidr: 10.78.0.0/24 }\nhosts:\n  \
              a: { role: client, interfaces: [{ network: lan, address: 10.77.0.10 }] }\n  \
              b: { role: client, interfaces: [{ network: lan, address: 10.77.0.11 }, { network: lan2, address: 10.78.0.11 }] }\n  \
              c: { role: client, interfaces: [{ network: lan, address: 10.77.0.12 }] }\n";
    let v2 = "lab: cvg\nmode: dr\nnetworks:\n  lan: { cidr: 10.77.0.0/24 }\nhosts:\n  \
              a: { role: client, interfaces: [{ network: lan, address: 10.77.0.20 }] }\n  \
              b: { role: client, interfaces: [{ network: lan, address: 10.77.0.11 }] }\n";
    let (_d1, f1) = world_readable_topology(v1);
    let (_d2, f2) = world_readable_topology(v2);
    let lvslab = |args: &[&std::ffi::OsStr]| in_state(state.path(), args);
    let up = |f: &std::path::Path| lvslab(&["up".as_ref(), f.as_os_str(), "--provider".as_ref(), "netns".as_ref()]);
    // Killed while making the hosts (once the first veth is recorded).
    let mut child = Command::new(env!("CARGO_BIN_EXE_lvslab"))
        .args(["up".as_ref(), f1.as_os_str(), "--provider".as_ref(), "netns".as_ref()])
        .env("LVSLAB_STATE_DIR", state.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let record = state.path().join("cvg/state.json");
    for _ in 0..400 {
        if std::fs::read_to_string(&record).is_ok_and(|s| s.contains("\"veth\"")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = up(&f1);
    assert_eq!(out.code, 0, "up after a killed up:\n{}\n{}", out.stdout, out.stderr);
    for (h, a) in [
        ("a", "10.77.0.10/24"),
        ("b", "10.77.0.11/24"),
        ("b", "10.78.0.11/24"),
        ("c", "10.77.0.12/24"),
    ] {
        assert!(
            netns_exec(&format!("lvslab-cvg-{h}"), &["ip", "-o", "-4", "addr"]).contains(a),
            "{h} has {a}"
        );
    }
    // An interface deleted by hand comes back.
    netns_exec("lvslab-cvg-b", &["ip", "link", "del", "eth0"]);
    let out = up(&f1);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(netns_exec("lvslab-cvg-b", &["ip", "-o", "-4", "addr"]).contains("10.77.0.11/24"));
    // The edit: c and lan2 gone, a's address changed. `plan` shows the removals first.
    let plan = lvslab(&["plan".as_ref(), f2.as_os_str()]);
    assert!(
        plan.stdout.contains("c: host c (no longer in the topology)"),
        "{}",
        plan.stdout
    );
    let out = up(&f2);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("host c (no longer in the topology)"),
        "{}",
        out.stderr
    );
    assert!(!netns_list().contains("lvslab-cvg-c"), "c's namespace is gone");
    let a = netns_exec("lvslab-cvg-a", &["ip", "-o", "-4", "addr"]);
    assert!(a.contains("10.77.0.20/24") && !a.contains("10.77.0.10/"), "{a}");
    let b = netns_exec("lvslab-cvg-b", &["ip", "-o", "link"]);
    assert!(!b.contains("eth1"), "b's interface on the removed network is gone: {b}");
    let bridge = lvslab::provider::netns::bridge_name("cvg", "lan2");
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{bridge}")).exists(),
        "lan2's bridge is gone"
    );
    let listed = lvslab(&["list".as_ref()]);
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.starts_with("cvg ") && l.contains(" 2 ")),
        "{}",
        listed.stdout
    );
    let out = lvslab(&["down".as_ref(), f2.as_os_str()]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(!netns_list().contains("lvslab-cvg-"));
    assert!(
        !state.path().join("cvg").exists(),
        "nothing of the lab is left, no lock either"
    );
    let again = lvslab(&["down".as_ref(), "cvg".as_ref()]);
    assert_eq!(again.code, 0);
    assert!(again.stderr.contains("is not up here"), "{}", again.stderr);
    assert!(!state.path().join("cvg").exists(), "asking created nothing");
}

/// Netns hosts share this machine's file system outside their private
/// directories: a host removed from a running lab has what its steps did
/// there put back before its namespace goes (a file it replaced, a line it
/// edited, a file it made), and a file in a private directory goes with the
/// namespace. Two plain hosts, no network.
#[test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
fn a_removed_netns_host_puts_back_what_it_did_on_this_machine() {
    let state = tempfile::tempdir().unwrap();
    // Not under /tmp: that is one of the private directories.
    let fs = tempfile::tempdir_in("/var/tmp").unwrap();
    let (pre, kv, made) = (
        fs.path().join("pre.conf"),
        fs.path().join("kv.conf"),
        fs.path().join("made"),
    );
    std::fs::write(&pre, "precious original\n").unwrap();
    std::fs::write(&kv, "k = orig\nother\n").unwrap();
    let h2 = format!(
        "  h2:\n    steps:\n\
         \x20     - file: {{ path: {p}, content: \"h2 was here\\n\" }}\n        why: t\n\
         \x20     - line: {{ path: {k}, key: k, value: h2 }}\n        why: t\n\
         \x20     - file: {{ path: {m}, content: \"x\\n\" }}\n        why: t\n\
         \x20     - file: {{ path: /srv/private-to-h2, content: \"x\\n\" }}\n        why: t\n",
        p = pre.display(),
        k = kv.display(),
        m = made.display()
    );
    let h1 = "  h1:\n    steps:\n      - directory: { path: /srv/h1 }\n        why: t\n";
    // Two hosts writing one file of this machine would race: refused before
    // anything is made.
    let (_d0, f0) = world_readable_topology(&format!(
        "lab: rmh\nhosts:\n{h2}  h3:\n    steps:\n      - line: {{ path: {}, key: k, value: h3 }}\n        why: t\n",
        kv.display()
    ));
    let out = Lvslab::new()
        .args(["up".as_ref(), f0.as_os_str(), "--provider".as_ref(), "netns".as_ref()])
        .env("LVSLAB_STATE_DIR", state.path())
        .run();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("hosts h2 and h3 both write"), "{}", out.stderr);
    assert!(!netns_list().contains("lvslab-rmh-"), "nothing made");
    // A host's `purge` directory holding another host's file: refused too.
    let (_dp, fp) = world_readable_topology(&format!(
        "lab: rmh\nhosts:\n{h2}  h3:\n    steps:\n      - directory: {{ path: {}, purge: true }}\n        why: t\n",
        fs.path().display()
    ));
    let out = Lvslab::new()
        .args(["up".as_ref(), fp.as_os_str(), "--provider".as_ref(), "netns".as_ref()])
        .env("LVSLAB_STATE_DIR", state.path())
        .run();
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("(purge: true) holds host h2's file"),
        "{}",
        out.stderr
    );
    assert!(!netns_list().contains("lvslab-rmh-"), "nothing made");
    assert_eq!(std::fs::read_to_string(&kv).unwrap(), "k = orig\nother\n");
    let (_d1, f1) = world_readable_topology(&format!("lab: rmh\nhosts:\n{h1}{h2}"));
    let (_d2, f2) = world_readable_topology(&format!("lab: rmh\nhosts:\n{h1}"));
    let lvslab = |args: &[&std::ffi::OsStr]| in_state(state.path(), args);
    let up = |f: &std::path::Path| lvslab(&["up".as_ref(), f.as_os_str(), "--provider".as_ref(), "netns".as_ref()]);
    // --check of a lab that is not up says so and leaves no trace.
    let out = lvslab(&[
        "up".as_ref(),
        f1.as_os_str(),
        "--provider".as_ref(),
        "netns".as_ref(),
        "--check".as_ref(),
    ]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("is not up"), "{}", out.stderr);
    assert!(!state.path().join("rmh").exists(), "no lab directory, no lock");
    let out = up(&f1);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(std::fs::read_to_string(&pre).unwrap(), "h2 was here\n");
    assert_eq!(std::fs::read_to_string(&kv).unwrap(), "k = h2\nother\n");
    // Another lab editing the same file of this machine is refused: at its
    // down, it would put back this lab's content as the original.
    let (_d3, f3) = world_readable_topology(&format!("lab: rmhb\nhosts:\n{h2}"));
    let out = up(&f3);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("lab rmh already edits"), "{}", out.stderr);
    assert!(!netns_list().contains("lvslab-rmhb-"), "nothing made");
    assert!(made.exists());
    // h2's namespace dies first (as in a reboot): its edits on this machine
    // are put back from here.
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.path().join("rmh/state.json")).unwrap()).unwrap();
    let holder = record["infra"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["host"] == "h2" && i["pid"].is_u64())
        .and_then(|i| i["pid"].as_u64())
        .expect("h2's holder in the record");
    Command::new("kill").arg(holder.to_string()).status().unwrap();
    // With --limit naming a remaining host too (the provider removes h2 all the same).
    let out = lvslab(&[
        "up".as_ref(),
        f2.as_os_str(),
        "--provider".as_ref(),
        "netns".as_ref(),
        "--limit".as_ref(),
        "h1".as_ref(),
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("host h2 (no longer in the topology)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&pre).unwrap(),
        "precious original\n",
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&kv).unwrap(), "k = orig\nother\n");
    assert!(!made.exists(), "made by lvslab through h2: removed");
    assert!(!netns_list().contains("lvslab-rmh-h2"), "h2's namespace is gone");
    // Nothing of h2 is left in the record: down has nothing of it to do.
    let out = lvslab(&["down".as_ref(), f2.as_os_str()]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        !out.stderr.contains("h2") && !out.stdout.contains("h2"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(!netns_list().contains("lvslab-rmh-"), "{}", netns_list());
    assert_eq!(std::fs::read_to_string(&pre).unwrap(), "precious original\n");
    // down after every holder died (a reboot): the edits on this machine
    // are put back from here all the same.
    let out = up(&f1);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(std::fs::read_to_string(&pre).unwrap(), "h2 was here\n");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.path().join("rmh/state.json")).unwrap()).unwrap();
    for pid in record["infra"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["pid"].as_u64())
    {
        Command::new("kill").arg(pid.to_string()).status().unwrap();
    }
    let out = lvslab(&["down".as_ref(), f1.as_os_str()]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(std::fs::read_to_string(&pre).unwrap(), "precious original\n");
    assert_eq!(std::fs::read_to_string(&kv).unwrap(), "k = orig\nother\n");
    assert!(!made.exists());
    assert!(!netns_list().contains("lvslab-rmh-"), "{}", netns_list());
}
