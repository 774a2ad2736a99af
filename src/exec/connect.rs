//! From the model's `ssh:` settings to live transports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::ssh::{SshConnect, SshTransport};
use super::transport::HostConn;
use super::transport::{Facts, Transport};
use crate::model::Topology;
pub use crate::state::Reach;

fn expand(path: &str, base: &Path) -> PathBuf {
    if let Some(rest) = path.strip_prefix("~/") {
        std::env::home_dir().unwrap_or_default().join(rest)
    } else {
        base.join(path)
    }
}

/// Each host's reach, resolving relative paths against the topology's directory.
pub fn reach(topo: &Topology, topology_dir: &Path) -> BTreeMap<String, Reach> {
    let user_known = std::env::home_dir().map(|h| h.join(".ssh/known_hosts"));
    topo.hosts
        .iter()
        .map(|h| {
            let s = &h.ssh;
            let mut known_hosts: Vec<PathBuf> = s.known_hosts.iter().map(|k| expand(k, topology_dir)).collect();
            known_hosts.extend(user_known.clone());
            (
                h.name.clone(),
                Reach {
                    address: s.host.clone(),
                    port: s.port,
                    user: s.user.clone(),
                    key: s.key.as_deref().map(|k| expand(k, topology_dir)),
                    passphrase_env: s.passphrase_env.clone(),
                    known_hosts,
                    jump: s.jump.clone(),
                    become_root: s.become_root,
                    connect_timeout_secs: s.connect_timeout_secs,
                },
            )
        })
        .collect()
}

/// Connect to every named host over SSH, `forks` at a time.
pub async fn connect_all(
    hosts: &[String],
    reach: &BTreeMap<String, Reach>,
    accept_new_host_keys: bool,
    forks: usize,
) -> Vec<HostConn> {
    let sem = Arc::new(Semaphore::new(forks.max(1)));
    let mut tasks = Vec::new();
    for h in hosts {
        let target = reach
            .get(h)
            .ok_or_else(|| format!("{h}: no connection settings"))
            .and_then(|r| SshConnect::new(h, r, accept_new_host_keys));
        let sem = Arc::clone(&sem);
        let host = h.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let transport = match target {
                Ok(t) => SshTransport::connect(&t)
                    .await
                    .map(|t| Arc::new(t) as Arc<dyn Transport>)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            HostConn { host, transport }
        }));
    }
    let mut out = Vec::new();
    for (t, h) in tasks.into_iter().zip(hosts) {
        out.push(t.await.unwrap_or_else(|e| HostConn {
            host: h.clone(),
            transport: Err(e.to_string()),
        }));
    }
    out
}

/// Read the facts of each connected host that `wanted` names (one round
/// trip per such host, all at once; the others cost nothing). Returns the
/// connections and the facts read (by host).
pub async fn read_facts(
    conns: Vec<HostConn>,
    wanted: impl Fn(&str) -> bool,
) -> (Vec<HostConn>, BTreeMap<String, Facts>) {
    let mut tasks = Vec::new();
    for c in conns {
        let read = wanted(&c.host);
        tasks.push(tokio::spawn(async move {
            let mut facts = None;
            let transport = match c.transport {
                Ok(t) if read => match t.facts().await {
                    Ok(f) => {
                        facts = Some(f);
                        Ok(t)
                    }
                    Err(e) => Err(e.to_string()),
                },
                other => other,
            };
            (
                HostConn {
                    host: c.host,
                    transport,
                },
                facts,
            )
        }));
    }
    let mut out = Vec::new();
    let mut all = BTreeMap::new();
    for t in tasks {
        match t.await {
            Ok((c, f)) => {
                if let Some(f) = f {
                    all.insert(c.host.clone(), f);
                }
                out.push(c);
            }
            Err(e) => out.push(HostConn {
                host: "?".into(),
                transport: Err(e.to_string()),
            }),
        }
    }
    (out, all)
}

/// Whether `host`'s planned services are managed by systemd: then its first
/// observation also reads its facts ([`FACTS_SCRIPT`](super::transport::FACTS_SCRIPT)) and [`init_refusal`]
/// judges them, in the same round trip.
pub fn needs_systemd(plan: &crate::plan::Plan, host: &str) -> bool {
    use crate::plan::{Resource, ServiceManager};
    plan.phases
        .iter()
        .flat_map(|p| &p.hosts)
        .filter(|h| h.host == host)
        .flat_map(|h| &h.steps)
        .any(|s| {
            matches!(
                &s.resource,
                Resource::Service {
                    manager: ServiceManager::Systemd { .. },
                    ..
                }
            )
        })
}

/// Why a host whose services are planned for systemd cannot take them, from
/// the facts read from it; `None` when it runs systemd.
pub fn init_refusal(host: &str, facts: &Facts) -> Option<String> {
    (facts.init != "systemd").then(|| {
        format!(
            "{host}: its services are planned for systemd, but the host runs without it (init {}); set `init: daemon` for it in the topology",
            facts.init
        )
    })
}

/// Fill in the OS family of every host that declares none, from the facts
/// read from it (`check_facts`), so that the plan compiled next names the
/// right packages and web server. Returns what was filled in (`host family`).
/// A host that needs packages on a family lvslab does not map is an error
/// naming the fix; hosts without facts (unreachable) are left as they are.
pub fn apply_detected_os(
    topo: &mut crate::model::Topology,
    facts: &BTreeMap<String, Facts>,
) -> Result<Vec<String>, String> {
    use crate::model::OsFamily;
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for h in topo.hosts.iter_mut().filter(|h| h.os.is_none()) {
        let Some(f) = facts.get(&h.name) else { continue };
        match OsFamily::from_os_release(&f.os_family) {
            Some(family) => {
                h.os = Some(family);
                found.push(format!("{} {}", h.name, family.as_str()));
            }
            None if h.packages => problems.push(format!(
                "{}: its OS family is `{}` (from /etc/os-release); lvslab maps packages for debian and rhel: \
                 set `os: debian` or `os: rhel` for it if one fits, or `packages: false` and install them yourself",
                h.name,
                if f.os_family.is_empty() {
                    "unknown"
                } else {
                    &f.os_family
                }
            )),
            None => {}
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems.join("\n"))
    }
}
