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
    let counting = Arc::new(Counting::new(Arc::new(LocalTransport::new("h"))));
    let hosts = vec![HostConn {
        host: "h".into(),
        transport: Ok(Arc::clone(&counting) as Arc<dyn Transport>),
    }];
    let (outcome, _) = runner::up(
        Arc::new(plan_with(work, n)),
        hosts,
        LabState::default(),
        Arc::new(|_: &LabState| Ok(())),
        Options { check: false, forks: 4 },
        Arc::new(Silent),
    )
    .await;
    (counting.calls(), outcome)
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
        // Two phases (network, services), each: observe, apply, confirm.
        assert_eq!(calls, 2 * 3, "{n} steps per phase");
        // Unchanged: one observe per phase, nothing else.
        let (calls, outcome) = run(&work, n).await;
        assert!(outcome.results.iter().all(|r| r.status == Status::Ok));
        assert_eq!(calls, 2, "{n} steps per phase, all ok");
    }
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
        mode: lvslab::model::Mode::Dr,
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
