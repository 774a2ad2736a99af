//! `verify`: gather evidence from the running lab, then judge it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::cli::{ConnArgs, VerifyFormat};
use super::lab::open;
use super::load_reported;
use crate::exec::runner;
use crate::{compile, plan, report};

pub struct VerifyArgs {
    pub requests: Option<u32>,
    pub format: VerifyFormat,
    pub junit: Option<PathBuf>,
    pub save_evidence: Option<PathBuf>,
    pub failover: bool,
}

/// Gather evidence over `conns` and decide.
pub async fn verify_with(
    topo: &crate::model::Topology,
    plan: &plan::Plan,
    conns: Vec<runner::HostConn>,
    requests: Option<u32>,
    save_evidence: Option<&Path>,
    failover: bool,
) -> crate::verify::Report {
    let mut ok = std::collections::BTreeMap::new();
    let mut failed = std::collections::BTreeMap::new();
    for c in conns {
        match c.transport {
            Ok(t) => {
                ok.insert(c.host, t);
            }
            Err(e) => {
                failed.insert(c.host, e);
            }
        }
    }
    let mut ev = crate::verify::gather(topo, &ok, failed, requests.unwrap_or(topo.verify.requests)).await;
    let secrets: Vec<&str> = plan.secrets.values().map(|s| s.expose()).collect();
    ev.mask(&secrets);
    if let Some(path) = save_evidence {
        match serde_json::to_string_pretty(&ev) {
            Ok(j) => {
                if let Err(e) = std::fs::write(path, j + "\n") {
                    eprintln!("warning: cannot write evidence to {}: {e}", path.display());
                }
            }
            Err(e) => eprintln!("warning: cannot serialize evidence: {e}"),
        }
    }
    let mut checks = crate::verify::decide(topo, plan, &ev);
    let mut seconds = ev.seconds;
    if failover {
        let start = std::time::Instant::now();
        checks.extend(crate::verify::failover::run(topo, plan, &ok).await);
        seconds += start.elapsed().as_secs_f64();
    }
    let mut report = crate::verify::Report::new(topo, &ev, checks);
    report.seconds = seconds;
    report
}

pub async fn verify_cmd(file: &Path, args: &VerifyArgs, conn: &ConnArgs) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let lab = open(&loaded.topology, file, conn, None)?;
    let topo = lab.topo.as_ref();
    let plan = compile::compile(topo)?;
    let lab_state = lab.dir.load()?.unwrap_or_default();
    lab.require_up(&lab_state, "verify needs its hosts")?;
    let hosts: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
    let (conns, _) = lab.connect(&lab_state, &hosts, false).await?;
    let report = verify_with(
        topo,
        &plan,
        conns,
        args.requests,
        args.save_evidence.as_deref(),
        args.failover,
    )
    .await;
    if let Some(path) = &args.junit {
        std::fs::write(path, report::verify_junit(&report)).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    match args.format {
        VerifyFormat::Text => stdout.write_all(report::verify_text(&report).as_bytes())?,
        VerifyFormat::Json => stdout.write_all(report::verify_json(&report)?.as_bytes())?,
        VerifyFormat::Junit => {
            stdout.write_all(report::verify_junit(&report).as_bytes())?;
            eprintln!("{}", report::verify_summary(&report));
        }
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
