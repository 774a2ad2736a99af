//! `drift`: observe, judge, and with `--fix` repair and observe again.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::cli::{Output, RunArgs};
use super::lab::{choose_provider, connections, ensure_netns, ensure_vm, hosts_removed, provider_topology, remove};
use super::{Provider, load_reported, reporter, with_detected_os};
use crate::drift;
use crate::exec::{converge, runner};
use crate::{compile, report, state};

/// `drift`: observe, judge, and with `fix` repair and observe again.
pub async fn drift(file: &Path, format: Output, fix: bool, run: &RunArgs) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let provider = choose_provider(&loaded.topology, run)?;
    let topo_p = provider_topology(&loaded.topology, provider)?;
    let topo = topo_p.as_ref();
    let plan = compile::compile(topo)?;
    let dir = state::LabDir::new(&topo.lab);
    let lab_state = dir.load()?.unwrap_or_default();
    if provider == Provider::Netns && lab_state.infra.is_empty() {
        anyhow::bail!("lab {} is not up (run `lvslab up {}` first)", topo.lab, file.display());
    }
    let mut hosts = drift::hosts(topo, &plan);
    for h in &run.limit {
        if topo.host_by_name(h).is_none() {
            anyhow::bail!("--host: no host `{h}` in {}", file.display());
        }
    }
    if !run.limit.is_empty() {
        hosts.retain(|h| run.limit.contains(h));
    }
    let topo_hosts: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
    // Hosts with steps the file no longer has are looked at too; hosts the
    // file has and the running lab does not (added since) cannot be.
    for h in converge::removals(&topo_hosts, &plan, &lab_state, &run.limit)
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
    let start = std::time::Instant::now();
    let (conns, facts) = connections(topo, file, provider, run, &lab_state, &hosts, Some(&plan)).await?;
    let detected;
    let (topo, mut plan) = match with_detected_os(topo, provider, &facts)? {
        Some(t) => {
            detected = t;
            (&detected, compile::compile(&detected)?)
        }
        None => (topo, plan),
    };
    // IPVS services lvslab made and the file no longer declares are drift too.
    converge::with_previous_ipvs(&mut plan, &lab_state);
    let removals = converge::removals(&topo_hosts, &plan, &lab_state, &run.limit);
    let copy = |conns: &[runner::HostConn]| -> Vec<runner::HostConn> {
        conns
            .iter()
            .map(|c| runner::HostConn {
                host: c.host.clone(),
                transport: c.transport.clone(),
            })
            .collect()
    };
    let observed = drift::observe(topo, &plan, copy(&conns)).await;
    let mut report = drift::decide(topo, &plan, &observed, start.elapsed().as_secs_f64());
    drift::add_removals(&mut report, &removals, &missing);
    let fixable = report.hosts.iter().flat_map(|h| &h.findings).any(|f| f.fixable());
    if fix && fixable {
        let before = report.clone();
        eprintln!("{}", before.summary());
        let mut failed = false;
        // 0. What the file no longer declares goes, as `up` removes it.
        if !removals.hosts.is_empty() || !removals.changes.is_empty() {
            let _lock = dir.lock()?;
            let mut lab_state = dir.load()?.unwrap_or_default();
            let shown: Vec<String> = removals.hosts.iter().chain(removals.changes.keys()).cloned().collect();
            let reporter = reporter(run, &shown);
            let mut outcome = runner::RunOutcome::default();
            match provider {
                Provider::Netns if !removals.hosts.is_empty() => {
                    let gone = ensure_netns(topo, &dir, &mut lab_state)?;
                    outcome = outcome.merge(hosts_removed(&mut lab_state, &gone, "netns", &reporter));
                }
                Provider::Vm if !removals.hosts.is_empty() => {
                    ensure_vm(topo, file, &dir, &mut lab_state, run).await?;
                    outcome = outcome.merge(hosts_removed(&mut lab_state, &removals.hosts, "vm", &reporter));
                }
                _ => {}
            }
            outcome =
                outcome.merge(remove(&plan, &removals, provider, &conns, &mut lab_state, &dir, run, &reporter).await?);
            if run.limit.is_empty() {
                lab_state.lab_hosts = topo_hosts.clone();
            }
            dir.save(&lab_state)?;
            failed |= outcome.failed;
            eprint!(
                "{}",
                report::recap_text(&outcome, "REMOVED (no longer in the topology)", "removed")
            );
        }
        // 1. The drifted steps, by the runner (it re-observes, applies only
        // what differs, records originals for `down`).
        let step_hosts: Vec<String> = before
            .hosts
            .iter()
            .filter(|h| h.findings.iter().any(|f| matches!(f.fix, drift::Fix::Step { .. })))
            .map(|h| h.host.clone())
            .collect();
        if !step_hosts.is_empty() {
            let _lock = dir.lock()?;
            let mut fix_plan = plan.clone();
            for p in &mut fix_plan.phases {
                p.hosts.retain(|h| step_hosts.contains(&h.host));
            }
            let fix_conns: Vec<runner::HostConn> = copy(&conns)
                .into_iter()
                .filter(|c| step_hosts.contains(&c.host))
                .collect();
            let lab_state = dir.load()?.unwrap_or_default();
            let save_dir = state::LabDir::new(&topo.lab);
            let save: runner::SaveFn = Arc::new(move |s: &state::LabState| save_dir.save(s).map_err(|e| e.to_string()));
            let opts = runner::Options {
                check: false,
                forks: run.conn.forks,
            };
            let (outcome, lab_state) = runner::up(
                Arc::new(fix_plan),
                fix_conns,
                lab_state,
                save,
                opts,
                reporter(run, &step_hosts),
            )
            .await;
            dir.save(&lab_state)?;
            failed = outcome.failed;
            eprint!("{}", report::recap_text(&outcome, "FIX RECAP", "changed"));
        }
        // 2. keepalived's own table entries, by keepalived's configuration,
        // once the steps (keepalived itself among them) are right.
        let observed = drift::observe(topo, &plan, copy(&conns)).await;
        let now = drift::decide(topo, &plan, &observed, 0.0);
        for h in &now.hosts {
            let args: Vec<String> = h
                .findings
                .iter()
                .filter_map(|f| match &f.fix {
                    drift::Fix::Ipvsadm { args } => Some(args.clone()),
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
            eprintln!("{}: ipvsadm {}", h.host, args.join("; ipvsadm "));
            match t.run(&format!("set -e\n{script}")).await {
                Ok(o) if o.status == 0 => {}
                Ok(o) => {
                    failed = true;
                    eprintln!(
                        "{}: ipvsadm failed (exit {}): {}{}",
                        h.host,
                        o.status,
                        o.stdout.trim(),
                        o.stderr.trim()
                    );
                }
                Err(e) => {
                    failed = true;
                    eprintln!("{}: {e}", h.host);
                }
            }
        }
        // 3. Look again: what is left is what --fix could not fix.
        let observed = drift::observe(topo, &plan, copy(&conns)).await;
        report = drift::decide(topo, &plan, &observed, start.elapsed().as_secs_f64());
        let now = dir.load()?.unwrap_or_default();
        drift::add_removals(
            &mut report,
            &converge::removals(&topo_hosts, &plan, &now, &run.limit),
            &missing,
        );
        report.fixed = drift::fixed(&before, &report);
        if failed {
            eprintln!("--fix: some repairs failed (above); what is left is reported below");
        }
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
