//! Providers create and destroy the hosts a lab runs on. `ssh` hosts exist
//! already (nothing to create); `netns` makes them on this machine; `vm` boots
//! a disposable VM with a distribution kernel and makes them inside it.
//!
//! [`Lab`] is the one interface the verbs use: choose, check, make the hosts,
//! reach them, tear them down. Every difference between providers is a
//! `match` on [`Provider`] in this file; a new provider is a new variant
//! here (and its module), never a branch in a verb.

pub mod netns;
pub mod vm;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::exec::Progress;
use crate::exec::connect;
use crate::exec::transport::HostConn;
use crate::model::Topology;
pub use crate::spec::Provider;
use crate::state::{LabDir, LabState, Reach, StateError};

/// Each host's facts, as read when connecting with a plan.
pub type Facts = BTreeMap<String, crate::exec::transport::Facts>;

/// Saves the lab's record (called before each object is created).
pub type Save<'a> = &'a (dyn Fn(&LabState) -> Result<(), StateError> + Sync);

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error(transparent)]
    Vm(#[from] vm::VmError),
    #[error(transparent)]
    State(#[from] StateError),
    /// The lab is not up, or a setting this provider needs is missing.
    #[error("{0}")]
    Refused(String),
}

/// How the verbs reach hosts, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Hosts worked on at once.
    pub forks: usize,
    /// Record unknown SSH host keys (a changed key is still refused).
    pub accept_new_host_keys: bool,
    /// netns labs: over SSH on the management network instead of `nsenter`.
    pub via_ssh: bool,
    /// vm: the kernel to boot instead of the distribution's.
    pub vm_kernel: Option<PathBuf>,
}

/// Which provider runs a lab: the flag, else the topology's `provider:`,
/// else the one its record names, else netns when this machine can run the
/// lab (root, a kernel with IPVS) and vm when not. With the reason when it
/// was chosen here (the caller says it).
pub fn choose(topo: &Topology, flag: Option<Provider>) -> (Provider, Option<String>) {
    let recorded = || LabDir::new(&topo.lab).load().ok().flatten().and_then(|s| s.provider);
    if let Some(p) = flag.or(topo.provider).or_else(recorded) {
        return (p, None);
    }
    match netns::can_run_here(topo) {
        Ok(()) => (
            Provider::Netns,
            Some("netns (root, and this kernel has what the lab needs; --provider to choose)".into()),
        ),
        Err(e) => {
            let why = match e {
                netns::NetnsError::NotRoot => "network namespaces need root".to_string(),
                netns::NetnsError::Kernel { module, .. } => format!("this kernel cannot load {module}"),
                other => crate::diag::chain(&other),
            };
            (Provider::Vm, Some(format!("vm, because {why} (--provider to choose)")))
        }
    }
}

/// One lab on one provider, as the verbs use it.
pub struct Lab<'a> {
    pub kind: Provider,
    /// The topology as this provider runs it ([`Lab::new`]).
    pub topo: Cow<'a, Topology>,
    /// The topology file (relative paths in `ssh:` are resolved against its directory).
    pub file: &'a Path,
    pub dir: LabDir,
    pub opts: Options,
}

impl<'a> Lab<'a> {
    /// The topology as the provider runs it: the vm provider adds a
    /// management network (for its hosts' sshds) when the topology has none;
    /// over SSH the plan owns the hosts' addresses (`--provider ssh` on a
    /// topology that names another provider, or none).
    pub fn new(kind: Provider, topo: &'a Topology, file: &'a Path, opts: Options) -> Result<Self, ProviderError> {
        let topo = match kind {
            Provider::Vm => Cow::Owned(vm::with_mgmt(topo)?),
            Provider::Ssh if topo.provider != Some(Provider::Ssh) => {
                let mut t = topo.clone();
                t.provider = Some(Provider::Ssh);
                Cow::Owned(t)
            }
            _ => Cow::Borrowed(topo),
        };
        let dir = LabDir::new(&topo.lab);
        Ok(Lab {
            kind,
            topo,
            file,
            dir,
            opts,
        })
    }

    /// What this machine needs before `up` makes anything (`check`: `up --check`).
    pub fn preflight(&self, check: bool) -> Result<(), ProviderError> {
        match self.kind {
            Provider::Netns => netns::preflight(&self.topo)?,
            Provider::Vm if !check => vm::preflight(&self.topo, self.opts.vm_kernel.as_deref())?,
            _ => {}
        }
        Ok(())
    }

    /// Refused (naming `first`, what to run) when the provider's hosts do not exist.
    pub fn require_up(&self, state: &LabState, what: &str) -> Result<(), ProviderError> {
        let up = match self.kind {
            Provider::Netns => !state.infra.is_empty(),
            Provider::Vm => state.vm.as_ref().is_some_and(vm::alive),
            Provider::Ssh => true,
        };
        if up {
            Ok(())
        } else {
            Err(ProviderError::Refused(format!(
                "lab {} is not up: {what} (run `lvslab up {}` first)",
                self.topo.lab,
                self.file.display()
            )))
        }
    }

    /// Make the lab's hosts (converging what an earlier or interrupted run
    /// left, removing those the topology no longer has: `gone`, from the
    /// record). Returns the hosts removed with their namespace (whose record
    /// goes with them). SSH hosts exist already: nothing to make.
    pub async fn ensure(
        &self,
        state: &mut LabState,
        gone: &[String],
        progress: &dyn Progress,
    ) -> Result<Vec<String>, ProviderError> {
        let dir = &self.dir;
        let save = |s: &LabState| dir.save(s);
        match self.kind {
            Provider::Ssh => Ok(Vec::new()),
            Provider::Netns => {
                let nsp = netns::Netns {
                    topo: &self.topo,
                    ssh_dir: dir.path.join("ssh"),
                };
                Ok(crate::exec::blocking(|| nsp.ensure(state, &save))?)
            }
            Provider::Vm => {
                let text = crate::read_topology(self.file).map_err(|d| ProviderError::Refused(d.to_string()))?;
                let vm_dir = dir.path.join("vm");
                let kernel = self.opts.vm_kernel.as_deref();
                let rec = vm::ensure(&self.topo, &text, &vm_dir, state, &save, kernel, progress).await?;
                // `down --limit` reaches the hosts without the topology.
                state.reach = vm::host_reach(&self.topo, &rec);
                // The lvslab inside the VM removed the hosts the file no longer has.
                Ok(gone.to_vec())
            }
        }
    }

    /// Transports to `hosts`. With `detect_os`, the facts of each host that
    /// declares no `os:` are read (one round trip each, over SSH; a host that
    /// declares it costs nothing here).
    pub async fn connect(
        &self,
        state: &LabState,
        hosts: &[String],
        detect_os: bool,
    ) -> Result<(Vec<HostConn>, Facts), ProviderError> {
        let reach = match self.kind {
            Provider::Ssh => self.reach(),
            Provider::Netns if !self.opts.via_ssh => {
                let nsp = netns::Netns {
                    topo: &self.topo,
                    ssh_dir: self.dir.path.join("ssh"),
                };
                return Ok((nsp.connections(state, hosts), Facts::new()));
            }
            Provider::Netns => {
                let nsp = netns::Netns {
                    topo: &self.topo,
                    ssh_dir: self.dir.path.join("ssh"),
                };
                nsp.mgmt_reach().ok_or_else(|| {
                    ProviderError::Refused(
                        "--via ssh needs a management network: add `mgmt: { cidr: 10.250.0.0/24 }` to the topology"
                            .into(),
                    )
                })?
            }
            Provider::Vm => {
                let rec = state.vm.as_ref().filter(|r| vm::alive(r)).ok_or_else(|| {
                    ProviderError::Refused(format!(
                        "lab {}'s VM is not running (run `lvslab up {}`)",
                        self.topo.lab,
                        self.file.display()
                    ))
                })?;
                vm::host_reach(&self.topo, rec)
            }
        };
        // Keys are learned only for hosts the user names (SSH); the netns
        // and vm providers pin their own.
        let accept = self.kind == Provider::Ssh && self.opts.accept_new_host_keys;
        let conns = connect::connect_all(hosts, &reach, accept, self.opts.forks).await;
        let detect =
            |h: &str| detect_os && self.real_machines() && self.topo.host_by_name(h).is_some_and(|x| x.os.is_none());
        Ok(connect::read_facts(conns, detect).await)
    }

    /// How each host is reached over SSH as the topology says (relative
    /// paths against the topology file's directory).
    pub fn reach(&self) -> BTreeMap<String, Reach> {
        let topo_dir = self.file.parent().map(Path::to_path_buf).unwrap_or_default();
        connect::reach(&self.topo, &topo_dir)
    }

    /// Whether hosts go with what the provider made (a namespace), rather
    /// than by reverting every step lvslab took on them (real machines).
    pub fn removes_hosts(&self) -> bool {
        self.kind != Provider::Ssh
    }

    /// Whether hosts are machines of their own, each with its OS to detect.
    pub fn real_machines(&self) -> bool {
        self.kind == Provider::Ssh
    }

    /// A command prefix that enters `host` from this machine (the netns
    /// provider: `nsenter` into its namespaces); `None` when it is reached
    /// over SSH.
    pub fn enter(&self, state: &LabState, host: &str) -> Result<Option<std::process::Command>, ProviderError> {
        if self.kind != Provider::Netns || self.opts.via_ssh {
            return Ok(None);
        }
        let pid = netns::holder_pid(state, host).ok_or_else(|| {
            ProviderError::Refused(format!(
                "host {host} of lab {} is not up (run `lvslab up` first)",
                self.topo.lab
            ))
        })?;
        let mut cmd = std::process::Command::new("nsenter");
        cmd.args(["-t", &pid.to_string(), "-n", "-m", "--"]);
        Ok(Some(cmd))
    }

    /// What removing a host means on this provider (for `up --check`).
    pub fn removal(&self) -> &'static str {
        match self.kind {
            Provider::Ssh => "everything lvslab changed on it, put back",
            Provider::Netns | Provider::Vm => "its namespace and everything in it",
        }
    }
}

/// Tearing a lab down from its record alone (`down LAB` works without the
/// topology file).
pub mod teardown {
    use super::*;

    /// When the provider's own teardown reverts everything at once (the vm
    /// provider: everything the lab changed lives in its VM), do it and say
    /// what was done; `None` when the steps must be reverted host by host.
    pub fn all_at_once(state: &LabState) -> Result<Option<Vec<String>>, ProviderError> {
        match state.provider {
            Some(Provider::Vm) => Ok(Some(match &state.vm {
                Some(rec) => vm::stop(rec)?,
                None => Vec::new(),
            })),
            _ => Ok(None),
        }
    }

    /// Transports to the recorded hosts: the netns provider's namespaces, or
    /// SSH with the recorded reach (and the topology's, when given: not for
    /// the vm provider, whose hosts are reached through its VM as recorded).
    pub async fn connections(
        state: &LabState,
        hosts: &[String],
        topology_reach: Option<BTreeMap<String, Reach>>,
        opts: &Options,
    ) -> Vec<HostConn> {
        match state.provider {
            Some(Provider::Netns) => netns::connections_from_state(state),
            other => {
                let mut reach = state.reach.clone();
                if other != Some(Provider::Vm) {
                    reach.extend(topology_reach.unwrap_or_default());
                }
                connect::connect_all(hosts, &reach, opts.accept_new_host_keys, opts.forks).await
            }
        }
    }

    /// After every step is reverted (a whole lab, not `--limit`): remove
    /// what the provider made on this machine (netns: everything inside the
    /// namespaces goes with them, then the namespaces, links and directories
    /// recorded in `infra`); the problems left.
    pub fn destroy(state: &mut LabState, infra: Vec<crate::state::Infra>) -> Vec<String> {
        match state.provider {
            Some(Provider::Netns) => {
                state.hosts.clear();
                state.infra = infra;
                let mut problems = netns::destroy(state);
                problems.extend(netns::leftovers(state));
                if problems.is_empty() {
                    state.infra.clear();
                }
                problems
            }
            _ => Vec::new(),
        }
    }
}
