//! Every keepalived.conf the compiler renders is accepted by the real
//! `keepalived -t -f` (run as root in a network namespace with the director's
//! interfaces). keepalived must be installed (.ci/run installs it): a missing
//! program fails this test, it never skips.

use std::process::Command;

use lvslab::plan::Resource;

use crate::{plan, topologies};

#[test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
fn rendered_keepalived_configs_pass_keepalived_t() {
    let probe = Command::new(crate::program("keepalived", "keepalived"))
        .arg("--version")
        .output();
    assert!(
        probe.is_ok(),
        "keepalived is not installed: run `apt-get install keepalived` (.ci/run does)"
    );
    let mut checked = 0;
    for path in topologies() {
        let plan = plan(&path);
        for hp in plan.phases.iter().flat_map(|p| p.hosts.iter()) {
            for step in &hp.steps {
                let Resource::File {
                    path: file,
                    content,
                    validate,
                    ..
                } = &step.resource
                else {
                    continue;
                };
                if !file.ends_with("keepalived.conf") {
                    continue;
                }
                assert_eq!(
                    validate.as_deref(),
                    Some("keepalived -t -f %s"),
                    "checked before install"
                );
                let dir = tempfile::tempdir().unwrap();
                let conf = dir.path().join("keepalived.conf");
                std::fs::write(&conf, plan.resolve_secrets(content)).unwrap();
                // keepalived -t also checks that the interfaces exist: run it in a
                // network namespace of its own whose interfaces are the director's
                // (veth pairs), as on the lab host, whatever this machine has.
                let out = Command::new("unshare")
                    .args(["--net", "sh", "-c"])
                    .arg(
                        "set -e; for i in 0 1 2 3; do ip link add \"eth$i\" type veth peer name \"peer$i\"; ip link set \"eth$i\" up; done; \
                         exec keepalived -t -f \"$1\"",
                    )
                    .arg("sh")
                    .arg(&conf)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{} on {}: keepalived -t exit {:?}\n{}{}",
                    path.display(),
                    hp.host,
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked, 6,
        "ha.yaml, ha-nat.yaml and dual-master.yaml have two directors each"
    );
}

#[test]
fn a_broken_config_is_refused_by_keepalived_t() {
    // The check above can fail: keepalived -t really rejects bad configs.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.conf");
    std::fs::write(
        &conf,
        "vrrp_instance VI_1 {\n    state SIDEWAYS\n    virtual_router_id 999\n}\n",
    )
    .unwrap();
    let out = Command::new(crate::program("keepalived", "keepalived"))
        .arg("-t")
        .arg("-f")
        .arg(&conf)
        .output()
        .expect("keepalived runs");
    assert!(!out.status.success());
}

/// An install that keepalived -t refuses stops that host with keepalived's own
/// message, and the running configuration stays as it was.
#[tokio::test]
async fn a_config_keepalived_refuses_is_never_installed() {
    use std::sync::Arc;

    use lvslab::exec::runner::{self, HostConn, Options, Silent};
    use lvslab::exec::transport::{LocalTransport, Transport};
    use lvslab::plan::{HostPlan, Phase, Plan, SCHEMA, Step};
    use lvslab::state::LabState;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keepalived.conf").display().to_string();
    std::fs::write(&path, "global_defs {\n    router_id old\n}\n").unwrap();
    let step = Step::new(
        Resource::File {
            path: path.clone(),
            content: "vrrp_instance VI_1 {\n    state SIDEWAYS\n    virtual_router_id 999\n}\n".into(),
            mode: "0640".into(),
            validate: Some(format!("{} -t -f %s", crate::program("keepalived", "keepalived"))),
            sha256: String::new(),
        },
        "test".into(),
    );
    let plan = Arc::new(Plan {
        schema: SCHEMA,
        lab: "k".into(),
        mode: Some(lvslab::model::Mode::Dr),
        notes: Vec::new(),
        removals: Vec::new(),
        phases: vec![Phase {
            name: "balancer".into(),
            hosts: vec![HostPlan {
                host: "director".into(),
                steps: vec![step],
            }],
        }],
        secrets: Default::default(),
    });
    let conns = vec![HostConn {
        host: "director".into(),
        transport: Ok(Arc::new(LocalTransport::new("director")) as Arc<dyn Transport>),
    }];
    let (outcome, _) = runner::up(
        plan,
        conns,
        LabState::default(),
        Arc::new(|_: &LabState| Ok(())),
        Options { check: false, forks: 1 },
        Arc::new(Silent),
    )
    .await;
    assert!(outcome.failed);
    let details = outcome
        .results
        .iter()
        .flat_map(|r| r.details.clone())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        details.contains("unknown state 'SIDEWAYS'") && details.contains("VRID '999' not valid"),
        "keepalived's own message is shown: {details}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "global_defs {\n    router_id old\n}\n"
    );
}
