//! The step language a plain host takes: `line`, `file` from `src:` and
//! from a user's template with variables, content rendered only when asked, hosts without a
//! role or a network; compiled, run through the runner, and over SSH.

use std::path::Path;
use std::sync::Arc;

use lvslab::exec::runner::{self, HostConn, Options, Silent, Status};
use lvslab::exec::transport::{LocalTransport, Transport};
use lvslab::plan::{Plan, Resource};
use lvslab::state::LabState;

use crate::ssh::{Lab, recap};

/// A topology file in `dir` with one plain host `h` and `steps`.
fn topology(dir: &Path, top: &str, steps: &str) -> std::path::PathBuf {
    let path = dir.join("t.yaml");
    std::fs::write(&path, format!("lab: steps\n{top}hosts:\n  h:\n    steps:\n{steps}")).unwrap();
    path
}

fn compile(path: &Path) -> Result<Plan, String> {
    let loaded = lvslab::load(path).map_err(|d| d.to_string())?;
    lvslab::compile::compile(&loaded.topology).map_err(|e| e.to_string())
}

/// The error of a topology with one plain host `h` and `steps`.
fn steps_err(dir: &Path, steps: &str) -> String {
    compile(&topology(dir, "", steps)).unwrap_err()
}

fn resources(plan: &Plan) -> Vec<Resource> {
    plan.phases
        .iter()
        .flat_map(|p| &p.hosts)
        .flat_map(|h| &h.steps)
        .map(|s| s.resource.clone())
        .collect()
}

fn content_of(plan: &Plan, path: &str) -> String {
    resources(plan)
        .into_iter()
        .find_map(|r| match r {
            Resource::File { path: p, content, .. } if p == path => Some(content),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no file step for {path}"))
}

#[test]
fn a_plain_host_needs_no_role_network_or_mode() {
    let dir = tempfile::tempdir().unwrap();
    let t = topology(dir.path(), "", "      - directory: { path: /tmp/x }\n        why: t\n");
    let plan = compile(&t).unwrap();
    assert_eq!(resources(&plan).len(), 1, "only its own step: {:?}", resources(&plan));
    // Its plan claims no LVS mode it does not have (it once said "mode DR").
    let text = lvslab::report::plan_text(&plan);
    assert!(
        text.starts_with("Plan for lab steps (no LVS services): 1 host"),
        "{text}"
    );
    assert!(!text.contains("DR"), "{text}");
    let json = serde_json::to_value(&plan).unwrap();
    assert!(json.get("mode").is_none(), "{json}");
    // Services still need a mode (and a director).
    let t = topology(
        dir.path(),
        "services:\n  - { vip: 10.0.0.1, port: 80, real_servers: [{ host: h }] }\n",
        "      - directory: { path: /tmp/x }\n        why: t\n",
    );
    let err = compile(&t).unwrap_err();
    assert!(err.contains("no `mode:`"), "{err}");
}

#[test]
fn src_files_are_read_next_to_the_topology_and_never_rendered() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("files")).unwrap();
    std::fs::write(dir.path().join("files/motd"), "{{ not a template }}\n").unwrap();
    std::fs::write(dir.path().join("files/page"), "<h1>{{ host.name }}</h1>\n").unwrap();
    let t = topology(
        dir.path(),
        "",
        "      - file: { path: /etc/motd, src: files/motd }\n        why: t\n\
         \x20     - file: { path: /etc/raw, content: \"{{ x }}\" }\n        why: t\n\
         \x20     - file: { path: /etc/rendered, content: \"{{ host.name }}\", render: true }\n        why: t\n\
         \x20     - file: { path: /etc/src-rendered, src: files/page, render: true }\n        why: t\n",
    );
    let plan = compile(&t).unwrap();
    assert_eq!(content_of(&plan, "/etc/motd"), "{{ not a template }}\n");
    assert_eq!(content_of(&plan, "/etc/raw"), "{{ x }}");
    assert_eq!(content_of(&plan, "/etc/rendered"), "h");
    assert_eq!(content_of(&plan, "/etc/src-rendered"), "<h1>h</h1>\n");
    // A missing file: the error points at the step, with a hint.
    let t = topology(
        dir.path(),
        "",
        "      - file: { path: /etc/motd, src: files/nope }\n        why: t\n",
    );
    let err = compile(&t).unwrap_err();
    assert!(err.contains("files/nope") && err.contains(":5:"), "{err}");
    assert!(err.contains("relative to the topology file"), "{err}");
    // Nothing outside the topology's directory.
    for outside in ["/etc/passwd", "../t.yaml", "files/../../x"] {
        let err = steps_err(
            dir.path(),
            &format!("      - file: {{ path: /etc/motd, src: \"{outside}\" }}\n        why: t\n"),
        );
        assert!(err.contains("not inside the topology's directory"), "{outside}: {err}");
    }
    // Nor through a symbolic link, to a file or to a directory (a cloned
    // repository with `files/x -> /etc/shadow`); a link inside stays fine.
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("key"), "SECRET\n").unwrap();
    std::os::unix::fs::symlink(secret.path().join("key"), dir.path().join("files/link")).unwrap();
    std::os::unix::fs::symlink(secret.path(), dir.path().join("files/updir")).unwrap();
    std::os::unix::fs::symlink("motd", dir.path().join("files/inside")).unwrap();
    for (step, escapes) in [
        ("src: files/link", true),
        ("src: files/updir/key", true),
        ("template: files/link", true),
        ("src: files/inside", false),
    ] {
        let t = topology(
            dir.path(),
            "",
            &format!("      - file: {{ path: /etc/motd, {step} }}\n        why: t\n"),
        );
        match compile(&t) {
            Err(err) if escapes => {
                assert!(err.contains("leads out of the topology's directory"), "{step}: {err}");
                assert!(!err.contains("SECRET"), "{step}: {err}");
            }
            Ok(plan) if !escapes => assert!(!content_of(&plan, "/etc/motd").contains("SECRET")),
            other => panic!("{step}: {other:?}"),
        }
    }
}

#[test]
fn user_templates_see_lab_group_and_host_variables_like_ansible() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.j2"),
        "name={{ name }} tier={{ tier }} port={{ port }} host={{ host.name }}\n\
         {% for b in backends %}\n\
         backend {{ b }}\n\
         {% endfor %}\n\
         \x20 {% if tier == 'front' %}\n\
         cache\n\
         \x20 {% endif %}\n",
    )
    .unwrap();
    let top = "vars: { name: shop, tier: lab, port: 1, backends: [a, b] }\n\
               groups:\n  g: { hosts: [h], vars: { tier: front, port: 2 } }\n";
    let steps = |extra: &str| {
        format!(
            "    vars: {{ port: 3 }}\n    steps:\n      - file: {{ path: /etc/app.conf, template: app.j2{extra} }}\n        why: t\n"
        )
    };
    let write = |steps: String| {
        let path = dir.path().join("t.yaml");
        std::fs::write(&path, format!("lab: steps\n{top}hosts:\n  h:\n{steps}")).unwrap();
        path
    };
    let plan = compile(&write(steps(""))).unwrap();
    // trim_blocks: no newline after a block tag; lstrip_blocks off: the
    // spaces before `{% if %}` stay.
    assert_eq!(
        content_of(&plan, "/etc/app.conf"),
        "name=shop tier=front port=3 host=h\nbackend a\nbackend b\n  cache\n  "
    );
    let plan = compile(&write(steps(", lstrip_blocks: true"))).unwrap();
    assert_eq!(
        content_of(&plan, "/etc/app.conf"),
        "name=shop tier=front port=3 host=h\nbackend a\nbackend b\ncache\n"
    );
    // An undefined variable names the template and shows the line, but not
    // the values of the variables the template used (a password, say).
    std::fs::write(dir.path().join("bad.j2"), "pass={{ db_password }}\n{{ nope }}\n").unwrap();
    let path = dir.path().join("t.yaml");
    std::fs::write(
        &path,
        "lab: steps\nvars: { db_password: S3cr3t-hunter2 }\nhosts:\n  h:\n    steps:\n      - file: { path: /etc/x, template: bad.j2 }\n        why: t\n",
    )
    .unwrap();
    let err = compile(&path).unwrap_err();
    assert!(err.contains("bad.j2") && err.contains("undefined"), "{err}");
    assert!(err.contains("2 > {{ nope }}"), "the excerpt: {err}");
    assert!(!err.contains("hunter2") && !err.contains("Referenced"), "{err}");
    // lvslab's own parameters of a file step are not the user's to set.
    for internal in ["raw: true", "template_source: x"] {
        std::fs::write(
            &path,
            format!("lab: steps\nhosts:\n  h:\n    steps:\n      - file: {{ path: /etc/x, content: a, {internal} }}\n        why: t\n"),
        )
        .unwrap();
        let err = compile(&path).unwrap_err();
        assert!(err.contains("unknown parameter"), "{internal}: {err}");
    }
    // A template of the user's own with the name of one of lvslab's is theirs.
    std::fs::write(dir.path().join("exports.j2"), "mine {{ host.name }}\n").unwrap();
    std::fs::write(
        &path,
        "lab: steps\nhosts:\n  h:\n    steps:\n      - file: { path: /etc/x, template: exports.j2 }\n        why: t\n",
    )
    .unwrap();
    assert_eq!(content_of(&compile(&path).unwrap(), "/etc/x"), "mine h\n");
    // A variable may not hide lvslab's context, and a group names real hosts.
    std::fs::write(
        &path,
        "lab: steps\nhosts:\n  h:\n    vars: { host: x }\n    steps:\n      - file: { path: /etc/x, content: a }\n        why: t\n",
    )
    .unwrap();
    assert!(compile(&path).unwrap_err().contains("variable `host`"));
    std::fs::write(
        &path,
        "lab: steps\ngroups:\n  g: { hosts: [hh] }\nhosts:\n  h:\n    steps:\n      - file: { path: /etc/x, content: a }\n        why: t\n",
    )
    .unwrap();
    let err = compile(&path).unwrap_err();
    assert!(err.contains("`hh`") && err.contains("did you mean `h`"), "{err}");
}

#[test]
fn line_steps_compile_from_line_or_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let t = topology(
        dir.path(),
        "",
        "      - line: { path: /etc/a.conf, key: net.core.x, value: 1 }\n        why: t\n\
         \x20     - line: { path: /etc/ssh/sshd_config, key: PermitRootLogin, value: \"no\", separator: \" \" }\n        why: t\n\
         \x20     - line: { path: /etc/hosts, line: \"10.0.0.1 db\", regexp: '\\sdb$' }\n        why: t\n",
    );
    let plan = compile(&t).unwrap();
    let lines: Vec<(String, Option<String>)> = resources(&plan)
        .into_iter()
        .filter_map(|r| match r {
            Resource::Line { line, regexp, .. } => Some((line, regexp)),
            _ => None,
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            // POSIX classes, not `\s`: the same pattern in Rust and in mawk
            // (`plan --format sh`).
            (
                "net.core.x = 1".into(),
                Some(r"^[[:space:]]*net\.core\.x[[:space:]]*=".into())
            ),
            (
                "PermitRootLogin no".into(),
                Some(r"^[[:space:]]*PermitRootLogin([[:space:]]|$)".into())
            ),
            ("10.0.0.1 db".into(), Some(r"\sdb$".into())),
        ]
    );
    // Steps that would undo each other on every run are refused, at the
    // second one, naming the first.
    for (a, b) in [
        (
            "file: { path: /etc/m.conf, content: \"a = 1\\n\" }",
            "line: { path: /etc/m.conf, key: b, value: 2 }",
        ),
        (
            "line: { path: /etc/m.conf, line: \"x = 1\" }",
            "line: { path: /etc/m.conf, key: x, value: 2 }",
        ),
        (
            "line: { path: /etc/m.conf, line: port=1, regexp: '^port=' }",
            "line: { path: /etc/m.conf, line: port=2, regexp: '^port' }",
        ),
        // One file, spelt two ways.
        (
            "file: { path: /etc//m.conf, content: x }",
            "line: { path: /etc/m.conf, key: b, value: 2 }",
        ),
    ] {
        let err = steps_err(
            dir.path(),
            &format!("      - {a}\n        why: t\n      - {b}\n        why: t\n"),
        );
        assert!(
            err.contains("t.yaml:7:") && err.contains("line 5 undo each other"),
            "{a} / {b}: {err}"
        );
    }
    // Different keys, or one line wanted twice, are fine.
    let t = topology(
        dir.path(),
        "",
        "      - line: { path: /etc/m.conf, key: a, value: 1 }\n        why: t\n\
         \x20     - line: { path: /etc/m.conf, key: ab, value: 1 }\n        why: t\n\
         \x20     - line: { path: /etc/m.conf, line: \"a = 1\" }\n        why: t\n",
    );
    compile(&t).unwrap();
    // A `when` or a `loop` naming nothing is a typo, not a false or an empty list.
    for (meta, why) in [
        ("when: enabeld", "when `enabeld` is undefined"),
        ("loop: itmes", "loop `itmes` is undefined"),
        ("loop: \"'abc'\"", "is a string"),
        ("phse: network", "`phse`: did you mean `phase`?"),
    ] {
        let err = steps_err(
            dir.path(),
            &format!("      - directory: {{ path: /tmp/x }}\n        why: t\n        {meta}\n"),
        );
        assert!(err.contains(why) && err.contains("t.yaml:5:"), "{meta}: {err}");
    }
    // Every bad step is reported, not only the first.
    let t = topology(
        dir.path(),
        "",
        "      - directory: { path: /tmp/x }\n        why: t\n        when: nope\n\
         \x20     - file: { path: /srv/y/, content: x }\n        why: t\n",
    );
    let err = compile(&t).unwrap_err();
    assert!(err.contains("t.yaml:5:") && err.contains("t.yaml:8:"), "{err}");
    // `when:` and `loop:` as YAML values, as Ansible users write them.
    for (meta, n) in [
        ("when: false", 0),
        ("when: true", 1),
        ("when: [true, enabled]", 0),
        ("when: [true, \"not enabled\"]", 1),
        ("loop: []", 0),
        ("loop: [a, b, \"{{ lab }}\"]", 3),
        ("loop: \"{{ [1, 2] }}\"", 2),
    ] {
        let t = topology(
            dir.path(),
            "vars: { enabled: false }\n",
            &format!(
                "      - directory: {{ path: \"/tmp/x-{{{{ item | default('one') }}}}\" }}\n        why: t\n        {meta}\n"
            ),
        );
        let plan = compile(&t).unwrap_or_else(|e| panic!("{meta}: {e}"));
        assert_eq!(resources(&plan).len(), n, "{meta}: {:?}", resources(&plan));
    }
    let t = topology(
        dir.path(),
        "",
        "      - directory: { path: \"/tmp/x-{{ item }}\" }\n        why: t\n        loop: [a, b]\n",
    );
    let paths: Vec<String> = resources(&compile(&t).unwrap())
        .into_iter()
        .filter_map(|r| match r {
            Resource::Directory { path, .. } => Some(path),
            _ => None,
        })
        .collect();
    assert_eq!(paths, ["/tmp/x-a", "/tmp/x-b"]);
    for meta in ["when: 0", "when:", "loop: true"] {
        let err = steps_err(
            dir.path(),
            &format!("      - directory: {{ path: /tmp/x }}\n        why: t\n        {meta}\n"),
        );
        assert!(
            err.contains("not a condition") || err.contains("neither an expression nor a list"),
            "{meta}: {err}"
        );
    }
    let t = topology(
        dir.path(),
        "vars: { enabled: false }\n",
        "      - directory: { path: /tmp/x }\n        why: t\n        when: enabled or (other is defined)\n",
    );
    assert!(resources(&compile(&t).unwrap()).is_empty());
    for bad in [
        "{ path: /etc/a, line: x, key: k, value: v }",
        "{ path: /etc/a, line: x, regexp: '(' }",
        "{ path: /etc/a }",
    ] {
        let err = steps_err(dir.path(), &format!("      - line: {bad}\n        why: t\n"));
        assert!(err.contains("t.yaml:5:"), "{bad}: {err}");
    }
}

use crate::runner::run_counted as run;

/// `down` of what `state` records, on host `h` (this machine).
async fn down(plan: &Arc<Plan>, state: LabState) -> (runner::RunOutcome, LabState) {
    let host = HostConn {
        host: "h".into(),
        transport: Ok(Arc::new(LocalTransport::new("h")) as Arc<dyn Transport>),
    };
    let opts = Options { check: false, forks: 1 };
    runner::down(Arc::clone(plan), vec![host], state, opts, Arc::new(Silent)).await
}

/// A second run of `plan`: every step ok, in one round trip.
async fn second_run_changes_nothing(plan: &Arc<Plan>, state: LabState) -> LabState {
    let (calls, outcome, state) = run(plan, state, false).await;
    assert!(
        outcome.results.iter().all(|r| r.status == Status::Ok),
        "{:?}",
        outcome.results
    );
    assert_eq!(calls, 1);
    state
}

/// Several lines in one file apply in one round trip, each on what the one
/// before left; `--check` shows a diff; `down` puts back exactly what was
/// there, and removes a file lvslab made.
#[tokio::test]
async fn lines_apply_together_show_diffs_and_revert_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("app.conf");
    let made = dir.path().join("new/made.conf");
    let before = "# app\nport = 1\nname=old\ntail without newline";
    std::fs::write(&conf, before).unwrap();
    let (c, m) = (conf.display(), made.display());
    let t = topology(
        dir.path(),
        "",
        &format!(
            "      - line: {{ path: {c}, key: port, value: 8080 }}\n        why: t\n\
             \x20     - line: {{ path: {c}, key: workers, value: 4 }}\n        why: t\n\
             \x20     - line: {{ path: {c}, line: \"name = new\", regexp: '^name\\s*=' }}\n        why: t\n\
             \x20     - line: {{ path: {m}, line: \"x = 1\", mode: \"0600\" }}\n        why: t\n"
        ),
    );
    let plan = Arc::new(compile(&t).unwrap());
    let (calls, outcome, state) = run(&plan, LabState::default(), false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert!(
        outcome.results.iter().all(|r| r.status == Status::Changed),
        "{:?}",
        outcome.results
    );
    assert_eq!(calls, 2, "observe, then apply and read back");
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "# app\nport = 8080\nname = new\ntail without newline\nworkers = 4\n"
    );
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "x = 1\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&made).unwrap().permissions().mode() & 0o777, 0o600);

    let state = second_run_changes_nothing(&plan, state).await;

    // A hand edit: --check names it and shows the file's diff.
    let edited = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("port = 8080", "port = 9");
    std::fs::write(&conf, &edited).unwrap();
    let (_, check, state) = run(&plan, state, true).await;
    let r = check.results.iter().find(|r| r.status == Status::WouldChange).unwrap();
    assert_eq!(r.details, vec!["is `port = 9` (want `port = 8080`)".to_string()]);
    let diff = r.diff.as_deref().unwrap();
    assert!(diff.contains("-port = 9") && diff.contains("+port = 8080"), "{diff}");
    // up repairs just that line: one apply round trip more.
    let (calls, outcome, state) = run(&plan, state, false).await;
    assert_eq!(calls, 2);
    assert_eq!(
        outcome.results.iter().filter(|r| r.status == Status::Changed).count(),
        1
    );
    assert!(std::fs::read_to_string(&conf).unwrap().contains("\nport = 8080\n"));

    // down: the replaced lines come back, the added ones go, the made file too.
    let (outcome, left) = down(&plan, state).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert!(left.hosts.values().all(|h| h.changes.is_empty()));
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "# app\nport = 1\nname=old\ntail without newline\n",
        "as before, but for the final newline a line edit adds"
    );
    assert!(!made.exists(), "made by lvslab: removed");
}

/// Two line steps on one file where the second is already satisfied by the
/// first: it records nothing, so `down` puts back exactly what was there;
/// a large file is never edited (it could not be read back whole); a check
/// stops at its first failing command.
#[tokio::test]
async fn chained_lines_large_files_and_multi_command_checks() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("x.conf");
    std::fs::write(&conf, "x=0\n").unwrap();
    let big = dir.path().join("big.conf");
    std::fs::write(&big, "y\n".repeat(600_000)).unwrap();
    let (c, b, w) = (conf.display(), big.display(), dir.path().display());
    let t = topology(
        dir.path(),
        "",
        &format!(
            "      - line: {{ path: {c}, key: x, value: 1, separator: \"=\" }}\n        why: t\n\
             \x20     - line: {{ path: {c}, line: \"x=1\" }}\n        why: t\n\
             \x20     - command: {{ name: two, check: \"test -f {w}/a\\ntrue\", run: \"touch {w}/a\", revert: \"rm -f {w}/a\" }}\n        why: t\n"
        ),
    );
    let plan = Arc::new(compile(&t).unwrap());
    let (_, outcome, state) = run(&plan, LabState::default(), false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "x=1\n");
    assert!(
        dir.path().join("a").exists(),
        "the check failed on its first command, so run ran"
    );
    let (outcome, _) = down(&plan, state).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "x=0\n");

    let t = topology(
        dir.path(),
        "",
        &format!("      - line: {{ path: {b}, line: z }}\n        why: t\n"),
    );
    let (_, outcome, _) = run(&Arc::new(compile(&t).unwrap()), LabState::default(), false).await;
    assert!(outcome.failed);
    assert!(
        outcome.results[0].details.iter().any(|d| d.contains("larger than")),
        "{:?}",
        outcome.results
    );
    assert_eq!(std::fs::metadata(&big).unwrap().len(), 1_200_000, "untouched");
}

/// The whole language over SSH on a host with no role and no network:
/// up, a hand edit that drift shows as a diff (exit 2), --fix, down.
#[test]
fn the_step_language_over_ssh() {
    let lab = Lab::new();
    let sshd = lab.sshd("sshd");
    let work = lab.work();
    std::fs::create_dir_all(lab.path("files")).unwrap();
    std::fs::write(lab.path("files/motd"), "hello {{ literally }}\n").unwrap();
    std::fs::write(lab.path("app.j2"), "port={{ port }} tier={{ tier }}\n").unwrap();
    let hosts = format!(
        "  plain:\n    os: debian\n    vars: {{ port: 81 }}\n    steps:\n\
         \x20     - file: {{ path: {work}/motd, src: files/motd }}\n        why: t\n\
         \x20     - file: {{ path: {work}/app.conf, template: app.j2 }}\n        why: t\n\
         \x20     - line: {{ path: {work}/settings, key: a, value: 1 }}\n        why: t\n\
         \x20     - line: {{ path: {work}/settings, key: b, value: 2 }}\n        why: t\n"
    );
    let topo = lab.topology("plain", sshd.port, &hosts);
    // No network, no role: drop the lab network the helper writes.
    let text = std::fs::read_to_string(&topo)
        .unwrap()
        .replace("mode: dr\n", "vars: { tier: t1 }\n")
        .replace("networks:\n  lan: { cidr: 10.99.0.0/24 }\n", "");
    std::fs::write(&topo, text).unwrap();
    let t = topo.to_str().unwrap();
    let up = lab.lvslab(&["up", t, "--accept-new-host-keys"]).run();
    assert_eq!(up.code, 0, "{}\n{}", up.stdout, up.stderr);
    assert_eq!(recap(&up, "plain"), (0, 4, 0, 0));
    assert_eq!(
        std::fs::read_to_string(format!("{work}/motd")).unwrap(),
        "hello {{ literally }}\n"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{work}/app.conf")).unwrap(),
        "port=81 tier=t1\n"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{work}/settings")).unwrap(),
        "a = 1\nb = 2\n"
    );

    std::fs::write(format!("{work}/settings"), "a = 7\nb = 2\n").unwrap();
    let drift = lab.lvslab(&["drift", t]).run();
    assert_eq!(drift.code, 2, "{}\n{}", drift.stdout, drift.stderr);
    let all = format!("{}{}", drift.stdout, drift.stderr);
    assert!(
        all.contains("line in") && all.contains("is `a = 7` (want `a = 1`)"),
        "{all}"
    );
    assert!(all.contains("-a = 7") && all.contains("+a = 1"), "the diff: {all}");
    let fix = lab.lvslab(&["drift", t, "--fix"]).run();
    assert_eq!(fix.code, 0, "{}\n{}", fix.stdout, fix.stderr);
    assert_eq!(
        std::fs::read_to_string(format!("{work}/settings")).unwrap(),
        "a = 1\nb = 2\n"
    );

    let down = lab.lvslab(&["down", t]).run();
    assert_eq!(down.code, 0, "{}\n{}", down.stdout, down.stderr);
    for f in ["motd", "app.conf", "settings"] {
        assert!(!Path::new(&format!("{work}/{f}")).exists(), "{f} is gone");
    }
}

/// Steps on what a real machine has: a symbolic link stays a link (the
/// file it names is edited), a file keeps its owner, and both are as before
/// after `down`. What `down` could not undo, or what is not the kind of
/// thing the step makes, fails with the reason and is left alone.
#[tokio::test]
async fn links_owners_and_what_a_step_refuses() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.conf");
    let link = dir.path().join("link.conf");
    let owned = dir.path().join("owned.conf");
    std::fs::write(&real, "a = 1\r\nb = 1\r\n").unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&real, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::symlink("real.conf", &link).unwrap();
    std::fs::write(&owned, "old\n").unwrap();
    std::os::unix::fs::chown(&owned, Some(65534), Some(65534)).unwrap();
    let (l, o) = (link.display(), owned.display());
    let t = topology(
        dir.path(),
        "",
        &format!(
            "      - line: {{ path: {l}, key: a, value: 2 }}\n        why: t\n\
             \x20     - file: {{ path: {o}, content: \"new\\n\", mode: \"0600\" }}\n        why: t\n"
        ),
    );
    let plan = Arc::new(compile(&t).unwrap());
    let (_, outcome, state) = run(&plan, LabState::default(), false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert!(
        std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
        "still a link"
    );
    // The edited line ends in `\n`; the others keep their `\r`.
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "a = 2\nb = 1\r\n");
    for (f, mode) in [(&real, 0o640), (&owned, 0o600)] {
        let m = std::fs::metadata(f).unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode() & 0o777),
            (65534, 65534, mode),
            "{}",
            f.display()
        );
    }
    // Read back through the link: the second run changes nothing.
    let state = second_run_changes_nothing(&plan, state).await;
    let (outcome, _) = down(&plan, state).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert!(
        std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
        "still a link"
    );
    assert_eq!(std::fs::read_to_string(&real).unwrap(), "a = 1\r\nb = 1\r\n");
    assert_eq!(std::fs::read_to_string(&owned).unwrap(), "old\n");
    for f in [&real, &owned] {
        let m = std::fs::metadata(f).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{}", f.display());
    }

    // Refused, with the reason, and nothing touched.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x\n").unwrap();
    let sub = dir.path().join("a-dir");
    std::fs::create_dir(&sub).unwrap();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; (1 << 20) + 1]).unwrap();
    for (step, why) in [
        (
            format!("directory: {{ path: {} }}", file.display()),
            "exists and is not a directory",
        ),
        (
            format!("file: {{ path: {}, content: x }}", sub.display()),
            "is a directory",
        ),
        (
            format!("file: {{ path: {}, content: x }}", big.display()),
            "too large for lvslab to keep",
        ),
    ] {
        let t = topology(dir.path(), "", &format!("      - {step}\n        why: t\n"));
        let plan = Arc::new(compile(&t).unwrap());
        let (_, outcome, _) = run(&plan, LabState::default(), false).await;
        let r = &outcome.results[0];
        assert_eq!(r.status, Status::Failed, "{step}: {:?}", outcome.results);
        assert!(r.details.join("\n").contains(why), "{step}: {:?}", r.details);
    }
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o644, "not chmodded");
    assert_eq!(
        std::fs::read_dir(&sub).unwrap().count(),
        0,
        "nothing left in the directory"
    );
    assert_eq!(std::fs::metadata(&big).unwrap().len(), (1 << 20) + 1);
    // A file's path with a trailing `/` is refused before any run.
    let t = topology(
        dir.path(),
        "",
        "      - file: { path: /srv/d/, content: x }\n        why: t\n",
    );
    assert!(compile(&t).unwrap_err().contains("ends with `/`"));
}

/// What `down` cannot or must not undo is kept, not failed: a command
/// without a `revert`, and a line someone changed by hand after lvslab set
/// it (it is theirs). Both leave the record; the rest is reverted.
#[tokio::test]
async fn down_keeps_a_command_without_revert_and_a_line_changed_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("app.conf");
    let seeded = dir.path().join("seeded");
    std::fs::write(&conf, "# header\nfoo = old\nbar = old\n").unwrap();
    let (c, s) = (conf.display(), seeded.display());
    let t = topology(
        dir.path(),
        "",
        &format!(
            "      - line: {{ path: {c}, key: foo, value: new }}\n        why: t\n\
             \x20     - line: {{ path: {c}, key: bar, value: new }}\n        why: t\n\
             \x20     - command: {{ name: seed, check: \"test -f {s}\", run: \"touch {s}\" }}\n        why: t\n"
        ),
    );
    let plan = Arc::new(compile(&t).unwrap());
    let (_, outcome, state) = run(&plan, LabState::default(), false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    let edited = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("foo = new", "foo = hand");
    std::fs::write(&conf, edited).unwrap();
    let (outcome, left) = down(&plan, state).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    let status = |id: &str| outcome.results.iter().find(|r| r.id.contains(id)).map(|r| r.status);
    assert_eq!(status("command"), Some(Status::Kept), "{:?}", outcome.results);
    assert_eq!(status("foo"), Some(Status::Kept), "{:?}", outcome.results);
    assert_eq!(status("bar"), Some(Status::Reverted), "{:?}", outcome.results);
    assert!(left.hosts.values().all(|h| h.changes.is_empty()), "{left:?}");
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "# header\nfoo = hand\nbar = old\n"
    );
    assert!(seeded.exists(), "no revert: what the command did stays");
}

/// `down` touches only what `up` did: a step that never ran (an earlier one
/// failed) or that failed leaving its path as it was records nothing, so a
/// directory made there by hand later survives `down`; a file lvslab made
/// and someone changed since is kept; a setuid file keeps its bits; a file
/// made through a dangling link goes, the link stays.
#[tokio::test]
async fn down_touches_only_what_up_did() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let (data, refused) = (dir.path().join("data"), dir.path().join("a-dir"));
    std::fs::create_dir(&refused).unwrap();
    let t = topology(
        dir.path(),
        "",
        &format!(
            "      - file: {{ path: {r}, content: x }}\n        why: refused, touches nothing\n\
             \x20     - directory: {{ path: {d}, purge: true }}\n        why: never runs\n",
            r = refused.display(),
            d = data.display()
        ),
    );
    let plan = Arc::new(compile(&t).unwrap());
    let (_, outcome, state) = run(&plan, LabState::default(), false).await;
    assert!(outcome.failed);
    assert!(
        state.hosts.values().all(|h| h.changes.is_empty()),
        "nothing recorded: {state:?}"
    );
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("db"), "important").unwrap();
    let (outcome, _) = down(&plan, state).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert_eq!(std::fs::read_to_string(data.join("db")).unwrap(), "important");
    assert!(refused.is_dir());

    let (made, suid, dangling) = (
        dir.path().join("made"),
        dir.path().join("suid"),
        dir.path().join("dangling"),
    );
    std::fs::write(&suid, "old\n").unwrap();
    std::os::unix::fs::chown(&suid, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4750)).unwrap();
    std::os::unix::fs::symlink("target", &dangling).unwrap();
    let t = topology(
        dir.path(),
        "",
        &format!(
            "      - file: {{ path: {m}, content: \"ours\\n\" }}\n        why: t\n\
             \x20     - file: {{ path: {s}, content: \"new\\n\", mode: \"0755\" }}\n        why: t\n\
             \x20     - file: {{ path: {d}, content: \"ours\\n\" }}\n        why: t\n",
            m = made.display(),
            s = suid.display(),
            d = dangling.display()
        ),
    );
    let plan = Arc::new(compile(&t).unwrap());
    let (_, outcome, state) = run(&plan, LabState::default(), false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert_eq!(std::fs::read_to_string(dir.path().join("target")).unwrap(), "ours\n");
    std::fs::write(&made, "edited by hand\n").unwrap();
    let (outcome, left) = down(&plan, state).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    let made_status = outcome
        .results
        .iter()
        .find(|r| r.id.ends_with("/made"))
        .map(|r| r.status);
    assert_eq!(made_status, Some(Status::Kept), "{:?}", outcome.results);
    assert!(left.hosts.values().all(|h| h.changes.is_empty()));
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "edited by hand\n");
    let m = std::fs::metadata(&suid).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o4750, 65534), "setuid and owner back");
    assert_eq!(std::fs::read_to_string(&suid).unwrap(), "old\n");
    assert!(
        std::fs::symlink_metadata(&dangling).unwrap().file_type().is_symlink(),
        "the link stays"
    );
    assert!(!dir.path().join("target").exists(), "what lvslab made through it goes");
}

/// A file step whose content changed in the topology, but whose write never
/// happened (an earlier step failed): the record keeps what lvslab last
/// wrote, so `down` still removes the file lvslab made. A `validate`
/// command sees the new content under the name it is given, quotes and all.
#[tokio::test]
async fn a_file_made_by_lvslab_goes_at_down_even_if_a_later_write_failed() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page");
    let gate = dir.path().join("gate");
    let step = |content: &str| {
        format!(
            "      - command: {{ name: gate, check: \"test -f {g}\", run: \"false\" }}\n        why: t\n\
             \x20     - file: {{ path: {p}, content: \"{content}\\n\", validate: \"sh -c 'grep -q v %s'\" }}\n        why: t\n",
            g = gate.display(),
            p = page.display()
        )
    };
    std::fs::write(&gate, "").unwrap();
    let plan = Arc::new(compile(&topology(dir.path(), "", &step("v1"))).unwrap());
    let (_, outcome, state) = run(&plan, LabState::default(), false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert_eq!(std::fs::read_to_string(&page).unwrap(), "v1\n");
    // The validate command refuses content without a `v` (it reads the new file).
    let bad = Arc::new(compile(&topology(dir.path(), "", &step("x1"))).unwrap());
    let (_, outcome, state) = run(&bad, state, false).await;
    assert!(outcome.failed, "{:?}", outcome.results);
    assert_eq!(std::fs::read_to_string(&page).unwrap(), "v1\n", "left as it was");
    // v2 planned, but the gate's command fails first: the write is skipped.
    std::fs::remove_file(&gate).unwrap();
    let plan2 = Arc::new(compile(&topology(dir.path(), "", &step("v2"))).unwrap());
    let (_, outcome, state) = run(&plan2, state, false).await;
    assert!(outcome.failed);
    assert_eq!(std::fs::read_to_string(&page).unwrap(), "v1\n");
    let (outcome, _) = down(&plan2, state).await;
    assert!(
        !page.exists(),
        "made by lvslab, still as it wrote it: removed ({:?})",
        outcome.results
    );
}

/// A file found as planned is lvslab's, whatever the record says it last
/// wrote (a write whose confirmation was lost when the connection ended
/// after its rename): the record follows, and `down` removes the file.
#[tokio::test]
async fn a_file_found_as_planned_is_settled_as_lvslabs() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page");
    let step = |c: &str| {
        format!(
            "      - file: {{ path: {}, content: \"{c}\\n\" }}\n        why: t\n",
            page.display()
        )
    };
    let v1 = Arc::new(compile(&topology(dir.path(), "", &step("v1"))).unwrap());
    let (_, outcome, state) = run(&v1, LabState::default(), false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    // v2 is on the host (written, its confirmation lost); the record says v1.
    std::fs::write(&page, "v2\n").unwrap();
    let v2 = Arc::new(compile(&topology(dir.path(), "", &step("v2"))).unwrap());
    let (_, outcome, state) = run(&v2, state, false).await;
    assert!(
        outcome.results.iter().all(|r| r.status == Status::Ok),
        "{:?}",
        outcome.results
    );
    let (outcome, _) = down(&v2, state).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert!(!page.exists(), "lvslab's, removed: {:?}", outcome.results);
}

/// The directories a step's `mkdir -p` made (for a file, a line or a
/// directory) go at `down` while empty: the lab leaves nothing behind. One
/// that held something of the user's by then stays, and so does every
/// directory that was there before `up`.
#[tokio::test]
async fn down_removes_the_directories_up_made_while_empty() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let r = root.display();
    let t = topology(
        dir.path(),
        "",
        &format!(
            "      - file: {{ path: {r}/opt/app/conf/app.conf, content: \"x\\n\" }}\n        why: t\n\
             \x20     - file: {{ path: {r}/opt/app/conf/other.conf, content: \"y\\n\" }}\n        why: t\n\
             \x20     - line: {{ path: {r}/etc/new.d/sub/x.conf, key: level, value: 3 }}\n        why: t\n\
             \x20     - directory: {{ path: {r}/srv/a/b/c, mode: \"0750\" }}\n        why: t\n\
             \x20     - file: {{ path: {r}/kept/by/user.conf, content: \"z\\n\" }}\n        why: t\n\
             \x20     - file: {{ path: {r}/top.conf, content: \"t\\n\" }}\n        why: t\n"
        ),
    );
    let plan = Arc::new(compile(&t).unwrap());
    let (_, outcome, state) = run(&plan, LabState::default(), false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert!(root.join("srv/a/b/c").is_dir() && root.join("etc/new.d/sub/x.conf").is_file());
    let state = second_run_changes_nothing(&plan, state).await;
    std::fs::write(root.join("kept/mine"), "the user's").unwrap();
    let (outcome, left) = down(&plan, state).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert!(left.hosts.values().all(|h| h.changes.is_empty()));
    let mut after: Vec<String> = walk(&root);
    after.sort();
    assert_eq!(
        after,
        ["kept", "kept/mine"],
        "only the user's file and its directory stay"
    );
}

/// Every path under `root`, relative.
fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out
}

/// A file step that fails after its `mkdir -p` made directories (its
/// `validate` refuses the content) keeps them on its record: `down` removes
/// them, and nothing else.
#[tokio::test]
async fn directories_made_for_a_refused_file_go_at_down() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let t = topology(
        dir.path(),
        "",
        &format!(
            "      - file: {{ path: {}/new/deeper/f.conf, content: \"x\\n\", validate: \"false %s\" }}\n        why: t\n",
            root.display()
        ),
    );
    let plan = Arc::new(compile(&t).unwrap());
    let (_, outcome, state) = run(&plan, LabState::default(), false).await;
    assert!(outcome.failed, "{:?}", outcome.results);
    assert!(root.join("new/deeper").is_dir() && !root.join("new/deeper/f.conf").exists());
    let (outcome, _) = down(&plan, state).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert_eq!(walk(&root), Vec::<String>::new(), "{:?}", outcome.results);
}

/// What `down` finds changed by hand is the user's, and `kept`, never
/// `FAILED` nor "reverted": a line appended by lvslab and edited since; a
/// directory lvslab made holding the user's file; a `purge` directory
/// replaced by a link (nothing is removed through it). A directory step
/// dropped from the file while another step's file is in it stays, and the
/// run does not fail. Paths in more than one spelling are refused.
#[tokio::test]
async fn down_keeps_what_was_changed_by_hand_since() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r");
    std::fs::create_dir(&r).unwrap();
    std::fs::write(r.join("app.conf"), "k1 = 1\n").unwrap();
    let rd = r.display();
    let all = format!(
        "      - line: {{ path: {rd}/app.conf, key: k2, value: \"2\" }}\n        why: t\n\
         \x20     - directory: {{ path: {rd}/made }}\n        why: t\n\
         \x20     - directory: {{ path: {rd}/data, purge: true }}\n        why: t\n\
         \x20     - directory: {{ path: {rd}/app }}\n        why: t\n\
         \x20     - file: {{ path: {rd}/app/conf/a.conf, content: \"a\\n\" }}\n        why: t\n"
    );
    let plan = Arc::new(compile(&topology(dir.path(), "", &all)).unwrap());
    let (_, outcome, state) = run(&plan, LabState::default(), false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    // The `app` directory step dropped: its directory holds a.conf.
    let fewer = all.replace(
        &format!("      - directory: {{ path: {rd}/app }}\n        why: t\n"),
        "",
    );
    assert_ne!(fewer, all);
    let plan = Arc::new(compile(&topology(dir.path(), "", &fewer)).unwrap());
    let (_, outcome, state) = run(&plan, state, false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert!(r.join("app/conf/a.conf").exists());
    let state = second_run_changes_nothing(&plan, state).await;
    // By hand: the line edited, a file in `made`, `data` replaced by a link.
    std::fs::write(r.join("app.conf"), "k1 = 1\nk2 = 3\n").unwrap();
    std::fs::write(r.join("made/mine"), "x").unwrap();
    let precious = dir.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("db"), "important").unwrap();
    std::fs::remove_dir(r.join("data")).unwrap();
    std::os::unix::fs::symlink(&precious, r.join("data")).unwrap();
    let (outcome, _) = down(&plan, state).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    let status = |end: &str| {
        outcome
            .results
            .iter()
            .find(|x| x.id.ends_with(end) || x.id.starts_with(&format!("line:{rd}{end}")))
            .map(|x| x.status)
    };
    for end in ["/app.conf", "/made", "/data"] {
        assert_eq!(status(end), Some(Status::Kept), "{end}: {:?}", outcome.results);
    }
    assert_eq!(std::fs::read_to_string(r.join("app.conf")).unwrap(), "k1 = 1\nk2 = 3\n");
    assert_eq!(std::fs::read_to_string(precious.join("db")).unwrap(), "important");
    assert!(r.join("made/mine").exists() && !r.join("app").exists());
    for bad in [format!("{rd}/x/"), format!("{rd}/./x"), format!("{rd}/x/.")] {
        for step in ["directory: { path: BAD }", "file: { path: BAD, content: x }"] {
            let step = step.replace("BAD", &bad);
            let err = steps_err(dir.path(), &format!("      - {step}\n        why: t\n"));
            assert!(
                err.contains("t.yaml:5:") && (err.contains("write it without") || err.contains("ends with `/`")),
                "{step}: {err}"
            );
        }
    }
}

/// Directories made by steps of different phases, the earlier phase's step
/// added by a later `up` inside directories the first `up` made: `down`
/// leaves nothing (each phase's clean-up tries the later phases' again).
#[tokio::test]
async fn directories_made_across_phases_all_go() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let r = root.display();
    let f1 = format!("      - file: {{ path: {r}/a/b/f1, content: \"1\\n\" }}\n        why: t\n");
    let f2 =
        format!("      - file: {{ path: {r}/a/c/f2, content: \"2\\n\" }}\n        phase: network\n        why: t\n");
    let plan = Arc::new(compile(&topology(dir.path(), "", &f1)).unwrap());
    let (_, outcome, state) = run(&plan, LabState::default(), false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    let plan = Arc::new(compile(&topology(dir.path(), "", &format!("{f1}{f2}"))).unwrap());
    let (_, outcome, state) = run(&plan, state, false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    let (outcome, _) = down(&plan, state).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert_eq!(walk(&root), Vec::<String>::new());
}

/// A `purge` directory with a file system mounted in it: `down` refuses to
/// remove into it (the mounted files stay) and says so; once unmounted, a
/// second `down` removes the directory. A line lvslab made a file for,
/// deleted by hand since, is reverted with its file (not `kept`).
#[tokio::test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
async fn purge_never_removes_into_a_mounted_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r");
    std::fs::create_dir(&r).unwrap();
    let rd = r.display();
    let t = topology(
        dir.path(),
        "",
        &format!(
            "      - directory: {{ path: {rd}/data, purge: true }}\n        why: t\n\
             \x20     - line: {{ path: {rd}/new/l.conf, line: a=1 }}\n        why: t\n"
        ),
    );
    let plan = Arc::new(compile(&t).unwrap());
    let (_, outcome, state) = run(&plan, LabState::default(), false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    let m = r.join("data/m");
    std::fs::create_dir(&m).unwrap();
    let mount = |args: &[&str]| std::process::Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(mount(&["mount", "-t", "tmpfs", "lvslab-test", m.to_str().unwrap()]).success());
    std::fs::write(m.join("export"), "precious").unwrap();
    std::fs::write(r.join("new/l.conf"), "").unwrap();
    let (outcome, state) = down(&plan, state).await;
    let purge = outcome.results.iter().find(|x| x.id.ends_with("/data"));
    let said = format!("{purge:?}");
    assert!(
        outcome.failed && said.contains("a file system is mounted in it"),
        "{said}"
    );
    assert_eq!(std::fs::read_to_string(m.join("export")).unwrap(), "precious");
    let line = outcome
        .results
        .iter()
        .find(|x| x.id.contains("/new/l.conf"))
        .map(|x| x.status);
    assert_eq!(line, Some(Status::Reverted), "{:?}", outcome.results);
    assert!(mount(&["umount", m.to_str().unwrap()]).success());
    let (outcome, _) = down(&plan, state).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    assert_eq!(walk(&r), Vec::<String>::new());
}
