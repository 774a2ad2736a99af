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
