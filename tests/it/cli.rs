//! The command line: exit codes, streams, and the shapes of its output.

use crate::{Lvslab, assert_sh_parses};

#[test]
fn validate_exit_codes() {
    let ok = Lvslab::new()
        .args(["validate", "topologies/nat.yaml", "topologies/dr.yaml"])
        .run();
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains("topologies/nat.yaml: ok"), "{}", ok.stdout);

    let bad = Lvslab::new()
        .args(["validate", "topologies/nat.yaml", "tests/invalid/unknown-keys.yaml"])
        .run();
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("unknown key `adress` in interface"),
        "{}",
        bad.stderr
    );
    assert!(
        bad.stderr.contains("tests/invalid/unknown-keys.yaml:9:28"),
        "{}",
        bad.stderr
    );
    assert!(
        bad.stdout.contains("topologies/nat.yaml: ok"),
        "valid files are still reported"
    );

    let missing = Lvslab::new().args(["validate", "no/such.yaml"]).run();
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("cannot read no/such.yaml"),
        "{}",
        missing.stderr
    );

    let usage = Lvslab::new().args(["validate"]).run();
    assert_eq!(usage.code, 2, "usage errors exit 2");
}

#[test]
fn plan_formats() {
    let text = Lvslab::new().args(["plan", "topologies/nat.yaml"]).run();
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.starts_with("Plan for lab nat (mode NAT)"));

    let json = Lvslab::new()
        .args(["plan", "topologies/nat.yaml", "--format", "json"])
        .run();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("valid JSON");
    assert_eq!(v["schema"], "lvslab.plan/v1");
    assert_eq!(v["phases"][0]["name"], "prepare");

    let one = Lvslab::new()
        .args(["plan", "topologies/dr.yaml", "--host", "web1", "--format", "sh"])
        .run();
    assert_eq!(one.code, 0);
    assert_eq!(one.stdout.matches("#!/bin/sh").count(), 1);
    assert_sh_parses("dr/web1", &one.stdout);

    let nohost = Lvslab::new()
        .args(["plan", "topologies/dr.yaml", "--host", "web9"])
        .run();
    assert_eq!(nohost.code, 1);
    assert!(nohost.stderr.contains("no host `web9`"), "{}", nohost.stderr);

    let invalid = Lvslab::new()
        .args(["plan", "tests/invalid/weight-out-of-range.yaml"])
        .run();
    assert_eq!(invalid.code, 1);
    assert!(
        invalid.stderr.contains("weight 70000 is out of range 0..=65535"),
        "{}",
        invalid.stderr
    );
}

#[test]
fn plan_sh_out_dir_writes_one_executable_script_per_host() {
    let dir = tempfile::tempdir().unwrap();
    let out = Lvslab::new()
        .args(["plan", "topologies/nat.yaml", "--format", "sh", "--out-dir"])
        .args([dir.path()])
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["director.sh", "web1.sh", "web2.sh"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("director.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111);
}

#[test]
fn secrets_never_reach_plan_output() {
    for format in ["text", "json", "sh"] {
        let out = Lvslab::new()
            .args(["plan", "topologies/dual-master.yaml", "--format", format])
            .run();
        assert_eq!(out.code, 0);
        for secret in ["1111", "2222"] {
            assert!(
                !out.stdout.contains(&format!("auth_pass {secret}")),
                "{format} shows a secret"
            );
        }
    }
}

/// Shell completions name every verb; the manual page is roff with them.
#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let out = crate::Lvslab::new().args(["completions", shell]).run();
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        for verb in ["validate", "plan", "up", "verify", "drift", "down", "graph"] {
            assert!(out.stdout.contains(verb), "{shell} completions lack {verb}");
        }
    }
    let man = crate::Lvslab::new().args(["man"]).run();
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(
        man.stdout.starts_with(".ie \\n(.g .ds Aq") || man.stdout.contains(".TH lvslab"),
        "{}",
        &man.stdout[..200.min(man.stdout.len())]
    );
    assert!(man.stdout.contains("graph") && man.stdout.contains("drift"));
}

/// A reader that goes away (`lvslab validate bad.yaml 2>&1 | head -1`) ends
/// lvslab quietly with 141, as a broken pipe ends other tools, not with a
/// panic (101).
#[test]
fn a_closed_pipe_is_not_a_panic() {
    for (args, on_stderr) in [
        (vec!["validate", "tests/invalid/missing-mode.yaml"], true),
        (vec!["plan", "topologies/ha.yaml", "--format", "json"], false),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lvslab"));
        cmd.args(&args).current_dir(env!("CARGO_MANIFEST_DIR"));
        if on_stderr {
            cmd.stderr(writer).stdout(std::process::Stdio::null());
        } else {
            cmd.stdout(writer).stderr(std::process::Stdio::piped());
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(141),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{args:?}");
    }
}
