//! The providers as the verbs use them: which one runs a lab, the topology
//! as it runs it, making its hosts, and connections to them. Every
//! provider-specific branch of the verbs is here (and in `down`'s teardown).

use std::path::Path;
use std::sync::Arc;

use super::cli::{RunArgs, Via};
use super::{Facts, Provider, load_reported, unix_now};
use crate::exec::{connect, converge, runner};
use crate::provider::{netns, vm};
use crate::{plan, report, state};
use std::process::ExitCode;

/// The provider: `--provider`, else the topology's `provider:`, else the one
/// the lab was brought up with on this machine, else netns when this machine
/// can run the lab (root, a kernel with IPVS) and vm when not (saying why).
pub(crate) fn choose_provider(topo: &crate::model::Topology, run: &RunArgs) -> anyhow::Result<Provider> {
    let recorded = || {
        state::LabDir::new(&topo.lab)
            .load()
            .ok()
            .flatten()
            .and_then(|s| s.provider)
    };
    match run.conn.provider.or(topo.provider).or_else(recorded) {
        Some(p) => Ok(p),
        None => Ok(match netns::can_run_here(topo) {
            Ok(()) => {
                eprintln!("provider: netns (root, and this kernel has what the lab needs; --provider to choose)");
                Provider::Netns
            }
            Err(e) => {
                let why = match e {
                    netns::NetnsError::NotRoot => "network namespaces need root".to_string(),
                    netns::NetnsError::Kernel { module, .. } => format!("this kernel cannot load {module}"),
                    other => crate::diag::chain(&other),
                };
                eprintln!("provider: vm, because {why} (--provider to choose)");
                Provider::Vm
            }
        }),
    }
}

/// The topology as the provider runs it: the vm provider adds a management
/// network (for its hosts' sshds) when the topology has none.
pub(crate) fn provider_topology(
    topo: &crate::model::Topology,
    provider: Provider,
) -> anyhow::Result<std::borrow::Cow<'_, crate::model::Topology>> {
    Ok(match provider {
        Provider::Vm => std::borrow::Cow::Owned(vm::with_mgmt(topo)?),
        // Over SSH the plan owns the hosts' addresses (`--provider ssh` on a
        // topology that names another provider, or none).
        Provider::Ssh if topo.provider != Some(crate::model::Provider::Ssh) => {
            let mut t = topo.clone();
            t.provider = Some(crate::model::Provider::Ssh);
            std::borrow::Cow::Owned(t)
        }
        _ => std::borrow::Cow::Borrowed(topo),
    })
}

/// Make the file's hosts as network namespaces (converging what an earlier
/// or interrupted run left); returns the hosts it removed.
pub(crate) fn ensure_netns(
    topo: &crate::model::Topology,
    dir: &state::LabDir,
    lab_state: &mut state::LabState,
) -> anyhow::Result<Vec<String>> {
    let nsp = netns::Netns {
        topo,
        ssh_dir: dir.path.join("ssh"),
    };
    Ok(crate::exec::blocking(|| {
        nsp.ensure(lab_state, &|s: &state::LabState| dir.save(s))
    })?)
}

/// Boot the lab's VM (or find it running) and have the lvslab inside it make
/// the file's hosts (and remove those the file no longer has), with a spinner.
pub(crate) async fn ensure_vm(
    topo: &crate::model::Topology,
    file: &Path,
    dir: &state::LabDir,
    lab_state: &mut state::LabState,
    run: &RunArgs,
) -> anyhow::Result<vm::VmRecord> {
    let text = crate::read_topology(file).map_err(|d| anyhow::anyhow!("{d}"))?;
    let spinner = report::Spinner::new();
    let booted = vm::ensure(
        topo,
        &text,
        &dir.path.join("vm"),
        lab_state,
        &|s: &state::LabState| dir.save(s),
        run.conn.vm_kernel().as_deref(),
        &spinner,
    )
    .await;
    spinner.finish();
    Ok(booted?)
}

/// Transports to the lab's hosts for the chosen provider. For SSH with a plan,
/// each host's facts are read (once) and checked against it.
pub(crate) async fn connections(
    topo: &crate::model::Topology,
    file: &Path,
    provider: Provider,
    run: &RunArgs,
    lab_state: &state::LabState,
    hosts: &[String],
    plan: Option<&plan::Plan>,
) -> anyhow::Result<(Vec<runner::HostConn>, Facts)> {
    let over_ssh = |reach: std::collections::BTreeMap<String, connect::Reach>, accept: bool| async move {
        let conns = connect::connect_all(hosts, &reach, accept, run.conn.forks).await;
        match plan {
            Some(p) => connect::check_facts(conns, p).await,
            None => (conns, Facts::new()),
        }
    };
    Ok(match provider {
        Provider::Ssh => {
            let topo_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
            over_ssh(connect::reach(topo, &topo_dir), run.conn.accept_new_host_keys).await
        }
        Provider::Netns => {
            let nsp = netns::Netns {
                topo,
                ssh_dir: state::LabDir::new(&topo.lab).path.join("ssh"),
            };
            match run.conn.via {
                Via::Ns => (nsp.connections(lab_state, hosts), Facts::new()),
                Via::Ssh => {
                    let reach = nsp.mgmt_reach().ok_or_else(|| {
                        anyhow::anyhow!("--via ssh needs a management network: add `mgmt: {{ cidr: 10.250.0.0/24 }}` to the topology")
                    })?;
                    over_ssh(reach, false).await
                }
            }
        }
        Provider::Vm => {
            let rec = lab_state.vm.as_ref().filter(|r| vm::alive(r)).ok_or_else(|| {
                anyhow::anyhow!(
                    "lab {}'s VM is not running (run `lvslab up {}`)",
                    topo.lab,
                    file.display()
                )
            })?;
            over_ssh(vm::host_reach(topo, rec), false).await
        }
    })
}

/// Remove what the running lab has and the file no longer declares, except
/// netns and vm hosts (their provider removed them with their namespace):
/// hosts on machines of their own (SSH) get everything lvslab did put back,
/// and steps the file no longer has are reverted on the hosts it still has.
/// The record is updated and saved as each is confirmed.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn remove(
    plan: &plan::Plan,
    removals: &converge::Removals,
    provider: Provider,
    conns: &[runner::HostConn],
    lab_state: &mut state::LabState,
    dir: &state::LabDir,
    run: &RunArgs,
    reporter: &Arc<dyn runner::Reporter>,
) -> anyhow::Result<runner::RunOutcome> {
    let opts = runner::Options {
        check: false,
        forks: run.conn.forks,
    };
    let mut removed = runner::RunOutcome::default();
    if provider == Provider::Ssh && !removals.hosts.is_empty() {
        let gone: Vec<String> = removals.hosts.clone();
        let conns = connect::connect_all(&gone, &lab_state.reach, run.conn.accept_new_host_keys, run.conn.forks).await;
        let mut sub = state::LabState::default();
        for h in &gone {
            if let Some(hs) = lab_state.hosts.get(h) {
                sub.hosts.insert(h.clone(), hs.clone());
            }
        }
        let (outcome, left) = runner::remove(Arc::new(plan.clone()), conns, sub, opts, Arc::clone(reporter)).await;
        for h in &gone {
            match left.hosts.get(h) {
                Some(hs) => {
                    lab_state.hosts.insert(h.clone(), hs.clone());
                }
                None => {
                    lab_state.hosts.remove(h);
                    lab_state.reach.remove(h);
                    lab_state.lab_hosts.retain(|x| x != h);
                }
            }
        }
        removed = removed.merge(outcome);
        dir.save(lab_state)?;
    }
    if !removals.changes.is_empty() {
        let mut sub = state::LabState::default();
        for (h, changes) in &removals.changes {
            sub.hosts.insert(
                h.clone(),
                state::HostState {
                    changes: changes.clone(),
                },
            );
        }
        let orphan_conns: Vec<runner::HostConn> = conns
            .iter()
            .filter(|c| removals.changes.contains_key(&c.host))
            .map(|c| runner::HostConn {
                host: c.host.clone(),
                transport: c.transport.clone(),
            })
            .collect();
        let (outcome, left) =
            runner::remove(Arc::new(plan.clone()), orphan_conns, sub, opts, Arc::clone(reporter)).await;
        // Forget what was removed; what could not be stays recorded (retried next time).
        for (h, changes) in &removals.changes {
            let kept = left.hosts.get(h).map(|hs| &hs.changes);
            if let Some(hs) = lab_state.hosts.get_mut(h) {
                hs.changes.retain(|c| {
                    !changes.iter().any(|o| o.id == c.id) || kept.is_some_and(|k| k.iter().any(|x| x.id == c.id))
                });
            }
        }
        lab_state.hosts.retain(|_, h| !h.changes.is_empty());
        removed = removed.merge(outcome);
        dir.save(lab_state)?;
    }
    Ok(removed)
}

/// Hosts a provider removed with their namespace (netns, or inside the VM):
/// what lvslab recorded of them goes with them. One `removed` line each.
pub(crate) fn hosts_removed(
    lab_state: &mut state::LabState,
    gone: &[String],
    how: &str,
    reporter: &Arc<dyn runner::Reporter>,
) -> runner::RunOutcome {
    let mut outcome = runner::RunOutcome::default();
    for h in gone {
        lab_state.hosts.remove(h);
        lab_state.reach.remove(h);
        lab_state.lab_hosts.retain(|x| x != h);
        let r = runner::StepResult {
            host: h.clone(),
            phase: "lab".into(),
            id: "host".into(),
            summary: format!("host {h} (no longer in the topology): its {how} namespace and everything in it"),
            status: runner::Status::Removed,
            details: Vec::new(),
            diff: None,
        };
        reporter.step(&r);
        outcome.results.push(r);
        outcome.recap.push(runner::HostRecap {
            host: h.clone(),
            changed: 1,
            ..runner::HostRecap::default()
        });
    }
    outcome
}

/// `up --check`: what `up` would remove, one `would remove` line each.
pub(crate) fn would_remove(
    removals: &converge::Removals,
    provider: Provider,
    reporter: &Arc<dyn runner::Reporter>,
) -> runner::RunOutcome {
    let mut outcome = runner::RunOutcome::default();
    let mut add = |host: &str, phase: &str, id: &str, summary: String| {
        let r = runner::StepResult {
            host: host.to_string(),
            phase: phase.to_string(),
            id: id.to_string(),
            summary,
            status: runner::Status::WouldRemove,
            details: vec!["no longer in the topology".into()],
            diff: None,
        };
        reporter.step(&r);
        outcome.results.push(r);
        match outcome.recap.iter_mut().find(|c| c.host == host) {
            Some(c) => c.changed += 1,
            None => outcome.recap.push(runner::HostRecap {
                host: host.to_string(),
                changed: 1,
                ..runner::HostRecap::default()
            }),
        }
    };
    for h in &removals.hosts {
        let how = match provider {
            Provider::Ssh => "everything lvslab changed on it, put back",
            _ => "its namespace and everything in it",
        };
        add(h, "lab", "host", format!("host {h}: {how}"));
    }
    for (h, changes) in &removals.changes {
        for c in changes {
            add(h, &c.phase, &c.id, c.summary.clone());
        }
    }
    // IPVS services no longer declared: the IPVS step says so (it deletes them).
    outcome
}

/// Internal (`vm-guest`): inside the vm provider's VM, create the lab's
/// hosts as namespaces, with sshds on the management network.
pub fn vm_guest(file: &Path, ssh_dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let topo = vm::with_mgmt(&loaded.topology)?;
    netns::preflight(&topo)?;
    let dir = state::LabDir::new(&topo.lab);
    let _lock = dir.lock()?;
    let mut lab_state = dir.load_or_new(unix_now())?;
    let nsp = netns::Netns {
        topo: &topo,
        ssh_dir: ssh_dir.to_path_buf(),
    };
    let dir2 = state::LabDir::new(&topo.lab);
    nsp.ensure(&mut lab_state, &|s: &state::LabState| dir2.save(s))?;
    dir.save(&lab_state)?;
    Ok(ExitCode::SUCCESS)
}
