//! `down`: revert everything `up` changed and remove what a provider made.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::cli::DownArgs;
use super::{finish, load_reported, reporter};
use crate::exec::{connect, runner};
use crate::provider::teardown;
use crate::{compile, plan, state};

pub async fn down(lab: &str, run: &DownArgs) -> anyhow::Result<ExitCode> {
    let Some((name, plan, reach)) = which_lab(lab)? else {
        return Ok(ExitCode::from(1));
    };
    let dir = state::LabDir::new(&name);
    // A lab that is not up has nothing to take down: create nothing for it.
    let Some(_lock) = dir.lock_existing()? else {
        let known = state::list_labs().unwrap_or_default();
        let known = if known.is_empty() {
            "no lab is up here".to_string()
        } else {
            format!("labs up here: {}", known.join(", "))
        };
        eprintln!("lab {name} is not up here ({known}); nothing to do");
        return Ok(ExitCode::SUCCESS);
    };
    let Some(mut lab_state) = dir.load()? else {
        // A directory without a state (an `up` that stopped before its first record).
        dir.remove_all()?;
        eprintln!("lab {name} had no recorded changes; removed {}", dir.path.display());
        return Ok(ExitCode::SUCCESS);
    };
    if !run.limit.is_empty() {
        let known = lab_state.known_hosts();
        if let Some(h) = run.limit.iter().find(|h| !known.contains(h)) {
            anyhow::bail!("--limit {h}: lab {name} has no host {h} (hosts: {})", known.join(", "));
        }
        lab_state.hosts.retain(|h, _| run.limit.contains(h));
    }
    if run.limit.is_empty()
        && let Some(done) = teardown::all_at_once(&lab_state)?
    {
        dir.remove_all()?;
        println!("DOWN RECAP ({})", lab_state.provider.map_or("ssh", |p| p.as_str()));
        for d in &done {
            println!("  {d}");
        }
        println!("  removed {}", dir.path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let hosts: Vec<String> = lab_state.hosts.keys().cloned().collect();
    let reporter = reporter(run.output, run.verbose, &hosts);
    let opts = crate::provider::Options {
        forks: run.forks,
        accept_new_host_keys: run.accept_new_host_keys,
        ..crate::provider::Options::default()
    };
    let mut conns = teardown::connections(&lab_state, &hosts, reach, &opts).await;
    // Netns hosts whose namespaces are gone (a reboot): what they did on
    // this machine's file system is reverted from here.
    let mut lost = Vec::new();
    if lab_state.provider == Some(crate::model::Provider::Netns) {
        conns = super::lab::from_here_if_gone(conns, &mut lab_state, &mut lost, &reporter);
    }
    let plan = plan.unwrap_or_else(|| plan::Plan::empty(&name));
    let opts = runner::Options {
        check: false,
        forks: run.forks,
    };
    let infra = lab_state.infra.clone();
    let (mut outcome, left) = runner::down(Arc::new(plan), conns, lab_state, opts, reporter).await;
    outcome.failed |= !lost.is_empty();
    outcome.results.extend(lost);
    // Hosts left out by --limit keep their record.
    let mut full = dir.load()?.unwrap_or_default();
    for h in &hosts {
        full.hosts.remove(h);
    }
    full.hosts.extend(left.hosts);
    if run.limit.is_empty() {
        report_problems(teardown::destroy(&mut full, infra), &name, &mut outcome);
    }
    if full.is_empty() {
        // Nothing of the lab is left: neither its record nor its lock, keys or files.
        dir.remove_all()?;
    } else {
        dir.save(&full)?;
    }
    Ok(finish(&outcome, run.output, "DOWN RECAP", "reverted"))
}

/// What `down` was given: a topology file (its lab's name, plan and reach), or
/// the name of a lab brought up earlier. `None` when the file is invalid
/// (its problems are printed).
#[allow(clippy::type_complexity)]
fn which_lab(lab: &str) -> anyhow::Result<Option<(String, Option<plan::Plan>, Option<Reaches>)>> {
    let path = Path::new(lab);
    Ok(Some(if path.is_file() {
        let Some(loaded) = load_reported(path) else {
            return Ok(None);
        };
        let plan = compile::compile(&loaded.topology)?;
        let topo_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (
            loaded.topology.lab.clone(),
            Some(plan),
            Some(connect::reach(&loaded.topology, &topo_dir)),
        )
    } else if crate::model::is_simple_name(lab) {
        (lab.to_string(), None, None)
    } else {
        anyhow::bail!("{lab}: no such topology file, and not a lab name");
    }))
}

type Reaches = std::collections::BTreeMap<String, state::Reach>;

/// What the provider could not remove, each a failed result (and left
/// recorded for the next `down`).
fn report_problems(problems: Vec<String>, name: &str, outcome: &mut runner::RunOutcome) {
    for p in &problems {
        eprintln!("FAILED       {p}");
        outcome.results.push(runner::StepResult {
            host: name.to_string(),
            phase: "infra".into(),
            id: "netns".into(),
            summary: "remove the lab's namespaces, links and directories".into(),
            status: runner::Status::Failed,
            details: vec![p.clone()],
            diff: None,
        });
    }
    if !problems.is_empty() {
        outcome.failed = true;
    }
}
