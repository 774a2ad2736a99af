//! The adversarial suite (issue 16): lvslab read the way an attacker writes.
//!
//! With a fixed seed (so a failure reproduces), in bounded time:
//! - mutations of every shipped topology (byte flips, line deletions and
//!   duplications, type swaps, key renames);
//! - parser limit cases (alias bombs, deep nesting, huge files, NUL, BOM,
//!   tags, a second document, runaway templates, many interfaces);
//! - injection payloads (`$(...)`, backticks, quotes, newlines, here-document
//!   delimiters, `../`, very long strings) in every string field of the
//!   shipped topologies, each generated script that carries a payload run
//!   in a sandbox (fresh mount, network and pid namespaces, the root file
//!   system read-only, tmpfs where scripts write, every system-changing
//!   program a stub) where any payload that runs leaves a marker.
//!
//! Properties: no panic, no case over 2 s, every plan's scripts pass `sh -n`,
//! zero escapes, no secret value in any output; and `lvslab validate` exits 0
//! exactly when `lvslab plan` does (on a sample, through the binary). Counts
//! go to target/adversarial.log (.ci/run prints it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on the unexpected

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SEED: u64 = 0x1a51_ab16;
/// The secret every topology with `auth_pass` gets here: no output may contain it.
const SECRET: &str = "Zq9sEcR";
const MARK_DIR: &str = "/tmp/lvslab-escape";
const SLOW: Duration = Duration::from_secs(2);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shipped() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in ["topologies", "tests/matrix"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let text = with_secret(&text);
            out.push((f.file_name().unwrap().to_string_lossy().into_owned(), text));
        }
    }
    out
}

/// Every `auth_pass` value replaced by [`SECRET`].
fn with_secret(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("auth_pass:") {
            Some(i) => format!("{}auth_pass: \"{SECRET}\"", &l[..i]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[derive(Default)]
struct Tally {
    cases: usize,
    refused: usize,
    planned: usize,
    scripts: usize,
    panics: Vec<String>,
    slow: Vec<String>,
    leaks: Vec<String>,
    slowest: (Duration, String),
}

/// What one case gave: its scripts (host, text) when it planned.
struct Case {
    scripts: Vec<(String, String)>,
}

fn run_case(t: &mut Tally, name: &str, text: String) -> Option<Case> {
    t.cases += 1;
    // A mutation may have turned the secret into another field's value; only
    // a secret still under `auth_pass` must never show.
    let secret_kept = text.contains(&format!("auth_pass: \"{SECRET}\""));
    let started = Instant::now();
    let name_owned = name.to_string();
    let result = std::panic::catch_unwind(move || -> Result<Case, String> {
        let loaded = lvslab::load_str(&name_owned, text).map_err(|d| d.to_string())?;
        let plan = lvslab::compile::compile(&loaded.topology).map_err(|e| e.to_string())?;
        let mut outputs = vec![
            loaded.warnings.to_string(),
            lvslab::report::plan_text(&plan),
            lvslab::report::plan_json(&plan).map_err(|e| e.to_string())?,
        ];
        let scripts = lvslab::report::plan_sh(&plan);
        outputs.extend(scripts.iter().map(|(_, s)| s.clone()));
        if let Some(o) = outputs.iter().find(|o| secret_kept && o.contains(SECRET)) {
            return Err(format!("LEAK: {}", &o[..o.len().min(200)]));
        }
        Ok(Case { scripts })
    });
    let took = started.elapsed();
    if took > t.slowest.0 {
        t.slowest = (took, name.to_string());
    }
    if took > SLOW {
        t.slow.push(format!("{name}: {took:?}"));
    }
    match result {
        Err(_) => {
            t.panics.push(name.to_string());
            None
        }
        Ok(Err(msg)) => {
            if (secret_kept && msg.contains(SECRET)) || msg.starts_with("LEAK") {
                t.leaks.push(format!("{name}: {}", &msg[..msg.len().min(300)]));
            }
            t.refused += 1;
            None
        }
        Ok(Ok(case)) => {
            t.planned += 1;
            t.scripts += case.scripts.len();
            Some(case)
        }
    }
}

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    if lines.is_empty() {
        return String::new();
    }
    let i = rng.below(lines.len());
    match rng.below(7) {
        0 => {
            // Byte flip (kept UTF-8: flip within ASCII).
            let mut b = lines[i].clone().into_bytes();
            if !b.is_empty() {
                let j = rng.below(b.len());
                b[j] = (b[j] ^ (1 << rng.below(7))) & 0x7f;
                lines[i] = String::from_utf8_lossy(&b).into_owned();
            }
        }
        1 => {
            lines.remove(i);
        }
        2 => {
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        3 | 4 => {
            // Type swap: a scalar value becomes a list, a mapping, a number, null or a bool.
            if let Some((k, _)) = lines[i].split_once(": ") {
                let v = [
                    "[1, 2]",
                    "{ a: b }",
                    "-7",
                    "~",
                    "true",
                    "\"\"",
                    "99999999999999999999",
                    "0x1F",
                ][rng.below(8)];
                lines[i] = format!("{k}: {v}");
            }
        }
        5 => {
            // Key rename.
            if let Some((k, v)) = lines[i].split_once(':') {
                let indent = k.len() - k.trim_start().len();
                let word = [
                    "role",
                    "mode",
                    "vip",
                    "port",
                    "scheduler",
                    "weight",
                    "hosts",
                    "x-y",
                    "Address",
                ][rng.below(9)];
                lines[i] = format!("{}{word}:{v}", &k[..indent]);
            }
        }
        _ => {
            // Indentation shift.
            lines[i] = format!("  {}", lines[i]);
        }
    }
    lines.join("\n") + "\n"
}

const PAYLOADS: &[&str] = &[
    "$(mkdir -p /tmp/lvslab-escape && touch /tmp/lvslab-escape/dollar)",
    "`mkdir -p /tmp/lvslab-escape; touch /tmp/lvslab-escape/backtick`",
    "x'; mkdir -p /tmp/lvslab-escape; touch /tmp/lvslab-escape/squote; echo '",
    "x\"; mkdir -p /tmp/lvslab-escape; touch /tmp/lvslab-escape/dquote; echo \"",
    "x\nmkdir -p /tmp/lvslab-escape; touch /tmp/lvslab-escape/newline\n",
    "x\nLVSLAB_EOF\nmkdir -p /tmp/lvslab-escape; touch /tmp/lvslab-escape/heredoc\n",
    "x\nLVSLAB_EOF\0\nmkdir -p /tmp/lvslab-escape; touch /tmp/lvslab-escape/heredoc-nul\n",
    "x\r\nLVSLAB_EOF\r\nmkdir -p /tmp/lvslab-escape; touch /tmp/lvslab-escape/cr\n",
    "../../../../tmp/lvslab-escape/dotdot",
    "a;mkdir -p /tmp/lvslab-escape;touch /tmp/lvslab-escape/semicolon",
    "@@lvslab-secret:vrrp-VI_1@@ ${LVSLAB_SECRET_VRRP_VI_1} $(touch /tmp/lvslab-escape/secretref)",
];

fn long_payload() -> String {
    format!("{}$(touch /tmp/lvslab-escape/long)", "A".repeat(70_000))
}

/// Byte ranges of each scalar value on a line (`key: value` or `- value`),
/// as (line, start, end).
fn string_fields(text: &str) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim_start();
        if t.starts_with('#') {
            continue;
        }
        let start = if let Some(p) = l.find(": ") {
            p + 2
        } else if let Some(rest) = t.strip_prefix("- ") {
            l.len() - rest.len()
        } else {
            continue;
        };
        let v = l[start..].trim_end();
        if v.is_empty() || v.starts_with(['{', '[', '|', '>', '&', '*']) {
            continue;
        }
        out.push((i, start, start + v.len()));
    }
    out
}

fn inject(text: &str, field: (usize, usize, usize), payload: &str) -> String {
    let (line, s, e) = field;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            if i == line {
                format!("{}{}{}", &l[..s], serde_json::to_string(payload).unwrap(), &l[e..])
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn limit_cases() -> Vec<(String, String)> {
    let nat = std::fs::read_to_string(repo().join("topologies/nat.yaml")).unwrap();
    let mut bomb = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let mut prev = 'a';
    for n in 'b'..='i' {
        bomb.push_str(&format!("{n}: &{n} [{}]\n", vec![format!("*{prev}"); 9].join(",")));
        prev = n;
    }
    let many_ifaces = {
        let mut s = nat.replace("hosts:\n", "hosts:\n  big:\n    role: client\n    interfaces:\n");
        let extra: String = (0..32_000).map(|_| "      - { network: public }\n").collect();
        s = s.replacen("    interfaces:\n", &format!("    interfaces:\n{extra}"), 1);
        s
    };
    vec![
        ("alias-bomb".into(), bomb),
        ("deep-flow".into(), format!("a: {}{}\n", "[".repeat(9000), "]".repeat(9000))),
        ("deep-block".into(), (0..3000).map(|i| format!("{}k:\n", "  ".repeat(i))).collect()),
        ("second-document".into(), format!("{nat}---\nlab: other\n")),
        ("binary-tag".into(), nat.replace("lab: nat", "lab: !!binary bmF0")),
        ("bom".into(), format!("\u{feff}{nat}")),
        ("nul-escape".into(), nat.replace("lab: nat", "lab: \"na\\0t\"")),
        (
            "runaway-template".into(),
            nat.replacen(
                "hosts:",
                "web:\n  page: \"{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}\"\nhosts:",
                1,
            ),
        ),
        ("many-interfaces".into(), many_ifaces),
        ("long-line".into(), format!("lab: {}\n", "x".repeat(900_000))),
    ]
}

/// Stubs for every program that changes a system: the sandboxed scripts run
/// them as no-ops, so a script runs to its end and every payload it carries
/// gets its chance to run.
const STUBS: &[&str] = &[
    "ip",
    "ipvsadm",
    "sysctl",
    "modprobe",
    "systemctl",
    "service",
    "apt-get",
    "dnf",
    "yum",
    "mount",
    "umount",
    "exportfs",
    "keepalived",
    "iptables",
    "nft",
    "setsid",
    "kill",
    "pkill",
    "busybox",
    "httpd",
    "apache2ctl",
    "nginx",
    "socat",
    "rsync",
    "curl",
    "arping",
    "ssh",
    "sshd",
    "chown",
    "sleep",
    "timeout",
    "nsenter",
    "unshare",
    "reboot",
    "shutdown",
    "rpcbind",
    "rpc.nfsd",
    "rpc.mountd",
    "modinfo",
    "lsmod",
    "dpkg",
    "rpm",
    "update-rc.d",
    "chkconfig",
    "openssl",
    "ln",
    "install",
    "ipvsadm-save",
    "ipvsadm-restore",
    "flock",
    "logger",
    "start-stop-daemon",
];

/// Run scripts in the sandbox; returns the markers found (escapes).
fn sandboxed(scripts: &[(String, String)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let stubs = dir.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    for s in STUBS {
        std::fs::write(stubs.join(s), "#!/bin/sh\nexit 0\n").unwrap();
    }
    let sdir = dir.path().join("scripts");
    std::fs::create_dir_all(&sdir).unwrap();
    // Every run ends with a canary that must leave its marker: a sandbox that
    // runs nothing (scripts it cannot see, say) fails loudly instead of
    // reporting zero escapes.
    let canary = "mkdir -p /tmp/lvslab-escape && touch /tmp/lvslab-escape/canary\n";
    for (i, text) in scripts.iter().map(|(_, t)| t.as_str()).chain([canary]).enumerate() {
        std::fs::write(sdir.join(format!("{i:05}.sh")), text).unwrap();
    }
    // The driver starts in the work directory, so it still reads the scripts
    // through its working directory once tmpfs hides wherever that lives.
    let driver = format!(
        r#"set -u
cd {work}
for m in $(findmnt -rn -o TARGET | sort -r); do mount -o remount,bind,ro "$m" 2>/dev/null; done
for d in /tmp /etc /var /srv /run /root /home /opt /mnt /media /boot; do
  [ -d "$d" ] && mount -t tmpfs lvslab-sandbox "$d"
done
mkdir -p /tmp/.lvslab-stubs
for s in stubs/*; do cp "$s" /tmp/.lvslab-stubs/ && chmod 755 "/tmp/.lvslab-stubs/${{s#stubs/}}"; done
export PATH=/tmp/.lvslab-stubs:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root
ran=0
for f in scripts/*.sh; do
  for v in $(grep -o 'LVSLAB_SECRET_[A-Z0-9_]*' "$f" | sort -u); do export "$v=x"; done
  exec 3< "$f"
  (cd /tmp && /usr/bin/timeout 10 sh /dev/fd/3 >/dev/null 2>&1)
  exec 3<&-
  ran=$((ran + 1))
done
echo "RAN $ran"
[ -d {mark} ] && ls -A {mark}
exit 0
"#,
        work = dir.path().display(),
        mark = MARK_DIR,
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "sh",
            "-c",
        ])
        .arg(&driver)
        .output()
        .expect("unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the sandbox did not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = stdout.lines().map(String::from).filter(|l| !l.is_empty()).collect();
    assert!(
        lines.first() == Some(&format!("RAN {}", scripts.len() + 1)) && lines.contains(&"canary".to_string()),
        "the sandbox did not run every script (its canary must leave a marker): {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines.retain(|l| l != "canary" && !l.starts_with("RAN "));
    lines
}

/// The sandbox itself works: a script that runs a payload leaves a marker,
/// and nothing it does reaches this machine.
#[test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
fn the_sandbox_catches_an_escape_and_contains_it() {
    let escapes = sandboxed(&[(
        "probe".into(),
        "mkdir -p /tmp/lvslab-escape && touch /tmp/lvslab-escape/probe\necho x > /etc/lvslab-sandbox-probe\n".into(),
    )]);
    assert_eq!(escapes, vec!["probe".to_string()]);
    assert!(
        !Path::new("/etc/lvslab-sandbox-probe").exists(),
        "the sandbox leaked a write"
    );
}

#[test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
fn hostile_topologies_get_a_clear_refusal_never_a_shell() {
    let started = Instant::now();
    let mut t = Tally::default();
    let mut rng = Rng(SEED);
    let bases = shipped();
    let mut injected_scripts: Vec<(String, String)> = Vec::new();
    let mut sh_checked: Vec<(String, String)> = Vec::new();
    let mut cli_sample: Vec<(String, String)> = Vec::new();

    // 1. Mutations of every shipped topology.
    const MUTATIONS: usize = 3000;
    for i in 0..MUTATIONS {
        let (name, base) = &bases[i % bases.len()];
        let mut text = base.clone();
        for _ in 0..=rng.below(3) {
            text = mutate(&mut rng, &text);
        }
        let case = format!("mutation {i} of {name}");
        if let Some(c) = run_case(&mut t, &case, text.clone())
            && i % 10 == 0
        {
            sh_checked.extend(c.scripts);
        }
        if i % 25 == 0 {
            cli_sample.push((case, text));
        }
    }
    let mutations = t.cases;

    // 2. Parser limits.
    for (name, text) in limit_cases() {
        let planned = run_case(&mut t, &name, text.clone()).is_some();
        assert!(
            !planned || name == "bom",
            "limit case {name} should be refused, not planned"
        );
        cli_sample.push((name, text));
    }

    // 3. Payloads in every string field of the shipped example topologies.
    let long = long_payload();
    let mut payloads: Vec<&str> = PAYLOADS.to_vec();
    payloads.push(&long);
    let mut fields_seen = 0;
    for (name, base) in bases.iter().filter(|(n, _)| !n.starts_with("mx-")) {
        for field in string_fields(base) {
            fields_seen += 1;
            for (pi, p) in payloads.iter().enumerate() {
                let text = inject(base, field, p);
                let case = format!("{name} line {} payload {pi}", field.0 + 1);
                if let Some(c) = run_case(&mut t, &case, text) {
                    for (host, s) in c.scripts {
                        sh_checked.push((format!("{case} {host}"), s.clone()));
                        if s.contains("lvslab-escape") {
                            injected_scripts.push((format!("{case} {host}"), s));
                        }
                    }
                }
            }
        }
    }

    // Every script the shell will read parses.
    let bad_sh = sh_n(&sh_checked);
    // Payload-carrying scripts really run, sandboxed.
    let escapes = sandboxed(&injected_scripts);

    // validate ok ⇔ plan ok, through the binary, on a sample.
    let mismatches = validate_iff_plan(&cli_sample);

    let report = format!(
        "adversarial suite (seed {SEED:#x}): {} cases ({mutations} mutations of {} topologies, {} limit cases, \
         {} payloads in {fields_seen} string fields); {} refused with a diagnostic, {} planned; \
         {} scripts checked with sh -n ({} fail); {} payload-carrying scripts run sandboxed: escapes = {}; \
         panics = {}; cases over {SLOW:?} = {}; slowest {:?} ({}); secret leaks = {}; \
         validate⇔plan checked on {} files through the binary: mismatches = {}; took {:.0?}\n",
        t.cases,
        bases.len(),
        limit_cases().len(),
        payloads.len(),
        t.refused,
        t.planned,
        sh_checked.len(),
        bad_sh.len(),
        injected_scripts.len(),
        escapes.len(),
        t.panics.len(),
        t.slow.len(),
        t.slowest.0,
        t.slowest.1,
        t.leaks.len(),
        cli_sample.len(),
        mismatches.len(),
        started.elapsed(),
    );
    print!("{report}");
    let _ = std::fs::create_dir_all(repo().join("target"));
    let _ = std::fs::write(repo().join("target/adversarial.log"), &report);
    assert!(t.panics.is_empty(), "panics: {:?}", t.panics);
    assert!(t.slow.is_empty(), "slow cases: {:?}", t.slow);
    assert!(t.leaks.is_empty(), "secret leaks: {:?}", t.leaks);
    assert!(bad_sh.is_empty(), "scripts sh -n refuses: {:?}", bad_sh);
    assert!(escapes.is_empty(), "ESCAPES (payloads that ran): {escapes:?}");
    assert!(mismatches.is_empty(), "validate and plan disagree: {mismatches:?}");
    assert!(
        !injected_scripts.is_empty(),
        "no payload reached a script: the sandbox check would prove nothing"
    );
}

fn sh_n(scripts: &[(String, String)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    for (i, (_, s)) in scripts.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i:06}.sh")), s).unwrap();
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg("for f in \"$1\"/*.sh; do sh -n \"$f\" 2>/dev/null || basename \"$f\" .sh; done")
        .arg("sh")
        .arg(dir.path())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.parse::<usize>().ok())
        .map(|i| scripts[i].0.clone())
        .collect()
}

fn validate_iff_plan(sample: &[(String, String)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let bin = env!("CARGO_BIN_EXE_lvslab");
    let mut bad = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, (name, text)) in sample.iter().enumerate() {
        if !seen.insert(text.clone()) {
            continue;
        }
        let f = dir.path().join(format!("{i}.yaml"));
        std::fs::write(&f, text).unwrap();
        let code = |verb: &str| {
            let out = Command::new(bin)
                .arg(verb)
                .arg(&f)
                .env("LVSLAB_STATE_DIR", &state)
                .output()
                .unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code(), all)
        };
        let (v, vout) = code("validate");
        let (p, pout) = code("plan");
        if (v == Some(0)) != (p == Some(0)) || v.is_none() || p.is_none() {
            bad.push(format!("{name}: validate {v:?}, plan {p:?}"));
        }
        if text.contains(&format!("auth_pass: \"{SECRET}\"")) && (vout.contains(SECRET) || pout.contains(SECRET)) {
            bad.push(format!("{name}: the secret is printed"));
        }
        if vout.contains("error: error:") || pout.contains("error: error:") {
            bad.push(format!("{name}: `error: error:`"));
        }
    }
    bad
}
