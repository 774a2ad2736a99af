//! Issue 16: crafted lab records, symlinks where lvslab writes, and hostile
//! command lines get a clear refusal and change nothing. (Hostile topology
//! files: tests/adversarial.rs.)

use std::path::Path;

use crate::Lvslab;

/// A change made to a good record.
type Craft<'a> = Box<dyn Fn(&mut serde_json::Value) + 'a>;

fn lvslab_in(state: &Path) -> Lvslab {
    Lvslab::new().env("LVSLAB_STATE_DIR", state)
}

/// A record lvslab itself would write for lab `nat` (netns, nothing running).
fn good_record() -> serde_json::Value {
    serde_json::json!({
        "schema": 2,
        "lab": "nat",
        "topology": "topologies/nat.yaml",
        "since": 1,
        "provider": "netns",
        "infra": [],
        "hosts": {},
        "lab_hosts": ["client", "director"]
    })
}

fn write_record(state: &Path, lab: &str, record: &serde_json::Value) {
    std::fs::create_dir_all(state.join(lab)).unwrap();
    std::fs::write(state.join(lab).join("state.json"), record.to_string()).unwrap();
}

/// Every way a record could make `down` act outside the lab: each is refused
/// before anything is done, by every verb that reads records, and the
/// victim (a directory, a process, this machine's namespace) is untouched.
#[test]
fn crafted_lab_records_are_refused_by_every_verb_and_harm_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("precious"), "keep me").unwrap();
    let mut sleeper = std::process::Command::new("sleep").arg("300").spawn().unwrap();
    let sleeper_start = {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", sleeper.id())).unwrap();
        stat.rsplit_once(") ")
            .unwrap()
            .1
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let vm = |d: &str| serde_json::json!({ "dir": d, "pid": null, "start": null, "port": 2222, "accel": "tcg", "kernel": "x" });
    let crafted: Vec<(&str, Craft)> = vec![
        (
            "vm dir outside the lab",
            Box::new(|r| {
                r["provider"] = "vm".into();
                r["vm"] = vm(&victim.display().to_string());
            }),
        ),
        (
            "vm dir empty",
            Box::new(|r| {
                r["provider"] = "vm".into();
                r["vm"] = vm("");
            }),
        ),
        (
            "netns name with ../",
            Box::new(|r| r["infra"] = serde_json::json!([{ "kind": "netns", "name": "../../proc/1/ns/net" }])),
        ),
        (
            "netns of another lab",
            Box::new(|r| r["infra"] = serde_json::json!([{ "kind": "netns", "name": "lvslab-other-web1" }])),
        ),
        (
            "link name with shell",
            Box::new(|r| r["infra"] = serde_json::json!([{ "kind": "bridge", "name": "x; touch /tmp/pwned" }])),
        ),
        (
            "link that is not lvslab's",
            Box::new(|r| r["infra"] = serde_json::json!([{ "kind": "veth", "name": "eth0" }])),
        ),
        (
            "holder of this machine",
            Box::new(|r| r["infra"] = serde_json::json!([{ "kind": "holder", "host": "web1", "pid": 1, "start": 0 }])),
        ),
        (
            "directory outside",
            Box::new(|r| r["infra"] = serde_json::json!([{ "kind": "dir", "path": "/" }])),
        ),
        ("newer schema", Box::new(|r| r["schema"] = 99.into())),
        ("another lab's name", Box::new(|r| r["lab"] = "other".into())),
        (
            "host name with shell",
            Box::new(|r| r["lab_hosts"] = serde_json::json!(["web1;reboot"])),
        ),
        (
            "purge of /",
            Box::new(|r| {
                r["hosts"] = serde_json::json!({ "web1": { "changes": [{
                "phase": "storage", "order": [0, 0], "id": "dir", "summary": "x",
                "resource": { "kind": "directory", "path": "/", "mode": "0755", "purge": true },
                "original": { "type": "absent" } }] } });
            }),
        ),
        (
            "sysctl key with shell",
            Box::new(|r| {
                r["hosts"] = serde_json::json!({ "web1": { "changes": [{
                "phase": "network", "order": [0, 0], "id": "s", "summary": "x",
                "resource": { "kind": "sysctl", "key": "a$(touch /tmp/pwned)", "value": "1" },
                "original": { "type": "value", "value": "0" } }] } });
            }),
        ),
    ];
    // The record's serde tags, checked against a real one so the cases above are not refused for their spelling.
    let probe = serde_json::to_value(lvslab::provider::netns::Infra::Netns { name: "n".into() }).unwrap();
    assert_eq!(probe["kind"], "netns", "Infra's tag: {probe}");
    let _ = sleeper_start;
    for (what, craft) in &crafted {
        let state = dir.path().join(format!("state-{}", what.replace(' ', "-")));
        let mut record = good_record();
        craft(&mut record);
        write_record(&state, "nat", &record);
        for args in [
            vec!["down", "nat"],
            vec!["down", "topologies/nat.yaml"],
            vec!["plan", "topologies/nat.yaml"],
            vec!["drift", "topologies/nat.yaml"],
            vec!["up", "topologies/nat.yaml", "--check"],
        ] {
            let out = lvslab_in(&state).args(&args).run();
            assert_eq!(
                out.code,
                1,
                "{what}: `lvslab {}` must refuse: {}{}",
                args.join(" "),
                out.stdout,
                out.stderr
            );
            assert!(
                out.stderr.contains("unreadable lab state"),
                "{what}: `lvslab {}` says why: {}",
                args.join(" "),
                out.stderr
            );
        }
        let list = lvslab_in(&state).args(["list"]).run();
        assert_eq!(list.code, 1, "{what}: {}", list.stdout);
        assert!(list.stdout.contains("UNREADABLE"), "{what}: {}", list.stdout);
        assert!(
            state.join("nat/state.json").exists(),
            "{what}: the record is left for a person to read"
        );
        assert!(
            victim.join("precious").exists(),
            "{what}: the victim directory is untouched"
        );
        assert!(crate::ssh::running(sleeper.id()), "{what}: no process was signalled");
        assert!(!Path::new("/tmp/pwned").exists());
    }
    // The good record itself is accepted (the cases above differ from it by one thing each).
    let state = dir.path().join("state-good");
    write_record(&state, "nat", &good_record());
    let list = lvslab_in(&state).args(["list"]).run();
    assert_eq!(list.code, 0, "{}{}", list.stdout, list.stderr);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// `list` shows every lab: a corrupt one is marked, the others still listed.
#[test]
fn list_shows_every_lab_and_marks_the_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    write_record(dir.path(), "aaa", &serde_json::json!("not a record"));
    let mut good = good_record();
    good["lab"] = "nat".into();
    write_record(dir.path(), "nat", &good);
    let out = lvslab_in(dir.path()).args(["list"]).run();
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("aaa") && out.stdout.contains("UNREADABLE"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.lines().any(|l| l.starts_with("nat ") && l.contains("netns")),
        "{}",
        out.stdout
    );
}

/// Symlinks where lvslab writes: the lock and the lab directory never lead
/// elsewhere; `plan --out-dir` replaces a link instead of writing through it.
#[test]
fn lvslab_never_writes_through_a_symlink() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();

    // --out-dir with a symlink in place of a script.
    let out_dir = dir.path().join("scripts");
    std::fs::create_dir_all(&out_dir).unwrap();
    symlink(&victim, out_dir.join("director.sh")).unwrap();
    let out = lvslab_in(&dir.path().join("state"))
        .args(["plan", "topologies/nat.yaml", "--format", "sh", "--out-dir"])
        .args([&out_dir])
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o600,
        "mode untouched"
    );
    let script = std::fs::symlink_metadata(out_dir.join("director.sh")).unwrap();
    assert!(script.is_file() && script.permissions().mode() & 0o777 == 0o755);

    // The lock file as a symlink to the victim.
    let state = dir.path().join("state2");
    write_record(&state, "nat", &good_record());
    symlink(&victim, state.join("nat/lock")).unwrap();
    let out = lvslab_in(&state).args(["down", "nat"]).run();
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "keep me",
        "the lock never truncates its target"
    );

    // The lab directory as a symlink to elsewhere.
    let state = dir.path().join("state3");
    std::fs::create_dir_all(&state).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("state.json"), good_record().to_string()).unwrap();
    symlink(&elsewhere, state.join("nat")).unwrap();
    let out = lvslab_in(&state).args(["down", "nat"]).run();
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(elsewhere.join("state.json").exists() && !elsewhere.join("lock").exists());

    // A record is written 0600.
    let state = dir.path().join("state4");
    let out = lvslab_in(&state).args(["down", "nat"]).run();
    assert_eq!(out.code, 0, "a lab that is not up: nothing to do");
    assert!(!state.join("nat").exists(), "and nothing created");
}

/// `down --limit` with a host the lab does not have is an error, not a no-op.
#[test]
fn down_limit_must_name_a_host_of_the_lab() {
    let dir = tempfile::tempdir().unwrap();
    write_record(dir.path(), "nat", &good_record());
    let out = lvslab_in(dir.path()).args(["down", "nat", "--limit", "nosuch"]).run();
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("lab nat has no host nosuch (hosts: client, director)"),
        "{}",
        out.stderr
    );
    assert!(dir.path().join("nat/state.json").exists());
}

/// The auth_pass value in every shape YAML allows never reaches a message.
#[test]
fn a_secret_is_never_printed_whatever_its_shape() {
    let base = std::fs::read_to_string(crate::repo().join("topologies/ha.yaml")).unwrap();
    let line = base.lines().find(|l| l.contains("auth_pass:")).unwrap();
    let ind = &line[..line.len() - line.trim_start().len()];
    let shapes = [
        format!("{ind}auth_pass:\n{ind}  \"s3cr#tQ,x\""),
        format!("{ind}auth_pass: |\n{ind}  s3cr'tQ\n{ind}  s3cr2ndQ"),
        format!("{ind}\"auth_pass\": s3cr\"tQ"),
        format!("{ind}? auth_pass\n{ind}: s3cr\"tQ"),
        format!("{ind}auth_pass: ab,s3cr\"tQ"),
        format!("{ind}auth_pass: [s3cr\"tQ]"),
        // Found by a fresh-eyed attack: a syntax error on the value's line
        // (secrets not known yet), and a typo'd key.
        format!("{ind}auth_pass:\n{ind}  \"s3crtQ\" ]"),
        format!("{ind}auth_pas: \"s3crtQ\""),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, shape) in shapes.iter().enumerate() {
        let f = dir.path().join(format!("s{i}.yaml"));
        std::fs::write(&f, base.replace(line, shape)).unwrap();
        for verb in ["validate", "plan"] {
            let out = lvslab_in(&dir.path().join("state")).args([verb]).args([&f]).run();
            assert_eq!(out.code, 1, "shape {i} is refused");
            let all = format!("{}{}", out.stdout, out.stderr);
            assert!(!all.contains("s3cr") && !all.contains("tQ"), "shape {i}, {verb}: {all}");
            assert!(all.contains(&format!("s{i}.yaml:")), "still says where: {all}");
        }
    }
}

/// `auth_pass_env` reads the password from the environment: refused (with
/// the variable's name) when unset, and its value never printed.
#[test]
fn auth_pass_from_the_environment() {
    let base = std::fs::read_to_string(crate::repo().join("topologies/ha.yaml")).unwrap();
    let line = base.lines().find(|l| l.contains("auth_pass:")).unwrap();
    let ind = &line[..line.len() - line.trim_start().len()];
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("env.yaml");
    std::fs::write(&f, base.replace(line, &format!("{ind}auth_pass_env: LVSLAB_TEST_VRRP"))).unwrap();
    let unset = lvslab_in(&dir.path().join("state"))
        .args(["validate"])
        .args([&f])
        .env("LVSLAB_TEST_VRRP", "")
        .run();
    // An empty value is no password either.
    assert_eq!(unset.code, 1, "{}", unset.stderr);
    let plan = Lvslab::new()
        .env("LVSLAB_STATE_DIR", dir.path().join("state"))
        .env("LVSLAB_TEST_VRRP", "pW3nvX")
        .args(["plan", "--format", "json"])
        .args([&f])
        .run();
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        !plan.stdout.contains("pW3nvX") && plan.stdout.contains("@@lvslab-secret:"),
        "{}",
        plan.stdout
    );
    let both = dir.path().join("both.yaml");
    std::fs::write(
        &both,
        base.replace(line, &format!("{line}\n{ind}auth_pass_env: LVSLAB_TEST_VRRP")),
    )
    .unwrap();
    let out = lvslab_in(&dir.path().join("state"))
        .args(["validate"])
        .args([&both])
        .run();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("both auth_pass and auth_pass_env"),
        "{}",
        out.stderr
    );
}

/// A `down` that fails says why at the end, in text and in JSON.
#[test]
fn a_failed_down_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut record = good_record();
    record["hosts"] = serde_json::json!({ "web1": { "changes": [{
        "phase": "network", "order": [1, 0], "id": "sysctl:net.ipv4.ip_forward", "summary": "sysctl net.ipv4.ip_forward = 1",
        "resource": { "kind": "sysctl", "key": "net.ipv4.ip_forward", "value": "1" },
        "original": { "type": "value", "value": "0" } }] } });
    record["lab_hosts"] = serde_json::json!(["web1"]);
    // Over SSH with no way recorded to reach web1: its change stays recorded.
    record["provider"] = "ssh".into();
    write_record(dir.path(), "nat", &record);
    let out = lvslab_in(dir.path()).args(["down", "nat"]).run();
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("FAILED web1: sysctl net.ipv4.ip_forward = 1: "),
        "the recap says why: {}",
        out.stdout
    );
    let json = lvslab_in(dir.path()).args(["down", "nat", "--output", "json"]).run();
    assert_eq!(json.code, 1);
    let summary = json
        .stdout
        .lines()
        .find(|l| l.contains("\"summary\""))
        .expect("a summary event");
    let v: serde_json::Value = serde_json::from_str(summary).unwrap();
    assert_eq!(v["failures"][0]["host"], "web1", "{summary}");
    assert!(
        !v["failures"][0]["why"][0].as_str().unwrap_or("").is_empty(),
        "{summary}"
    );
}

/// A page (or a step's file) that spells the secret placeholder would have the
/// password filled in and served by every web server: refused.
#[test]
fn a_page_cannot_ask_for_a_secret() {
    let base = std::fs::read_to_string(crate::repo().join("topologies/ha.yaml")).unwrap();
    let text = base.replacen(
        "hosts:",
        "web:\n  page: \"leak @@lvslab-secret:vrrp-VI_1@@ {{ host.name }}\"\nhosts:",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("leak.yaml");
    std::fs::write(&f, text).unwrap();
    for verb in ["validate", "plan"] {
        let out = lvslab_in(&dir.path().join("state")).args([verb]).args([&f]).run();
        assert_eq!(out.code, 1, "{verb}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("holds lvslab's secret placeholder"),
            "{}",
            out.stderr
        );
    }
}
