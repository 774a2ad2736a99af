//! `drift --fix`, after what the file no longer declares is gone: the drifted
//! steps are re-applied by the runner (which re-observes, applies only what
//! differs and records originals for `down`), then keepalived's own IPVS
//! entries are put back with ipvsadm once keepalived itself is right. Prints
//! nothing: the caller reports what came back.

use std::sync::Arc;

use super::{Fix, Report, decide, observe};
use crate::exec::runner::{self, Options, Reporter, RunOutcome, SaveFn};
use crate::exec::transport::HostConn;
use crate::model::Topology;
use crate::plan::Plan;
use crate::state::LabState;

/// The hosts with a drifted step (a `Fix::Step` finding).
pub fn step_hosts(before: &Report) -> Vec<String> {
    before
        .hosts
        .iter()
        .filter(|h| h.findings.iter().any(|f| matches!(f.fix, Fix::Step { .. })))
        .map(|h| h.host.clone())
        .collect()
}

/// Re-apply the plan's steps on `hosts` only, as `up` would.
pub async fn reapply(
    plan: &Plan,
    hosts: &[String],
    conns: &[HostConn],
    lab_state: LabState,
    save: SaveFn,
    opts: Options,
    reporter: Arc<dyn Reporter>,
) -> (RunOutcome, LabState) {
    let mut fix_plan = plan.clone();
    for p in &mut fix_plan.phases {
        p.hosts.retain(|h| hosts.contains(&h.host));
    }
    let conns: Vec<HostConn> = conns.iter().filter(|c| hosts.contains(&c.host)).cloned().collect();
    runner::up(Arc::new(fix_plan), conns, lab_state, save, opts, reporter).await
}

/// One host's ipvsadm repair: the argument lists run, and why it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsadmRun {
    pub host: String,
    pub args: Vec<String>,
    pub error: Option<String>,
}

/// Observe again and put back the IPVS entries keepalived owns
/// (`Fix::Ipvsadm` findings), one script per host.
pub async fn keepalived_entries(topo: &Topology, plan: &Plan, conns: &[HostConn]) -> Vec<IpvsadmRun> {
    let observed = observe(topo, plan, conns.to_vec()).await;
    let now = decide(topo, plan, &observed, 0.0);
    let mut runs = Vec::new();
    for h in &now.hosts {
        let args: Vec<String> = h
            .findings
            .iter()
            .filter_map(|f| match &f.fix {
                Fix::Ipvsadm { args } => Some(args.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let Some(Ok(t)) = conns.iter().find(|c| c.host == h.host).map(|c| &c.transport) else {
            continue;
        };
        if args.is_empty() {
            continue;
        }
        let script: String = args
            .iter()
            .map(|a| crate::plan::ipvs::ipvsadm_command(a) + "\n")
            .collect();
        let error = match t.run(&format!("set -e\n{script}")).await {
            Ok(o) if o.status == 0 => None,
            Ok(o) => Some(format!(
                "ipvsadm failed (exit {}): {}{}",
                o.status,
                o.stdout.trim(),
                o.stderr.trim()
            )),
            Err(e) => Some(e.to_string()),
        };
        runs.push(IpvsadmRun {
            host: h.host.clone(),
            args,
            error,
        });
    }
    runs
}
