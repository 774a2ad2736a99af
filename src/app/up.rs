//! `up`: make the hosts, converge every step, remove what the file no
//! longer declares, then verify.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::cli::{Output, RunArgs};
use super::lab::{make_hosts, open, remove, would_remove};
use super::verify::verify_with;
use super::{finish, limit_plan, load_reported, reporter, unix_now, with_detected_os};
use crate::exec::converge;
use crate::exec::runner::{self, Reporter, RunOutcome};
use crate::exec::transport::HostConn;
use crate::model::Topology;
use crate::plan::Plan;
use crate::provider::Lab;
use crate::{compile, report, state};

pub async fn up(file: &Path, check: bool, no_verify: bool, run: &RunArgs) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let lab = open(&loaded.topology, file, &run.conn, run.vm_kernel.as_deref())?;
    let topo = lab.topo.as_ref();
    lab.preflight(check)?;
    let mut plan = compile::compile(topo)?;
    super::lab::refuse_shared_writes(&lab, &plan)?;
    for h in &run.limit {
        if topo.host_by_name(h).is_none() {
            anyhow::bail!("--limit: no host `{h}` in {}", file.display());
        }
    }
    limit_plan(&mut plan, &run.limit);
    let dir = &lab.dir;
    // `--check` changes nothing: a lab with no directory yet gets none (its
    // lock's directory goes again, whatever the outcome).
    let _no_trace = (check && !dir.exists()).then_some(NoTrace(dir));
    let _lock = dir.lock()?;
    let mut lab_state = dir.load_or_new(unix_now())?;
    let topo_hosts: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
    // What the running lab has and the file no longer declares (before the
    // provider removes hosts: it decides from the same record).
    let removals = converge::removals(&topo_hosts, &plan, &lab_state, &run.limit);
    let mut hosts: Vec<String> = plan.host_names().into_iter().map(String::from).collect();
    for h in removals.changes.keys() {
        if !hosts.contains(h) {
            hosts.push(h.clone());
        }
    }
    record_reach(&mut lab_state, &lab, &hosts);
    let mut shown = hosts.clone();
    shown.extend(removals.hosts.iter().cloned());
    let reporter = reporter(run.output, run.verbose, &shown);
    let sides = Sides {
        lab: &lab,
        check,
        run,
        reporter: &reporter,
    };
    let mut removed_outcome = sides.make_hosts(&mut lab_state, &removals).await?;
    let (conns, facts) = lab.connect(&lab_state, &hosts, true).await?;
    let detected;
    let (topo, mut plan) = match with_detected_os(&lab, &facts)? {
        Some(t) => {
            detected = t;
            let mut plan = compile::compile(&detected)?;
            limit_plan(&mut plan, &run.limit);
            (&detected, plan)
        }
        None => (topo, plan),
    };
    let removals = converge::removals(&topo_hosts, &plan, &lab_state, &run.limit);
    if check {
        removed_outcome = would_remove(&removals, &lab, &reporter);
    } else {
        let outcome = remove(&lab, &plan, &removals, &conns, &mut lab_state, &reporter).await?;
        removed_outcome = removed_outcome.merge(outcome);
        if run.limit.is_empty() {
            lab_state.lab_hosts = topo_hosts.clone();
        }
    }
    // Each director's IPVS step deletes the services lvslab made and the file
    // no longer declares, and drains the real servers it removed.
    converge::with_previous_ipvs(&mut plan, &lab_state);
    let plan_hosts = plan.host_names();
    let up_conns: Vec<HostConn> = conns
        .into_iter()
        .filter(|c| plan_hosts.contains(&c.host.as_str()))
        .collect();
    // The same transports serve the verify that follows.
    let verify_conns = up_conns.clone();
    let plan = Arc::new(plan);
    let outcome = sides.converge(topo, Arc::clone(&plan), up_conns, lab_state).await?;
    let outcome = removed_outcome.merge(outcome);
    let title = if check {
        "CHECK RECAP (nothing was changed)"
    } else {
        "RECAP"
    };
    let code = finish(&outcome, run.output, title, if check { "to change" } else { "changed" });
    if check || outcome.failed || no_verify || (topo.services.is_empty() && topo.checks.is_empty()) {
        return Ok(code);
    }
    if !run.limit.is_empty() {
        eprintln!("verify skipped: --limit provisioned only some hosts (run `lvslab verify` for the whole lab)");
        return Ok(code);
    }
    let passed = sides.verify_after(topo, &plan, verify_conns).await?;
    Ok(if passed { code } else { ExitCode::from(1) })
}

/// The topology file and how each host is reached, in the record (so `down
/// LAB` works without the file).
fn record_reach(lab_state: &mut state::LabState, lab: &Lab<'_>, hosts: &[String]) {
    let file = lab.file;
    let reach = lab.reach();
    lab_state.topology = Some(
        std::fs::canonicalize(file)
            .unwrap_or_else(|_| file.to_path_buf())
            .display()
            .to_string(),
    );
    for h in hosts {
        if let Some(r) = reach.get(h) {
            lab_state.reach.insert(h.clone(), r.clone());
        }
    }
}

/// What every stage of one `up` shares.
struct Sides<'a> {
    lab: &'a Lab<'a>,
    check: bool,
    run: &'a RunArgs,
    reporter: &'a Arc<dyn Reporter>,
}

impl Sides<'_> {
    /// The provider makes the file's hosts and removes those the file no
    /// longer has; with `--check`, only that the lab is up.
    async fn make_hosts(
        &self,
        lab_state: &mut state::LabState,
        removals: &converge::Removals,
    ) -> anyhow::Result<RunOutcome> {
        if self.check {
            self.lab.require_up(lab_state, "--check needs its hosts")?;
            return Ok(RunOutcome::default());
        }
        make_hosts(self.lab, lab_state, &removals.hosts, self.reporter).await
    }

    /// Run the plan (recording each change as it is confirmed, unless `--check`).
    async fn converge(
        &self,
        topo: &Topology,
        plan: Arc<Plan>,
        conns: Vec<HostConn>,
        lab_state: state::LabState,
    ) -> anyhow::Result<RunOutcome> {
        let opts = runner::Options {
            check: self.check,
            forks: self.run.conn.forks,
        };
        let save: runner::SaveFn = if self.check {
            Arc::new(|_: &state::LabState| Ok(()))
        } else {
            let dir = state::LabDir::new(&topo.lab);
            Arc::new(move |s: &state::LabState| dir.save(s))
        };
        let (outcome, lab_state) = runner::up(plan, conns, lab_state, save, opts, Arc::clone(self.reporter)).await;
        if !self.check {
            self.lab.dir.save(&lab_state)?;
        }
        Ok(outcome)
    }

    /// Verify the whole lab over the same connections (and new ones to hosts
    /// without steps, a bare client say); true when it passed.
    async fn verify_after(&self, topo: &Topology, plan: &Plan, mut conns: Vec<HostConn>) -> anyhow::Result<bool> {
        let missing: Vec<String> = topo
            .hosts
            .iter()
            .map(|h| h.name.clone())
            .filter(|h| !conns.iter().any(|c| &c.host == h))
            .collect();
        if !missing.is_empty() {
            let lab_state = self.lab.dir.load()?.unwrap_or_default();
            conns.extend(self.lab.connect(&lab_state, &missing, false).await?.0);
        }
        let report = verify_with(topo, plan, conns, None, None, false).await;
        if self.run.output == Output::Json {
            println!("{}", serde_json::json!({ "event": "verify", "report": report }));
        } else {
            print!("\n{}", report::verify_text(&report));
        }
        Ok(report.passed)
    }
}

/// Removes a lab's directory made only for `--check`'s lock, unless a state
/// was saved in it meanwhile.
struct NoTrace<'a>(&'a state::LabDir);

impl Drop for NoTrace<'_> {
    fn drop(&mut self) {
        if self.0.load().is_ok_and(|s| s.is_none()) {
            let _ = self.0.remove_all();
        }
    }
}
