//! The runner through the library, with local transports wrapped in a counter.

use std::sync::Arc;

use lvslab::exec::runner::{self, HostConn, Options, Silent, Status};
use lvslab::exec::transport::{Counting, LocalTransport, Transport};
use lvslab::state::LabState;

fn plan_with(work: &str, n: usize) -> lvslab::plan::Plan {
    let mut steps = String::new();
    for i in 0..n {
        steps.push_str(&format!(
            "      - file: {{ path: {work}/f{i}, content: \"{i}\\n\" }}\n        why: file {i}\n"
        ));
        steps.push_str(&format!(
            "      - command: {{ name: c{i}, check: \"test -f {work}/c{i}\", run: \"touch {work}/c{i}\" }}\n        phase: network\n        why: command {i}\n"
        ));
    }
    let text = format!(
        "lab: count\nmode: dr\nnetworks:\n  lan: {{ cidr: 10.0.0.0/24 }}\nhosts:\n  h:\n    role: client\n    interfaces: [{{ network: lan }}]\n    steps:\n{steps}"
    );
    let t = lvslab::load_str("count.yaml", text)
        .unwrap_or_else(|d| panic!("{d}"))
        .topology;
    lvslab::compile::compile(&t).unwrap()
}

async fn run(work: &str, n: usize) -> (usize, runner::RunOutcome) {
    run_plan(plan_with(work, n), false).await
}

/// `up` of `plan` on host `h` (this machine), from `state`: the round trips
/// it made, its outcome and the state it leaves.
pub async fn run_counted(
    plan: &Arc<lvslab::plan::Plan>,
    state: LabState,
    check: bool,
) -> (usize, runner::RunOutcome, LabState) {
    let counting = Arc::new(Counting::new(Arc::new(LocalTransport::new("h"))));
    let hosts = vec![HostConn {
        host: "h".into(),
        transport: Ok(Arc::clone(&counting) as Arc<dyn Transport>),
    }];
    let (outcome, state) = runner::up(
        Arc::clone(plan),
        hosts,
        state,
        Arc::new(|_: &LabState| Ok(())),
        Options { check, forks: 4 },
        Arc::new(Silent),
    )
    .await;
    (counting.calls(), outcome, state)
}

#[tokio::test]
async fn round_trips_per_host_and_phase_do_not_grow_with_steps() {
    for n in [1, 5, 40] {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().display().to_string();
        let (calls, outcome) = run(&work, n).await;
        assert!(!outcome.failed, "{:?}", outcome.results);
        assert_eq!(outcome.results.len(), 2 * n);
        assert!(outcome.results.iter().all(|r| r.status == Status::Changed));
        // One observation of both phases, then per phase with changes one
        // round trip that applies, reads back, and reads the later phases.
        assert_eq!(calls, 1 + 2, "{n} steps per phase");
        // Unchanged: one round trip for the whole run.
        let (calls, outcome) = run(&work, n).await;
        assert!(outcome.results.iter().all(|r| r.status == Status::Ok));
        assert_eq!(calls, 1, "{n} steps per phase, all ok");
        // One phase changed (the later one): one round trip more.
        std::fs::write(format!("{work}/f0"), "changed by hand\n").unwrap();
        let (calls, outcome) = run(&work, n).await;
        assert_eq!(
            outcome.results.iter().filter(|r| r.status == Status::Changed).count(),
            1
        );
        assert_eq!(calls, 2, "{n} steps per phase, one changed in the later phase");
        // One phase changed (the earlier one).
        std::fs::remove_file(format!("{work}/c0")).unwrap();
        let (calls, _) = run(&work, n).await;
        assert_eq!(calls, 2, "{n} steps per phase, one changed in the earlier phase");
    }
}

async fn run_plan(plan: lvslab::plan::Plan, check: bool) -> (usize, runner::RunOutcome) {
    let (calls, outcome, _) = run_counted(&Arc::new(plan), LabState::default(), check).await;
    (calls, outcome)
}

fn topology(steps: &str, init: &str) -> lvslab::plan::Plan {
    let text = format!(
        "lab: count\nmode: dr\nnetworks:\n  lan: {{ cidr: 10.0.0.0/24 }}\nhosts:\n  h:\n    role: client\n    init: {init}\n    interfaces: [{{ network: lan }}]\n    steps:\n{steps}"
    );
    let t = lvslab::load_str("count.yaml", text)
        .unwrap_or_else(|d| panic!("{d}"))
        .topology;
    lvslab::compile::compile(&t).unwrap()
}

/// Observations are read ahead, so a later phase must be judged on what the
/// host is after the earlier phases applied, never on what it was before:
/// the later step's run fails if it ever runs.
#[tokio::test]
async fn a_later_phase_is_judged_after_the_earlier_ones_applied() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().display();
    let steps = format!(
        "      - command: {{ name: early, check: \"test -f {w}/m\", run: \"touch {w}/m\" }}\n        phase: network\n        why: t\n\
         \x20     - command: {{ name: late, check: \"test -f {w}/m\", run: \"echo stale observation; exit 3\" }}\n        why: t\n"
    );
    let (calls, outcome) = run_plan(topology(&steps, "daemon"), false).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    let status: Vec<Status> = outcome.results.iter().map(|r| r.status).collect();
    assert_eq!(status, vec![Status::Changed, Status::Ok]);
    assert_eq!(
        calls, 2,
        "observe all, then apply the early phase (reading the late one back)"
    );
    // --check reads once and applies nothing.
    std::fs::remove_file(format!("{w}/m")).unwrap();
    let (calls, outcome) = run_plan(topology(&steps, "daemon"), true).await;
    let status: Vec<Status> = outcome.results.iter().map(|r| r.status).collect();
    assert_eq!(status, vec![Status::WouldChange, Status::Conditional]);
    assert_eq!(calls, 1);
}

/// A host whose services are planned for systemd has its init read in its
/// first observation (no round trip of its own) and is refused without it.
#[tokio::test]
async fn systemd_services_on_a_host_without_systemd_are_refused_in_the_first_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().display();
    let steps = format!(
        "      - service: {{ name: web, unit: lvslab-test-web.service, command: \"true\", state_dir: {w} }}\n        why: t\n"
    );
    let (calls, outcome) = run_plan(topology(&steps, "systemd"), true).await;
    assert_eq!(calls, 1);
    let refused = outcome.results.iter().any(|r| {
        r.status == Status::Failed
            && r.details
                .iter()
                .any(|d| d.contains("planned for systemd, but the host runs without it"))
    });
    // This machine's own init decides which answer is right.
    let has_systemd = std::path::Path::new("/run/systemd/system").is_dir();
    assert_eq!(refused, !has_systemd, "{:?}", outcome.results);
}

#[tokio::test]
async fn secrets_reach_files_but_never_results_or_diffs() {
    use lvslab::model::Secret;
    use lvslab::plan::{HostPlan, Phase, Plan, Resource, SCHEMA, Step, secret_placeholder};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keepalived.conf").display().to_string();
    std::fs::write(&path, "auth_pass hunter22\nold\n").unwrap();
    let step = Step::new(
        Resource::File {
            path: path.clone(),
            content: format!("auth_pass {}\nnew\n", secret_placeholder("vrrp-VI_1")),
            mode: "0600".into(),
            validate: Some("grep -q nomatch %s".into()),
            sha256: String::new(),
        },
        "test".into(),
    );
    let mut plan = Plan {
        schema: SCHEMA,
        lab: "s".into(),
        mode: Some(lvslab::model::Mode::Dr),
        notes: Vec::new(),
        removals: Vec::new(),
        phases: vec![Phase {
            name: "balancer".into(),
            hosts: vec![HostPlan {
                host: "h".into(),
                steps: vec![step],
            }],
        }],
        secrets: Default::default(),
    };
    plan.secrets.insert("vrrp-VI_1".into(), Secret::new("hunter22".into()));
    let plan = Arc::new(plan);
    let conn = || {
        vec![HostConn {
            host: "h".into(),
            transport: Ok(Arc::new(LocalTransport::new("h")) as Arc<dyn Transport>),
        }]
    };
    let save = Arc::new(|_: &LabState| Ok(()));

    // --check: a diff, with the secret masked on both sides.
    let (check, _) = runner::up(
        Arc::clone(&plan),
        conn(),
        LabState::default(),
        save.clone(),
        Options { check: true, forks: 1 },
        Arc::new(Silent),
    )
    .await;
    let diff = check.results[0].diff.clone().unwrap();
    assert!(diff.contains("-old") && diff.contains("+new"), "{diff}");
    assert!(!diff.contains("hunter22") && diff.contains("********"), "{diff}");

    // The validation fails: the failure output is shown, masked; the file is untouched.
    let (failed, state) = runner::up(
        Arc::clone(&plan),
        conn(),
        LabState::default(),
        save,
        Options { check: false, forks: 1 },
        Arc::new(Silent),
    )
    .await;
    assert!(failed.failed);
    let text = serde_json::to_string(&failed).unwrap()
        + &serde_json::to_string(&state.hosts["h"].changes[0].resource).unwrap();
    assert!(!text.contains("hunter22"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "auth_pass hunter22\nold\n",
        "a config that fails validation is never installed"
    );
}

/// Runs every script on this machine, but from round trip `cut_on` on hands
/// back only its output up to the first item's exit status, as a
/// connection that ended mid-batch would: the script itself ran to the end.
struct CutShort {
    inner: LocalTransport,
    calls: std::sync::atomic::AtomicUsize,
    cut_on: usize,
}

#[async_trait::async_trait]
impl Transport for CutShort {
    fn host(&self) -> &str {
        self.inner.host()
    }

    async fn run_streaming(
        &self,
        script: &str,
        sink: lvslab::exec::transport::Sink<'_>,
    ) -> Result<i32, lvslab::exec::transport::TransportError> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n < self.cut_on {
            return self.inner.run_streaming(script, sink).await;
        }
        let mut out = Vec::new();
        let rc = self
            .inner
            .run_streaming(script, &mut |s, d| {
                if matches!(s, lvslab::exec::transport::Stream::Stdout) {
                    out.extend_from_slice(d)
                }
            })
            .await?;
        let text = String::from_utf8_lossy(&out).into_owned();
        // The first line `MARKER rc N`: the first item's exit status.
        let mut kept = String::new();
        for line in text.split_inclusive('\n') {
            kept.push_str(line);
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.len() == 3 && w[1] == "rc" && w[2].parse::<i32>().is_ok() {
                break;
            }
        }
        assert!(kept.len() < text.len(), "the output was cut: {text}");
        sink(lvslab::exec::transport::Stream::Stdout, kept.as_bytes());
        Ok(rc)
    }
}

/// Exit statuses lost mid-batch (the connection ended after the first
/// item's): the first step's read-back is lost (unknown, never "still
/// absent"), the first lost status fails as "may have run", every later one
/// is unknown too (never "skipped", which would drop its record), and all
/// records stay, so a later run settles the files as lvslab's and `down`
/// removes all three.
#[tokio::test]
async fn statuses_lost_mid_batch_keep_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().display().to_string();
    let mut steps = String::new();
    for i in 0..3 {
        steps.push_str(&format!(
            "      - file: {{ path: {work}/f{i}, content: \"{i}\\n\" }}\n        why: file {i}\n"
        ));
    }
    let plan = Arc::new(topology(&steps, ""));
    let cut = Arc::new(CutShort {
        inner: LocalTransport::new("h"),
        calls: Default::default(),
        cut_on: 2,
    });
    let hosts = vec![HostConn {
        host: "h".into(),
        transport: Ok(Arc::clone(&cut) as Arc<dyn Transport>),
    }];
    let (outcome, state) = runner::up(
        Arc::clone(&plan),
        hosts,
        LabState::default(),
        Arc::new(|_: &LabState| Ok(())),
        Options { check: false, forks: 1 },
        Arc::new(Silent),
    )
    .await;
    assert!(outcome.failed, "{:?}", outcome.results);
    let files: Vec<_> = outcome.results.iter().filter(|r| r.summary.contains("/f")).collect();
    assert_eq!(files.len(), 3, "{:?}", outcome.results);
    for (r, why) in [
        // Its status came back, but not its read-back: unknown, not "absent".
        (files[0], "could not be observed again (the connection ended?)"),
        (files[1], "no exit status came back (the connection ended?)"),
        (files[2], "after an earlier one was lost"),
    ] {
        assert_eq!(r.status, Status::Failed, "{r:?}");
        assert!(r.details.iter().any(|d| d.contains(why)), "{r:?}");
    }
    for i in 0..3 {
        assert!(
            std::path::Path::new(&format!("{work}/f{i}")).exists(),
            "the script ran to its end"
        );
    }
    assert_eq!(
        state.hosts.get("h").map_or(0, |h| h.changes.len()),
        3,
        "every record stays: {state:?}"
    );
    // A run with the whole output: all three found as planned.
    let (calls, outcome, state) = run_counted(&plan, state, false).await;
    assert!(
        outcome.results.iter().all(|r| r.status == Status::Ok),
        "{:?}",
        outcome.results
    );
    assert_eq!(calls, 1);
    let host = HostConn {
        host: "h".into(),
        transport: Ok(Arc::new(LocalTransport::new("h")) as Arc<dyn Transport>),
    };
    let opts = Options { check: false, forks: 1 };
    let (outcome, _) = runner::down(Arc::clone(&plan), vec![host], state, opts, Arc::new(Silent)).await;
    assert!(!outcome.failed, "{:?}", outcome.results);
    for i in 0..3 {
        assert!(
            !std::path::Path::new(&format!("{work}/f{i}")).exists(),
            "f{i} removed at down"
        );
    }
}
