//! From the model's `ssh:` settings to live transports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::runner::HostConn;
use super::ssh::{SshConnect, SshTransport};
use super::transport::Transport;
use crate::model::Topology;

/// How to reach a host, kept in the lab state so `down LAB` works without the
/// topology file. Holds no secret (a passphrase is only ever named).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reach {
    pub address: String,
    pub port: u16,
    pub user: String,
    pub key: Option<PathBuf>,
    pub passphrase_env: Option<String>,
    pub known_hosts: Vec<PathBuf>,
    pub jump: Option<String>,
    pub become_root: bool,
    pub connect_timeout_secs: u32,
}

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

/// Read each connected host's facts (one round trip per host per run, all
/// hosts at once) and refuse hosts whose planned services need an init system
/// they do not have.
pub async fn check_facts(conns: Vec<HostConn>, plan: &crate::plan::Plan) -> Vec<HostConn> {
    use crate::plan::{Resource, ServiceManager};
    let mut tasks = Vec::new();
    for c in conns {
        let needs_systemd = plan
            .phases
            .iter()
            .flat_map(|p| &p.hosts)
            .filter(|h| h.host == c.host)
            .any(|h| {
                h.steps.iter().any(|s| {
                    matches!(
                        &s.resource,
                        Resource::Service {
                            manager: ServiceManager::Systemd { .. },
                            ..
                        }
                    )
                })
            });
        tasks.push(tokio::spawn(async move {
            let transport = match c.transport {
                Ok(t) => match t.facts().await {
                    Ok(f) if needs_systemd && f.init != "systemd" => Err(format!(
                        "{}: its services are planned for systemd, but the host runs without it (init {}); set `init: daemon` for it in the topology",
                        c.host, f.init
                    )),
                    Ok(_) => Ok(t),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e),
            };
            HostConn { host: c.host, transport }
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        match t.await {
            Ok(c) => out.push(c),
            Err(e) => out.push(HostConn {
                host: "?".into(),
                transport: Err(e.to_string()),
            }),
        }
    }
    out
}

/// Fill in the OS family of every host that does not declare one, from the
/// host itself (one round trip each, all at once), so that the plan compiled
/// next names the right packages and web server. Returns what was detected
/// (`host family`). A host that needs packages on an unknown family is an
/// error naming the fix; unreachable hosts are left for the caller to report.
pub async fn detect_os(topo: &mut crate::model::Topology, conns: &[HostConn]) -> Result<Vec<String>, String> {
    use crate::model::OsFamily;
    let mut tasks = Vec::new();
    for c in conns {
        let Some(h) = topo.host_by_name(&c.host) else { continue };
        if h.os.is_some() {
            continue;
        }
        let Ok(t) = c.transport.clone() else { continue };
        let (id, name, packages) = (h.id, h.name.clone(), h.packages);
        tasks.push(tokio::spawn(async move { (id, name, packages, t.facts().await) }));
    }
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for task in tasks {
        let Ok((id, name, packages, facts)) = task.await else {
            continue;
        };
        let Ok(f) = facts else { continue };
        match OsFamily::from_os_release(&f.os_family) {
            Some(family) => {
                topo.hosts[id.0].os = Some(family);
                found.push(format!("{name} {}", family.as_str()));
            }
            None if packages => problems.push(format!(
                "{name}: its OS family is `{}` (from /etc/os-release); lvslab maps packages for debian and rhel: \
                 set `os: debian` or `os: rhel` for it if one fits, or `packages: false` and install them yourself",
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
