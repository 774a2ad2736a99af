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
