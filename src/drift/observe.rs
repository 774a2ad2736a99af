//! Reading the lab for drift: one read-only round trip per host, all hosts at once.

use std::sync::Arc;

use super::{HostObservation, IPVS_PROBE, Observations, host_steps};
use crate::exec::batch::{Look, observe_batch, parse_looks};
use crate::exec::connect::{init_refusal, needs_systemd};
use crate::exec::runner;
use crate::exec::transport::HostConn;
use crate::exec::transport::{FACTS_SCRIPT, parse_facts};
use crate::model::{Role, Topology};
use crate::plan::Plan;

const MARKER: &str = "@@lvslab-drift";

/// Observe every step of `plan` on each host (and each director's live IPVS
/// table), changing nothing.
pub async fn observe(topo: &Topology, plan: &Plan, conns: Vec<HostConn>) -> Vec<HostObservation> {
    let mut tasks = Vec::new();
    for c in conns {
        let steps: Vec<Look> = host_steps(plan, &c.host)
            .iter()
            .map(|s| Look::of(&runner::resolved(plan, &s.resource)))
            .collect();
        let director = topo.host_by_name(&c.host).is_some_and(|h| h.role == Role::Director);
        let facts = needs_systemd(plan, &c.host);
        tasks.push(tokio::spawn(async move {
            let host = c.host.clone();
            let result = match c.transport {
                Err(e) => Err(e),
                Ok(t) => read(t, steps, director, facts).await,
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

/// One round trip: every step's observation, the live IPVS table on a
/// director, and the facts when the host's services need systemd.
async fn read(
    t: Arc<dyn crate::exec::transport::Transport>,
    steps: Vec<Look>,
    director: bool,
    facts: bool,
) -> Result<Observations, String> {
    // The facts first: nothing before them can crowd them out of the output.
    let mut items: Vec<Look> = Vec::new();
    if facts {
        items.push(Look {
            cmd: FACTS_SCRIPT.to_string(),
            own_shell: true,
        });
    }
    items.extend(steps);
    if director {
        items.push(Look {
            cmd: IPVS_PROBE.to_string(),
            own_shell: false,
        });
    }
    let out = t.run(&observe_batch(&items, MARKER)).await.map_err(|e| e.to_string())?;
    let mut parsed = parse_looks(&out.stdout, MARKER, &items);
    if facts {
        let f = parsed
            .remove(0)
            .ok_or_else(|| format!("reading its facts failed (exit {})", out.status))?;
        if let Some(why) = init_refusal(t.host(), &parse_facts(&f.output)) {
            return Err(why);
        }
        items.remove(0);
    }
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
