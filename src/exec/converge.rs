//! Converging a running lab to its (edited) topology file: what the lab has
//! that the file no longer declares. Pure: computed from the plan and the
//! lab's record, so `up` (which removes it), `up --check`, `plan` (which show
//! it) and `drift` (which reports it) can never disagree.
//!
//! - a **host** the running lab has and the file no longer names: reverted
//!   (over SSH) or destroyed with its namespace (netns, vm);
//! - a recorded **change** (a step `up` applied) that no step of the plan
//!   makes any more: reverted, as `down` would;
//! - an **IPVS service** lvslab created that the plan no longer declares:
//!   deleted; a **real server** removed from a declared service: drained
//!   (weight 0) and deleted once its connections end (see `plan::ipvs::diff`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::plan::{IpvsService, Plan, Resource};
use crate::state::{Change, LabState};

/// What the running lab has and the topology no longer declares.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Removals {
    /// Hosts of the running lab the topology does not name any more.
    pub hosts: Vec<String>,
    /// Per host the topology still has: recorded changes no planned step makes.
    pub changes: BTreeMap<String, Vec<Change>>,
    /// Per director: IPVS services lvslab's earlier runs created (as
    /// recorded) that the plan no longer declares.
    pub ipvs: BTreeMap<String, Vec<IpvsService>>,
}

impl Removals {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.changes.values().all(Vec::is_empty) && self.ipvs.values().all(Vec::is_empty)
    }

    /// One line per removal, `host: what`, for plans and reports.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .hosts
            .iter()
            .map(|h| format!("{h}: host {h} (no longer in the topology) and everything lvslab made on it"))
            .collect();
        for (h, changes) in &self.changes {
            out.extend(
                changes
                    .iter()
                    .map(|c| format!("{h}: {} (no longer declared)", c.summary)),
            );
        }
        for (h, services) in &self.ipvs {
            out.extend(services.iter().map(|s| {
                format!(
                    "{h}: ipvs service {} (no longer declared)",
                    crate::plan::ipvs::describe(&s.target())
                )
            }));
        }
        out
    }
}

/// The IPVS table lvslab last recorded applying on a host.
fn recorded_ipvs<'a>(state: &'a LabState, host: &str) -> Option<&'a [IpvsService]> {
    state.hosts.get(host)?.changes.iter().find_map(|c| match &c.resource {
        Resource::IpvsTable { services, .. } => Some(services.as_slice()),
        _ => None,
    })
}

/// What the lab has and the topology does not declare. `hosts` are the
/// topology's hosts; `limit`, when not empty, restricts it to those hosts
/// (hosts gone from the topology are then left alone).
pub fn removals(hosts: &[String], plan: &Plan, state: &LabState, limit: &[String]) -> Removals {
    let mut r = Removals::default();
    if limit.is_empty() {
        r.hosts = state.known_hosts().into_iter().filter(|h| !hosts.contains(h)).collect();
    }
    for (host, hs) in &state.hosts {
        if !hosts.contains(host) || (!limit.is_empty() && !limit.contains(host)) {
            continue;
        }
        let planned: Vec<&crate::plan::Step> = plan
            .phases
            .iter()
            .flat_map(|p| &p.hosts)
            .filter(|h| &h.host == host)
            .flat_map(|h| &h.steps)
            .collect();
        let orphans: Vec<Change> = hs
            .changes
            .iter()
            .filter(|c| !planned.iter().any(|s| s.id == c.id))
            .cloned()
            .collect();
        if !orphans.is_empty() {
            r.changes.insert(host.clone(), orphans);
        }
        // The director still has an IPVS step: services it created before and
        // no longer declares are deleted by that step (see `with_previous_ipvs`).
        let wanted = planned.iter().find_map(|s| match &s.resource {
            Resource::IpvsTable { services, .. } => Some(services),
            _ => None,
        });
        if let (Some(wanted), Some(before)) = (wanted, recorded_ipvs(state, host)) {
            let gone: Vec<IpvsService> = before
                .iter()
                .filter(|b| !wanted.iter().any(|w| w.target() == b.target()))
                .cloned()
                .collect();
            if !gone.is_empty() {
                r.ipvs.insert(host.clone(), gone);
            }
        }
    }
    r
}

/// Tell each director's IPVS step what lvslab's earlier runs put in its
/// table (from the record), so that the step deletes the services no longer
/// declared and drains the real servers removed from declared ones. Without
/// a record (a first `up`) the plan is unchanged.
pub fn with_previous_ipvs(plan: &mut Plan, state: &LabState) {
    for hp in plan.phases.iter_mut().flat_map(|p| p.hosts.iter_mut()) {
        let Some(before) = recorded_ipvs(state, &hp.host) else {
            continue;
        };
        for step in &mut hp.steps {
            if let Resource::IpvsTable { previous, .. } = &mut step.resource {
                *previous = before.to_vec();
            }
        }
    }
}
