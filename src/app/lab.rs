//! The providers as the verbs use them: which one runs a lab, the topology
//! as it runs it, making its hosts, and connections to them. Every
//! provider-specific branch of the verbs is here (and in `down`'s teardown).

use std::path::Path;
use std::sync::Arc;

use std::process::ExitCode;

use super::cli::{ConnArgs, Via};
use super::{load_reported, unix_now};
use crate::exec::{connect, converge, runner};
use crate::model::Topology;
use crate::provider::{self, Lab, netns, vm};
use crate::{plan, report, state};

/// The lab on its provider: the flag's, the topology's, the record's, or
/// the one this machine can run (said on stderr, with why).
pub(crate) fn open<'a>(
    topo: &'a Topology,
    file: &'a Path,
    conn: &ConnArgs,
    vm_kernel: Option<&Path>,
) -> anyhow::Result<Lab<'a>> {
    let (kind, why) = provider::choose(topo, conn.provider);
    if let Some(why) = why {
        eprintln!("provider: {why}");
    }
    Ok(Lab::new(kind, topo, file, options(conn, vm_kernel))?)
}

/// The command line's connection flags as the provider layer takes them
/// (the vm kernel: `--vm-kernel` of `up`, else $LVSLAB_VM_KERNEL).
pub(crate) fn options(conn: &ConnArgs, vm_kernel: Option<&Path>) -> provider::Options {
    provider::Options {
        forks: conn.forks,
        accept_new_host_keys: conn.accept_new_host_keys,
        via_ssh: conn.via == Via::Ssh,
        vm_kernel: vm_kernel
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("LVSLAB_VM_KERNEL").map(std::path::PathBuf::from)),
    }
}

/// The provider makes the lab's hosts (a spinner while it reports
/// progress); the hosts it removed with their namespace lose their record,
/// one `removed` line each.
pub(crate) async fn make_hosts(
    lab: &Lab<'_>,
    lab_state: &mut state::LabState,
    gone: &[String],
    reporter: &Arc<dyn runner::Reporter>,
) -> anyhow::Result<runner::RunOutcome> {
    let before = revert_outliving(lab, lab_state, gone, reporter).await?;
    let spinner = report::Spinner::new();
    let removed = lab.ensure(lab_state, gone, &spinner).await;
    spinner.finish();
    let removed = removed?;
    let outcome = hosts_removed(lab_state, &removed, lab.kind.as_str(), reporter);
    lab.dir.save(lab_state)?;
    Ok(before.merge(outcome))
}

/// Whether a recorded change outlives a netns host's namespace: the hosts
/// share this machine's file system outside their private directories, so
/// a file, line or directory step there (and a command with a revert, which
/// may act anywhere) is this machine's, not the namespace's.
pub(crate) fn outlives_namespace(r: &plan::Resource) -> bool {
    match r {
        plan::Resource::File { path, .. }
        | plan::Resource::Line { path, .. }
        | plan::Resource::Directory { path, .. } => !state::is_private(&crate::model::normal_path(path)),
        plan::Resource::Command { revert, .. } => revert.is_some(),
        _ => false,
    }
}

/// Before the netns provider removes the namespace of a host the file no
/// longer has, what lvslab did on this machine's file system through it is
/// put back (as `down` would). What cannot be is reported `FAILED` with
/// its path (`up` then exits 1) and the host goes all the same: a host that
/// could never be removed would stop every later `up`.
async fn revert_outliving(
    lab: &Lab<'_>,
    lab_state: &mut state::LabState,
    gone: &[String],
    reporter: &Arc<dyn runner::Reporter>,
) -> anyhow::Result<runner::RunOutcome> {
    if lab.kind != crate::model::Provider::Netns {
        return Ok(runner::RunOutcome::default());
    }
    // Every host the provider is about to remove: the record's hosts the
    // topology no longer has (with `--limit` too, which `gone` leaves out).
    let mut gone: Vec<String> = gone.to_vec();
    gone.extend(
        lab_state
            .known_hosts()
            .into_iter()
            .filter(|h| lab.topo.host_by_name(h).is_none()),
    );
    gone.sort();
    gone.dedup();
    let mut sub = state::LabState::default();
    for h in &gone {
        let Some(hs) = lab_state.hosts.get(h) else { continue };
        let changes: Vec<state::Change> = hs
            .changes
            .iter()
            .filter(|c| outlives_namespace(&c.resource))
            .cloned()
            .collect();
        if !changes.is_empty() {
            sub.hosts.insert(h.clone(), state::HostState { changes });
        }
    }
    if sub.hosts.is_empty() {
        return Ok(runner::RunOutcome::default());
    }
    let names: Vec<String> = sub.hosts.keys().cloned().collect();
    let nsp = netns::Netns {
        topo: &lab.topo,
        ssh_dir: lab.dir.path.join("ssh"),
    };
    // A host whose namespace is already gone (this machine rebooted): its
    // file, line and directory changes are on this machine's file system
    // and are reverted from here; its commands' reverts cannot run.
    let mut lost = Vec::new();
    let conns = from_here_if_gone(nsp.connections(lab_state, &names), &mut sub, &mut lost, reporter);
    let opts = runner::Options {
        check: false,
        forks: lab.opts.forks,
    };
    let (mut outcome, left) = runner::remove(
        Arc::new(plan::Plan::empty(&lab.topo.lab)),
        conns,
        sub,
        opts,
        Arc::clone(reporter),
    )
    .await;
    for h in &names {
        let kept = left.hosts.get(h).map(|hs| &hs.changes);
        if let Some(hs) = lab_state.hosts.get_mut(h) {
            hs.changes
                .retain(|c| !outlives_namespace(&c.resource) || kept.is_some_and(|k| k.iter().any(|x| x.id == c.id)));
        }
    }
    lab.dir.save(lab_state)?;
    outcome.failed |= !lost.is_empty();
    outcome.results.extend(lost);
    Ok(outcome)
}

/// Connections for reverting netns hosts' recorded changes: a host whose
/// namespace is already gone (this machine rebooted) has its file, line
/// and directory changes on this machine's file system reverted from here;
/// the rest went with its namespace, except commands with a revert, which
/// cannot run any more: each a `FAILED` line (in `lost`), never silence.
pub(crate) fn from_here_if_gone(
    conns: Vec<runner::HostConn>,
    state: &mut state::LabState,
    lost: &mut Vec<runner::StepResult>,
    reporter: &Arc<dyn runner::Reporter>,
) -> Vec<runner::HostConn> {
    conns
        .into_iter()
        .map(|c| match c.transport {
            Ok(_) => c,
            Err(why) => {
                if let Some(hs) = state.hosts.get_mut(&c.host) {
                    let (here, gone): (Vec<state::Change>, Vec<state::Change>) = hs.changes.drain(..).partition(|ch| {
                        outlives_namespace(&ch.resource) && !matches!(ch.resource, plan::Resource::Command { .. })
                    });
                    hs.changes = here;
                    for ch in gone.iter().filter(|ch| outlives_namespace(&ch.resource)) {
                        let r = runner::StepResult {
                            host: c.host.clone(),
                            phase: ch.phase.clone(),
                            id: ch.id.clone(),
                            summary: ch.summary.clone(),
                            status: runner::Status::Failed,
                            details: vec![format!("{why}: its revert cannot run there any more")],
                            diff: None,
                        };
                        reporter.step(&r);
                        lost.push(r);
                    }
                }
                runner::HostConn {
                    transport: Ok(Arc::new(crate::exec::transport::LocalTransport::new(c.host.clone()))
                        as Arc<dyn crate::exec::transport::Transport>),
                    host: c.host,
                }
            }
        })
        .collect()
}

/// Remove what the running lab has and the file no longer declares, except
/// netns and vm hosts (their provider removed them with their namespace):
/// hosts on machines of their own (SSH) get everything lvslab did put back,
/// and steps the file no longer has are reverted on the hosts it still has.
/// The record is updated and saved as each is confirmed.
pub(crate) async fn remove(
    lab: &Lab<'_>,
    plan: &plan::Plan,
    removals: &converge::Removals,
    conns: &[runner::HostConn],
    lab_state: &mut state::LabState,
    reporter: &Arc<dyn runner::Reporter>,
) -> anyhow::Result<runner::RunOutcome> {
    let opts = runner::Options {
        check: false,
        forks: lab.opts.forks,
    };
    let dir = &lab.dir;
    let mut removed = runner::RunOutcome::default();
    if !lab.removes_hosts() && !removals.hosts.is_empty() {
        let gone: Vec<String> = removals.hosts.clone();
        let conns = connect::connect_all(&gone, &lab_state.reach, lab.opts.accept_new_host_keys, lab.opts.forks).await;
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
    lab: &Lab<'_>,
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
        add(h, "lab", "host", format!("host {h}: {}", lab.removal()));
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

/// Hosts made by a provider (netns, and the vm provider's namespaces) share
/// one file system outside their private directories: two of them writing
/// one file there would race (each reads, edits and renames it) and undo
/// each other. Refused before anything runs, naming both.
pub(crate) fn refuse_shared_writes(lab: &Lab<'_>, plan: &plan::Plan) -> anyhow::Result<()> {
    if !lab.removes_hosts() {
        return Ok(());
    }
    let mut writers: std::collections::BTreeMap<String, &str> = std::collections::BTreeMap::new();
    for phase in &plan.phases {
        for h in &phase.hosts {
            for step in &h.steps {
                let (plan::Resource::File { path, .. } | plan::Resource::Line { path, .. }) = &step.resource else {
                    continue;
                };
                let path = &crate::model::normal_path(path);
                if state::is_private(path) {
                    continue;
                }
                if lab.kind == crate::model::Provider::Netns
                    && let Some(other) = other_labs_writing(&lab.topo.lab, path)
                {
                    anyhow::bail!(
                        "lab {other} already edits {path} on this machine (host {} here would too): each lab \
                         would put back the other's content as its original at down\n  \
                         hint: take lab {other} down first, or give this lab its own path",
                        h.host
                    );
                }
                match writers.get(path.as_str()) {
                    Some(other) if *other != h.host => anyhow::bail!(
                        "hosts {other} and {} both write {path}: on the {} provider the hosts share this machine's \
                         file system outside {}, and would undo each other's edits\n  \
                         hint: give each host its own path (`{{{{ host.name }}}}` in it), or let one host write it",
                        h.host,
                        lab.kind.as_str(),
                        state::PRIVATE_DIRS.join(", ")
                    ),
                    _ => {
                        writers.insert(path.clone(), &h.host);
                    }
                }
            }
        }
    }
    // A `purge` directory's contents go at down (and when its host is
    // removed): another host's file in it would go with them.
    for phase in &plan.phases {
        for h in &phase.hosts {
            for step in &h.steps {
                let plan::Resource::Directory { path, purge: true, .. } = &step.resource else {
                    continue;
                };
                let dir = crate::model::normal_path(path);
                if state::is_private(&dir) {
                    continue;
                }
                if let Some((file, other)) = writers
                    .iter()
                    .find(|(f, w)| **w != h.host && f.starts_with(&format!("{}/", dir.trim_end_matches('/'))))
                {
                    anyhow::bail!(
                        "host {}'s directory {dir} (purge: true) holds host {other}'s file {file}: on the {} provider \
                         the hosts share this machine's file system, and removing {}'s directory would take {other}'s \
                         file with it\n  hint: give each host its own directory (`{{{{ host.name }}}}` in it)",
                        h.host,
                        lab.kind.as_str(),
                        h.host
                    );
                }
            }
        }
    }
    Ok(())
}

/// Another netns lab on this machine with a recorded file or line change at
/// `path` (outside the private directories: the same file for both).
fn other_labs_writing(this: &str, path: &str) -> Option<String> {
    state::list_labs().ok()?.into_iter().filter(|l| l != this).find(|l| {
        state::LabDir::new(l).load().ok().flatten().is_some_and(|s| {
            s.provider == Some(crate::model::Provider::Netns)
                && s.hosts.values().flat_map(|h| &h.changes).any(|c| {
                    matches!(&c.resource, plan::Resource::File { path: p, .. } | plan::Resource::Line { path: p, .. } if crate::model::normal_path(p) == path)
                })
        })
    })
}
