//! `drift`: observe, judge, and with `--fix` repair and observe again.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::cli::{Output, RunArgs};
use super::lab::{make_hosts, open, remove};
use super::{load_reported, reporter, with_detected_os};
use crate::drift::{self, Report};
use crate::exec::converge::{self, Removals};
use crate::exec::runner;
use crate::exec::transport::HostConn;
use crate::model::Topology;
use crate::plan::Plan;
use crate::provider::Lab;
use crate::{compile, report, state};

/// What one `drift` run looks at: the lab as the provider runs it, its plan
/// (with the IPVS services lvslab made earlier), the connections, and which
/// hosts the running lab lacks.
struct Looked<'a> {
    lab: &'a Lab<'a>,
    topo: &'a Topology,
    plan: Plan,
    conns: Vec<HostConn>,
    topo_hosts: Vec<String>,
    missing: Vec<String>,
    dir: &'a state::LabDir,
    start: std::time::Instant,
}

/// `drift`: observe, judge, and with `fix` repair and observe again.
pub async fn drift(file: &Path, format: Output, fix: bool, run: &RunArgs) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let lab = open(&loaded.topology, file, &run.conn, None)?;
    let topo = lab.topo.as_ref();
    let plan = compile::compile(topo)?;
    let dir = &lab.dir;
    let lab_state = dir.load()?.unwrap_or_default();
    lab.require_up(&lab_state, "drift needs its hosts")?;
    let topo_hosts: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
    let (hosts, missing) = hosts_to_observe(topo, &plan, &lab_state, file, run)?;
    let start = std::time::Instant::now();
    let (conns, facts) = lab.connect(&lab_state, &hosts, true).await?;
    let detected;
    let (topo, mut plan) = match with_detected_os(&lab, &facts)? {
        Some(t) => {
            detected = t;
            (&detected, compile::compile(&detected)?)
        }
        None => (topo, plan),
    };
    // IPVS services lvslab made and the file no longer declares are drift too.
    converge::with_previous_ipvs(&mut plan, &lab_state);
    let removals = converge::removals(&topo_hosts, &plan, &lab_state, &run.limit);
    let looked = Looked {
        lab: &lab,
        topo,
        plan,
        conns,
        topo_hosts,
        missing,
        dir,
        start,
    };
    let observed = drift::observe(topo, &looked.plan, looked.conns.clone()).await;
    let mut report = drift::decide(topo, &looked.plan, &observed, start.elapsed().as_secs_f64());
    drift::add_removals(&mut report, &removals, &looked.missing);
    let fixable = report.hosts.iter().flat_map(|h| &h.findings).any(|f| f.fixable());
    if fix && fixable {
        report = fix_all(&looked, report, &removals, run).await?;
    }
    let mut stdout = std::io::stdout().lock();
    match format {
        Output::Text => stdout.write_all(report::drift_text(&report).as_bytes())?,
        Output::Json => {
            stdout.write_all(report::drift_json(&report)?.as_bytes())?;
            eprintln!("{}", report.summary());
        }
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// The hosts to observe (the plan's, `--host` only, plus hosts with steps the
/// file no longer has) and those the running lab does not have (added since).
fn hosts_to_observe(
    topo: &Topology,
    plan: &Plan,
    lab_state: &state::LabState,
    file: &Path,
    run: &RunArgs,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut hosts = drift::hosts(topo, plan);
    for h in &run.limit {
        if topo.host_by_name(h).is_none() {
            anyhow::bail!("--host: no host `{h}` in {}", file.display());
        }
    }
    if !run.limit.is_empty() {
        hosts.retain(|h| run.limit.contains(h));
    }
    let topo_hosts: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
    for h in converge::removals(&topo_hosts, plan, lab_state, &run.limit)
        .changes
        .keys()
    {
        if !hosts.contains(h) {
            hosts.push(h.clone());
        }
    }
    let known = lab_state.known_hosts();
    let missing: Vec<String> = if known.is_empty() {
        Vec::new()
    } else {
        hosts.iter().filter(|h| !known.contains(h)).cloned().collect()
    };
    hosts.retain(|h| !missing.contains(h));
    Ok((hosts, missing))
}

/// `--fix`: remove what the file no longer declares, re-apply the drifted
/// steps, put keepalived's IPVS entries back, then look again; the report of
/// what is left, with what was fixed.
async fn fix_all(l: &Looked<'_>, before: Report, removals: &Removals, run: &RunArgs) -> anyhow::Result<Report> {
    eprintln!("{}", before.summary());
    let mut failed = false;
    if !removals.hosts.is_empty() || !removals.changes.is_empty() {
        failed |= fix_removals(l, removals, run).await?;
    }
    let step_hosts = drift::fix::step_hosts(&before);
    if !step_hosts.is_empty() {
        let _lock = l.dir.lock()?;
        let lab_state = l.dir.load()?.unwrap_or_default();
        let save_dir = state::LabDir::new(&l.topo.lab);
        let save: runner::SaveFn = Arc::new(move |s: &state::LabState| save_dir.save(s));
        let opts = runner::Options {
            check: false,
            forks: run.conn.forks,
        };
        let reporter = reporter(run.output, run.verbose, &step_hosts);
        let (outcome, lab_state) =
            drift::fix::reapply(&l.plan, &step_hosts, &l.conns, lab_state, save, opts, reporter).await;
        l.dir.save(&lab_state)?;
        failed |= outcome.failed;
        eprint!("{}", report::recap_text(&outcome, "FIX RECAP", "changed"));
    }
    for r in drift::fix::keepalived_entries(l.topo, &l.plan, &l.conns).await {
        eprintln!("{}: ipvsadm {}", r.host, r.args.join("; ipvsadm "));
        if let Some(e) = r.error {
            failed = true;
            eprintln!("{}: {e}", r.host);
        }
    }
    // Look again: what is left is what --fix could not fix.
    let observed = drift::observe(l.topo, &l.plan, l.conns.clone()).await;
    let mut report = drift::decide(l.topo, &l.plan, &observed, l.start.elapsed().as_secs_f64());
    let now = l.dir.load()?.unwrap_or_default();
    drift::add_removals(
        &mut report,
        &converge::removals(&l.topo_hosts, &l.plan, &now, &run.limit),
        &l.missing,
    );
    report.fixed = drift::fixed(&before, &report);
    if failed {
        eprintln!("--fix: some repairs failed (above); what is left is reported below");
    }
    Ok(report)
}

/// What the file no longer declares goes, as `up` removes it: hosts with
/// their provider's namespace, steps reverted. True when something failed.
async fn fix_removals(l: &Looked<'_>, removals: &Removals, run: &RunArgs) -> anyhow::Result<bool> {
    let _lock = l.dir.lock()?;
    let mut lab_state = l.dir.load()?.unwrap_or_default();
    let shown: Vec<String> = removals.hosts.iter().chain(removals.changes.keys()).cloned().collect();
    let reporter = reporter(run.output, run.verbose, &shown);
    let mut outcome = runner::RunOutcome::default();
    if l.lab.removes_hosts() && !removals.hosts.is_empty() {
        outcome = make_hosts(l.lab, &mut lab_state, &removals.hosts, &reporter).await?;
    }
    let removed = remove(l.lab, &l.plan, removals, &l.conns, &mut lab_state, &reporter).await?;
    outcome = outcome.merge(removed);
    if run.limit.is_empty() {
        lab_state.lab_hosts = l.topo_hosts.clone();
    }
    l.dir.save(&lab_state)?;
    eprint!(
        "{}",
        report::recap_text(&outcome, "REMOVED (no longer in the topology)", "removed")
    );
    Ok(outcome.failed)
}
