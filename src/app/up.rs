//! `up`: make the hosts, converge every step, remove what the file no
//! longer declares, then verify.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::cli::{Output, RunArgs};
use super::lab::{
    choose_provider, connections, ensure_netns, ensure_vm, hosts_removed, provider_topology, remove, would_remove,
};
use super::verify::verify_with;
use super::{Provider, finish, limit_plan, load_reported, reporter, unix_now, with_detected_os};
use crate::exec::{connect, converge, runner};
use crate::provider::{netns, vm};
use crate::{compile, report, state};

pub async fn up(file: &Path, check: bool, no_verify: bool, run: &RunArgs) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let provider = choose_provider(&loaded.topology, run)?;
    let topo_p = provider_topology(&loaded.topology, provider)?;
    let topo = topo_p.as_ref();
    if provider == Provider::Netns {
        netns::preflight(topo)?;
    }
    if provider == Provider::Vm && !check {
        vm::preflight(topo, run.conn.vm_kernel().as_deref())?;
    }
    let mut plan = compile::compile(topo)?;
    for h in &run.limit {
        if topo.host_by_name(h).is_none() {
            anyhow::bail!("--limit: no host `{h}` in {}", file.display());
        }
    }
    limit_plan(&mut plan, &run.limit);
    let dir = state::LabDir::new(&topo.lab);
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
    let topo_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let reach = connect::reach(topo, &topo_dir);
    lab_state.topology = Some(
        std::fs::canonicalize(file)
            .unwrap_or_else(|_| file.to_path_buf())
            .display()
            .to_string(),
    );
    for h in &hosts {
        if let Some(r) = reach.get(h) {
            lab_state.reach.insert(h.clone(), r.clone());
        }
    }
    let mut shown = hosts.clone();
    shown.extend(removals.hosts.iter().cloned());
    let reporter = reporter(run, &shown);
    let mut removed_outcome = runner::RunOutcome::default();
    if provider == Provider::Netns {
        if check && lab_state.infra.is_empty() {
            anyhow::bail!(
                "lab {} is not up: --check needs its hosts (run `lvslab up` first)",
                topo.lab
            );
        }
        if !check {
            let gone = ensure_netns(topo, &dir, &mut lab_state)?;
            removed_outcome = removed_outcome.merge(hosts_removed(&mut lab_state, &gone, "netns", &reporter));
            dir.save(&lab_state)?;
        }
    }
    if provider == Provider::Vm {
        if check && !lab_state.vm.as_ref().is_some_and(vm::alive) {
            anyhow::bail!(
                "lab {} is not up: --check needs its VM (run `lvslab up` first)",
                topo.lab
            );
        }
        if !check {
            let rec = ensure_vm(topo, file, &dir, &mut lab_state, run).await?;
            // The lvslab inside the VM removed the hosts the file no longer has.
            removed_outcome = removed_outcome.merge(hosts_removed(&mut lab_state, &removals.hosts, "vm", &reporter));
            // `down --limit` reaches the hosts without the topology.
            lab_state.reach = vm::host_reach(topo, &rec);
            dir.save(&lab_state)?;
        }
    }
    let (conns, facts) = connections(topo, file, provider, run, &lab_state, &hosts, Some(&plan)).await?;
    let detected;
    let (topo, mut plan) = match with_detected_os(topo, provider, &facts)? {
        Some(t) => {
            detected = t;
            let mut plan = compile::compile(&detected)?;
            limit_plan(&mut plan, &run.limit);
            (&detected, plan)
        }
        None => (topo, plan),
    };
    let removals = converge::removals(&topo_hosts, &plan, &lab_state, &run.limit);
    let opts = runner::Options {
        check,
        forks: run.conn.forks,
    };
    if check {
        removed_outcome = would_remove(&removals, provider, &reporter);
    } else {
        let outcome = remove(&plan, &removals, provider, &conns, &mut lab_state, &dir, run, &reporter).await?;
        removed_outcome = removed_outcome.merge(outcome);
        if run.limit.is_empty() {
            lab_state.lab_hosts = topo_hosts.clone();
        }
    }
    // Each director's IPVS step deletes the services lvslab made and the file
    // no longer declares, and drains the real servers it removed.
    converge::with_previous_ipvs(&mut plan, &lab_state);
    // The same transports serve the verify that follows.
    let verify_conns: Vec<runner::HostConn> = conns
        .iter()
        .filter(|c| plan.host_names().contains(&c.host.as_str()))
        .map(|c| runner::HostConn {
            host: c.host.clone(),
            transport: c.transport.clone(),
        })
        .collect();
    let up_conns: Vec<runner::HostConn> = conns
        .into_iter()
        .filter(|c| plan.host_names().contains(&c.host.as_str()))
        .collect();
    let plan = Arc::new(plan);
    let save: runner::SaveFn = if check {
        Arc::new(|_: &state::LabState| Ok(()))
    } else {
        let dir = state::LabDir::new(&topo.lab);
        Arc::new(move |s: &state::LabState| dir.save(s).map_err(|e| e.to_string()))
    };
    let (outcome, lab_state) = runner::up(Arc::clone(&plan), up_conns, lab_state, save, opts, reporter).await;
    if !check {
        dir.save(&lab_state)?;
    }
    let outcome = removed_outcome.merge(outcome);
    let title = if check {
        "CHECK RECAP (nothing was changed)"
    } else {
        "RECAP"
    };
    let code = finish(&outcome, run, title, if check { "to change" } else { "changed" });
    if check || outcome.failed || no_verify || (topo.services.is_empty() && topo.checks.is_empty()) {
        return Ok(code);
    }
    if !run.limit.is_empty() {
        eprintln!("verify skipped: --limit provisioned only some hosts (run `lvslab verify` for the whole lab)");
        return Ok(code);
    }
    // Hosts without steps (a bare client, say) were not connected for provisioning.
    let missing: Vec<String> = topo
        .hosts
        .iter()
        .map(|h| h.name.clone())
        .filter(|h| !verify_conns.iter().any(|c| &c.host == h))
        .collect();
    let mut verify_conns = verify_conns;
    if !missing.is_empty() {
        verify_conns.extend(
            connections(topo, file, provider, run, &lab_state, &missing, None)
                .await?
                .0,
        );
    }
    let report = verify_with(topo, &plan, verify_conns, None, None, false).await;
    if run.output == Output::Json {
        println!("{}", serde_json::json!({ "event": "verify", "report": report }));
    } else {
        print!("\n{}", report::verify_text(&report));
    }
    Ok(if report.passed { code } else { ExitCode::from(1) })
}
