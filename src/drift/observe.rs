//! Reading the lab for drift: one read-only round trip per host, all hosts at once.

use std::sync::Arc;

use super::{HostObservation, IPVS_PROBE, Observations, host_steps};
use crate::exec::batch::{batch, parse_batch};
use crate::exec::runner;
use crate::exec::transport::HostConn;
use crate::model::{Role, Topology};
use crate::plan::Plan;

const MARKER: &str = "@@lvslab-drift";

/// Observe every step of `plan` on each host (and each director's live IPVS
/// table), changing nothing.
pub async fn observe(topo: &Topology, plan: &Plan, conns: Vec<HostConn>) -> Vec<HostObservation> {
    let mut tasks = Vec::new();
    for c in conns {
        let steps: Vec<String> = host_steps(plan, &c.host)
            .iter()
            .map(|s| runner::resolved(plan, &s.resource).observe_command())
            .collect();
        let director = topo.host_by_name(&c.host).is_some_and(|h| h.role == Role::Director);
        tasks.push(tokio::spawn(async move {
            let host = c.host.clone();
            let result = match c.transport {
                Err(e) => Err(e),
                Ok(t) => read(t, steps, director).await,
            };
            HostObservation { host, result }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        match t.await {
            Ok(o) => out.push(o),
            Err(e) => out.push(HostObservation {
                host: "?".into(),
                result: Err(format!("internal error: {e}")),
            }),
        }
    }
    out
}

async fn read(
    t: Arc<dyn crate::exec::transport::Transport>,
    steps: Vec<String>,
    director: bool,
) -> Result<Observations, String> {
    let mut items: Vec<Vec<String>> = steps.iter().map(|c| vec![c.clone()]).collect();
    if director {
        items.push(vec![IPVS_PROBE.to_string()]);
    }
    let out = t.run(&batch(&items, MARKER, false)).await.map_err(|e| e.to_string())?;
    let mut parsed = parse_batch(&out.stdout, MARKER, items.len());
    let ipvs = if director { parsed.pop().flatten() } else { None };
    let steps: Vec<_> = parsed.into_iter().map_while(|o| o).collect();
    if steps.len() < items.len() - usize::from(director) {
        return Err(format!(
            "observing stopped after {} of {} steps (exit {}): {}",
            steps.len(),
            items.len() - usize::from(director),
            out.status,
            out.stderr.trim()
        ));
    }
    Ok(Observations { steps, ipvs })
}
