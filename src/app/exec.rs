//! `exec`: a command (or a shell) on one lab host.

use std::path::Path;
use std::process::ExitCode;

use super::cli::{ConnArgs, Output, RunArgs, Via};
use super::lab::choose_provider;
use super::{Provider, load_reported};
use crate::exec::connect;
use crate::provider::{netns, vm};
use crate::state;

pub async fn exec(file: &Path, host: &str, command: &[String], provider: Option<Provider>) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let topo = &loaded.topology;
    if topo.host_by_name(host).is_none() {
        let names: Vec<&str> = topo.hosts.iter().map(|h| h.name.as_str()).collect();
        anyhow::bail!("no host `{host}` in {} (hosts: {})", file.display(), names.join(", "));
    }
    let run = RunArgs {
        limit: Vec::new(),
        conn: ConnArgs {
            forks: 1,
            provider,
            accept_new_host_keys: false,
            via: Via::Ns,
            vm_kernel: None,
        },
        output: Output::Text,
        verbose: false,
    };
    let lab_state = state::LabDir::new(&topo.lab).load()?.unwrap_or_default();
    let provider = choose_provider(topo, &run)?;
    match provider {
        Provider::Netns => {
            let pid = netns::holder_pid(&lab_state, host)
                .ok_or_else(|| anyhow::anyhow!("host {host} of lab {} is not up (run `lvslab up` first)", topo.lab))?;
            let mut cmd = std::process::Command::new("nsenter");
            cmd.args(["-t", &pid.to_string(), "-n", "-m", "--"]);
            if command.is_empty() {
                cmd.arg(std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into()));
            } else {
                cmd.args(command);
            }
            let status = cmd.status()?;
            Ok(ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8))
        }
        Provider::Ssh | Provider::Vm => {
            if command.is_empty() {
                anyhow::bail!("interactive shells over SSH are not supported yet: give a command after `--`");
            }
            let reach = if provider == Provider::Vm {
                let rec =
                    lab_state.vm.as_ref().filter(|r| vm::alive(r)).ok_or_else(|| {
                        anyhow::anyhow!("lab {}'s VM is not running (run `lvslab up` first)", topo.lab)
                    })?;
                vm::host_reach(&vm::with_mgmt(topo)?, rec)
            } else {
                let topo_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
                connect::reach(topo, &topo_dir)
            };
            let conns = connect::connect_all(&[host.to_string()], &reach, false, 1).await;
            let t = conns
                .into_iter()
                .next()
                .map(|c| c.transport)
                .unwrap_or_else(|| Err("no connection".into()))
                .map_err(|e| anyhow::anyhow!(e))?;
            let script: Vec<String> = command.iter().map(|a| crate::shell::quote(a)).collect();
            // Streamed as it comes: a command printing gigabytes never
            // gathers them in memory.
            use std::io::Write as _;
            let mut write_err = None;
            let status = t
                .run_streaming(&format!("{}\n", script.join(" ")), &mut |stream, data| {
                    let r = match stream {
                        crate::exec::transport::Stream::Stdout => std::io::stdout().write_all(data),
                        crate::exec::transport::Stream::Stderr => std::io::stderr().write_all(data),
                    };
                    if let Err(e) = r {
                        write_err.get_or_insert(e);
                    }
                })
                .await?;
            if let Some(e) = write_err {
                return Err(e.into());
            }
            Ok(ExitCode::from(status.clamp(0, 255) as u8))
        }
    }
}
