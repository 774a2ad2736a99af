//! `lvslab drift`: what no longer matches the topology, precisely, and what
//! `--fix` would do about each difference.
//!
//! [`observe`] is the only I/O: one read-only round trip per host (every
//! step's observe command of every phase, and each director's `ipvsadm -Sn`),
//! all hosts at once. [`decide`] is pure: each step is assessed exactly as
//! `up` assesses it ([`runner::assess_all`]), and each director's live table
//! is judged whole by [`ipvs::audit`] (the services the plan owns field by
//! field, keepalived's services by keepalived's rules, and services nobody
//! declared).

pub mod fix;
mod observe;

pub use observe::observe;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::exec::runner::{self, RESTART_PREFIX};
use crate::model::{Role, Topology};
use crate::plan::assess::{Assessment, Observed};
use crate::plan::{Plan, Resource, ipvs};

pub const SCHEMA: &str = "lvslab.drift/v1";

/// The probe every director answers besides its steps: its whole live table.
pub const IPVS_PROBE: &str = "ipvsadm -Sn";

/// How `--fix` repairs a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Fix {
    /// Apply the plan's step again (only what differs, as `up` does).
    Step { id: String },
    /// keepalived's table: these ipvsadm arguments put keepalived's
    /// configuration back without restarting it (a restart would move the VIP).
    Ipvsadm { args: Vec<String> },
    /// No longer declared (a host, or a step lvslab applied): removed as
    /// `up` removes it, put back as it was before lvslab.
    Remove,
    /// Left alone, and why.
    Never { why: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The resource kind: `ipvs`, `sysctl`, `address`, `route`, `file`, `service` …
    pub kind: String,
    /// What differs, e.g. `sysctl net.ipv4.conf.all.arp_ignore = 0 (want 1)`.
    pub message: String,
    /// Files: unified diff, now → planned, secrets masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    pub fix: Fix,
}

impl Finding {
    pub fn fixable(&self) -> bool {
        !matches!(self.fix, Fix::Never { .. })
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HostDrift {
    pub host: String,
    /// Steps observed (0 when the host could not be checked).
    pub steps: usize,
    /// Why the host could not be checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub findings: Vec<Finding>,
    /// Allowed states worth saying (keepalived took a failing real server out;
    /// a service will restart because a file it runs with is rewritten).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What one host answered: each step's observation (plan order, all
/// phases), and the director's live table.
#[derive(Debug, Clone)]
pub struct HostObservation {
    pub host: String,
    pub result: Result<Observations, String>,
}

#[derive(Debug, Clone, Default)]
pub struct Observations {
    pub steps: Vec<Observed>,
    pub ipvs: Option<Observed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fixed {
    pub host: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub lab: String,
    pub hosts: Vec<HostDrift>,
    /// `--fix`: what was found before and is gone now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fixed: Vec<Fixed>,
    pub seconds: f64,
}

impl Report {
    pub fn findings(&self) -> usize {
        self.hosts.iter().map(|h| h.findings.len()).sum()
    }
    pub fn unchecked(&self) -> Vec<&str> {
        self.hosts
            .iter()
            .filter(|h| h.error.is_some())
            .map(|h| h.host.as_str())
            .collect()
    }
    /// 0 clean, 2 drift found, 1 some host could not be checked (its drift is unknown).
    pub fn exit_code(&self) -> u8 {
        if !self.unchecked().is_empty() {
            1
        } else if self.findings() > 0 {
            2
        } else {
            0
        }
    }
    /// One line for CI logs.
    pub fn summary(&self) -> String {
        let drifted: Vec<&str> = self
            .hosts
            .iter()
            .filter(|h| !h.findings.is_empty())
            .map(|h| h.host.as_str())
            .collect();
        let unchecked = self.unchecked();
        let checked = self.hosts.len() - unchecked.len();
        let mut s = if drifted.is_empty() && unchecked.is_empty() {
            format!("DRIFT {}: none: {checked} host(s) match the topology", self.lab)
        } else if drifted.is_empty() {
            format!("DRIFT {}: none on the {checked} host(s) checked", self.lab)
        } else {
            let fixable: usize = self
                .hosts
                .iter()
                .flat_map(|h| &h.findings)
                .filter(|f| f.fixable())
                .count();
            format!(
                "DRIFT {}: {} finding(s) on {} ({fixable} fixable with --fix), {checked} host(s) checked",
                self.lab,
                self.findings(),
                drifted.join(", ")
            )
        };
        if !self.fixed.is_empty() {
            s.push_str(&format!("; fixed {}", self.fixed.len()));
        }
        if !unchecked.is_empty() {
            s.push_str(&format!("; NOT CHECKED: {}", unchecked.join(", ")));
        }
        s.push_str(&format!(" in {:.1} s (exit {})", self.seconds, self.exit_code()));
        s
    }
}

/// The hosts drift looks at: every host with steps, and every director.
pub fn hosts(topo: &Topology, plan: &Plan) -> Vec<String> {
    let mut out: Vec<String> = plan.host_names().into_iter().map(String::from).collect();
    for h in topo.hosts.iter().filter(|h| h.role == Role::Director) {
        if !out.contains(&h.name) {
            out.push(h.name.clone());
        }
    }
    out.sort();
    out
}

/// The steps of one host, in plan order across phases.
pub fn host_steps<'a>(plan: &'a Plan, host: &str) -> Vec<&'a crate::plan::Step> {
    plan.phases
        .iter()
        .flat_map(|p| &p.hosts)
        .filter(|h| h.host == host)
        .flat_map(|h| &h.steps)
        .collect()
}

/// Judge every host's observations.
pub fn decide(topo: &Topology, plan: &Plan, observed: &[HostObservation], seconds: f64) -> Report {
    let hosts = observed.iter().map(|o| decide_host(topo, plan, o)).collect();
    Report {
        schema: SCHEMA,
        lab: topo.lab.clone(),
        hosts,
        fixed: Vec::new(),
        seconds,
    }
}

fn decide_host(topo: &Topology, plan: &Plan, o: &HostObservation) -> HostDrift {
    let steps = host_steps(plan, &o.host);
    let mut hd = HostDrift {
        host: o.host.clone(),
        ..HostDrift::default()
    };
    let obs = match &o.result {
        Ok(obs) if obs.steps.len() == steps.len() => obs,
        Ok(obs) => {
            hd.error = Some(format!(
                "observed {} of {} steps (the host's shell stopped early)",
                obs.steps.len(),
                steps.len()
            ));
            return hd;
        }
        Err(e) => {
            // Transport errors name their host already.
            let e = e.strip_prefix(&format!("{}: ", o.host)).unwrap_or(e);
            hd.error = Some(e.to_string());
            return hd;
        }
    };
    hd.steps = steps.len();
    let desired: Vec<Resource> = steps.iter().map(|s| runner::resolved(plan, &s.resource)).collect();
    let assessed = runner::assess_all(&desired, &obs.steps);
    let mut ipvs_step: Option<&str> = None;
    // keepalived builds its own table when it runs: while it does not, its
    // table is repaired by starting it (its service step), never by ipvsadm.
    let keepalived_down = steps
        .iter()
        .zip(&obs.steps)
        .find_map(|(step, ob)| match &step.resource {
            Resource::Service { name, .. } if name == "keepalived" => {
                (ob.output.lines().next().map(str::trim) != Some("active")).then(|| step.id.clone())
            }
            _ => None,
        });
    for ((step, want), (a, ob)) in steps.iter().zip(&desired).zip(assessed.iter().zip(&obs.steps)) {
        if let Resource::IpvsTable { .. } = want {
            // Judged whole below, with the director's live table.
            ipvs_step = Some(step.id.as_str());
            continue;
        }
        let Assessment::Differs(details) = a else { continue };
        for d in details {
            if let Some(file) = d.strip_prefix(RESTART_PREFIX) {
                let name = match want {
                    Resource::Service { name, .. } => name.as_str(),
                    _ => step.id.as_str(),
                };
                hd.notes
                    .push(format!("service {name} restarts on --fix: {file} is rewritten"));
                continue;
            }
            hd.findings.push(Finding {
                kind: want.kind().to_string(),
                message: message(want, d),
                diff: match want {
                    Resource::File { .. } if d == "content differs" => runner::file_diff(plan, want, ob),
                    Resource::Line { .. } => runner::file_diff(plan, want, ob),
                    _ => None,
                },
                fix: Fix::Step { id: step.id.clone() },
            });
        }
    }
    if let Some(director) = topo.host_by_name(&o.host).filter(|h| h.role == Role::Director) {
        table(
            topo,
            plan,
            director,
            obs.ipvs.as_ref(),
            ipvs_step,
            keepalived_down.as_deref(),
            &mut hd,
        );
    }
    hd
}

/// A director's live table: owned services (repaired by the IPVS step),
/// keepalived's (repaired with ipvsadm by keepalived's configuration while
/// keepalived runs; by starting keepalived, its service step
/// `keepalived_down`, while it does not), and services nobody declared
/// (reported, never removed).
fn table(
    topo: &Topology,
    plan: &Plan,
    director: &crate::model::Host,
    live: Option<&Observed>,
    ipvs_step: Option<&str>,
    keepalived_down: Option<&str>,
    hd: &mut HostDrift,
) {
    let (owned, previous): (Vec<ipvs::IpvsService>, Vec<ipvs::IpvsService>) = host_steps(plan, &director.name)
        .into_iter()
        .find_map(|s| match &s.resource {
            Resource::IpvsTable { services, previous } => Some((services.clone(), previous.clone())),
            _ => None,
        })
        .unwrap_or_default();
    let keepalived = crate::compile::context::keepalived_table(topo, director);
    if owned.is_empty() && keepalived.is_empty() && live.is_none() {
        return;
    }
    let step_fix = || match ipvs_step {
        Some(id) => Fix::Step { id: id.to_string() },
        None => Fix::Never {
            why: "no IPVS step on this host".into(),
        },
    };
    let finding = |message: String, fix: Fix| Finding {
        kind: "ipvs".into(),
        message: format!("ipvs: {message}"),
        diff: None,
        fix,
    };
    let Some(live) = live else {
        hd.findings
            .push(finding("the live table was not read".into(), step_fix()));
        return;
    };
    if live.rc != 0 {
        let why = live.output.lines().last().unwrap_or("").trim();
        hd.findings
            .push(finding(format!("cannot read the IPVS table: {why}"), step_fix()));
        return;
    }
    let parsed = match ipvs::parse_save(&live.output) {
        Ok(p) => p,
        Err(e) => {
            hd.findings
                .push(finding(format!("cannot parse the IPVS table: {e}"), step_fix()));
            return;
        }
    };
    let a = ipvs::audit(&owned, &previous, &keepalived, &parsed);
    for c in a.owned {
        hd.findings.push(finding(c.description, step_fix()));
    }
    for c in a.keepalived {
        match keepalived_down {
            // Never an ipvsadm table nobody would own: keepalived builds it when it starts.
            Some(id) => hd.findings.push(finding(
                format!(
                    "{}; keepalived is not running",
                    c.description.trim_end_matches(" (is keepalived running?)")
                ),
                Fix::Step { id: id.to_string() },
            )),
            None => hd
                .findings
                .push(finding(c.description, Fix::Ipvsadm { args: vec![c.args] })),
        }
    }
    for u in a.undeclared {
        hd.findings.push(finding(
            format!("undeclared service {u}"),
            Fix::Never {
                why: "the topology does not declare it, so it is not ours to remove".into(),
            },
        ));
    }
    hd.notes.extend(a.notes);
}

/// What the running lab has and the topology no longer declares, as
/// findings: a removed host as one finding of its own, a step lvslab applied
/// and no longer plans under its host.
pub fn add_removals(report: &mut Report, removals: &crate::exec::converge::Removals, missing: &[String]) {
    for h in missing {
        report.hosts.retain(|x| &x.host != h);
        report.hosts.push(HostDrift {
            host: h.clone(),
            findings: vec![Finding {
                kind: "host".into(),
                message: format!("host {h} is in the topology but not in the running lab"),
                diff: None,
                fix: Fix::Never {
                    why: "`lvslab up` creates hosts".into(),
                },
            }],
            ..HostDrift::default()
        });
    }
    for h in &removals.hosts {
        report.hosts.push(HostDrift {
            host: h.clone(),
            findings: vec![Finding {
                kind: "host".into(),
                message: format!("host {h} is in the running lab but no longer in the topology"),
                diff: None,
                fix: Fix::Remove,
            }],
            ..HostDrift::default()
        });
    }
    for (h, changes) in &removals.changes {
        let idx = match report.hosts.iter().position(|x| &x.host == h) {
            Some(i) => i,
            None => {
                report.hosts.push(HostDrift {
                    host: h.clone(),
                    ..HostDrift::default()
                });
                report.hosts.len() - 1
            }
        };
        for c in changes {
            report.hosts[idx].findings.push(Finding {
                kind: c.resource.kind().to_string(),
                message: format!("{}: no longer declared (lvslab made it)", c.summary),
                diff: None,
                fix: Fix::Remove,
            });
        }
    }
    report.hosts.sort_by(|a, b| a.host.cmp(&b.host));
}

/// A step's difference as one line naming the resource.
pub fn message(r: &Resource, detail: &str) -> String {
    let d = detail.trim_end_matches(" (yet)");
    match r {
        Resource::Sysctl { key, .. } => format!("sysctl {key} {d}"),
        Resource::KernelModule { name } => format!("kernel module {name} {d}"),
        Resource::Address { address, .. } if d.starts_with("device ") => format!("address {address}: {d}"),
        Resource::Address { .. } => format!("address {d}"),
        Resource::Route { to, .. } => format!("route {to} {d}"),
        Resource::Link { .. } => format!("link {d}"),
        Resource::Directory { path, .. } => format!("directory {path} {d}"),
        Resource::File { path, .. } if d == "content differs" => format!("file {path} differs"),
        Resource::File { path, .. } => format!("file {path} {d}"),
        Resource::Line { path, .. } => format!("line in {path} {d}"),
        Resource::Service { name, .. } => format!("service {name} {d}"),
        Resource::Package { .. } => match d.strip_prefix("not installed: ") {
            Some(p) if !p.contains(' ') => format!("package {p} not installed"),
            Some(p) => format!("packages {p} not installed"),
            None => format!("package {d}"),
        },
        Resource::IpvsTable { .. } => format!("ipvs: {d}"),
        Resource::Mount { target, .. } => format!("mount {target} {d}"),
        Resource::Command { name, .. } => format!("command {name}: {d}"),
    }
}

/// `--fix`: which findings of `before` are gone in `after`.
pub fn fixed(before: &Report, after: &Report) -> Vec<Fixed> {
    let now: BTreeMap<&str, Vec<&str>> = after
        .hosts
        .iter()
        .filter(|h| h.error.is_none())
        .map(|h| (h.host.as_str(), h.findings.iter().map(|f| f.message.as_str()).collect()))
        .collect();
    // A host absent from `after` altogether was removed (a host that could
    // not be checked is there, with its error).
    let removed = |h: &str| !after.hosts.iter().any(|a| a.host == h);
    before
        .hosts
        .iter()
        .filter(|h| now.contains_key(h.host.as_str()) || removed(&h.host))
        .flat_map(|h| h.findings.iter().map(move |f| (h.host.as_str(), f.message.as_str())))
        .filter(|(h, m)| !now.get(h).is_some_and(|v| v.contains(m)))
        .map(|(h, m)| Fixed {
            host: h.to_string(),
            message: m.to_string(),
        })
        .collect()
}
