//! `exec`: a command (or a shell) on one lab host.

use std::path::Path;
use std::process::ExitCode;

use super::{Provider, load_reported};
use crate::provider::{self, Lab};

pub async fn exec(file: &Path, host: &str, command: &[String], provider: Option<Provider>) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let topo = &loaded.topology;
    if topo.host_by_name(host).is_none() {
        let names: Vec<&str> = topo.hosts.iter().map(|h| h.name.as_str()).collect();
        anyhow::bail!("no host `{host}` in {} (hosts: {})", file.display(), names.join(", "));
    }
    let (kind, why) = provider::choose(topo, provider);
    if let Some(why) = why {
        eprintln!("provider: {why}");
    }
    let opts = provider::Options {
        forks: 1,
        ..provider::Options::default()
    };
    let lab = Lab::new(kind, topo, file, opts)?;
    let lab_state = lab.dir.load()?.unwrap_or_default();
    match lab.enter(&lab_state, host)? {
        Some(mut cmd) => {
            if command.is_empty() {
                cmd.arg(std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into()));
            } else {
                cmd.args(command);
            }
            let status = cmd.status()?;
            Ok(ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8))
        }
        None => {
            if command.is_empty() {
                anyhow::bail!("interactive shells over SSH are not supported yet: give a command after `--`");
            }
            let (conns, _) = lab.connect(&lab_state, &[host.to_string()], false).await?;
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
