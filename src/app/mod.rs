//! The application layer: one module per verb, each the orchestration of
//! the pipeline's stages for that verb (load → compile → provider → exec →
//! report). `main.rs` parses the command line and calls these; nothing here
//! parses arguments, and nothing below this layer prints.

pub mod cli;
pub mod down;
pub mod drift;
pub mod exec;
pub mod graph;
pub mod lab;
pub mod list;
pub mod plan;
pub mod up;
pub mod validate;
pub mod verify;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::exec::{connect, runner};
pub use crate::spec::Provider;
use crate::{plan as plan_, report};
use cli::Output;

/// Load a topology, printing its problems (and warnings) on stderr; `None` if invalid.
pub(crate) fn load_reported(file: &Path) -> Option<crate::Loaded> {
    match crate::load(file) {
        Ok(l) => {
            if !l.warnings.0.is_empty() {
                eprintln!("{}", l.warnings);
            }
            Some(l)
        }
        Err(diags) => {
            eprintln!("{diags}");
            None
        }
    }
}

pub(crate) fn reporter(output: Output, verbose: bool, hosts: &[String]) -> Arc<dyn runner::Reporter> {
    use std::io::IsTerminal;
    if output == Output::Json {
        Arc::new(report::JsonReporter)
    } else if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
        Arc::new(report::TtyReporter::new(hosts))
    } else {
        Arc::new(report::PlainReporter { verbose })
    }
}

pub(crate) fn finish(outcome: &runner::RunOutcome, output: Output, title: &str, changed: &str) -> ExitCode {
    if output == Output::Json {
        let summary = serde_json::json!({
            "event": "summary",
            "recap": outcome.recap,
            "failed": outcome.failed,
            "failures": report::failures_json(outcome),
        });
        println!("{summary}");
    } else {
        print!("{}", report::recap_text(outcome, title, changed));
    }
    if outcome.failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Keep only the `--limit` hosts' steps (all hosts when empty).
pub(crate) fn limit_plan(plan: &mut plan_::Plan, limit: &[String]) {
    if !limit.is_empty() {
        for p in &mut plan.phases {
            p.hosts.retain(|h| limit.contains(&h.host));
        }
    }
}

/// Each host's facts, as read by `connections`.
pub(crate) use crate::provider::Facts;

/// Over SSH, hosts that declare no `os:` get the family their facts name;
/// when any did, the topology with their families (to compile again), else `None`.
pub(crate) fn with_detected_os(
    lab: &crate::provider::Lab<'_>,
    facts: &Facts,
) -> anyhow::Result<Option<crate::model::Topology>> {
    let topo = lab.topo.as_ref();
    if !lab.real_machines() || topo.hosts.iter().all(|h| h.os.is_some()) {
        return Ok(None);
    }
    let mut t = topo.clone();
    let found = connect::apply_detected_os(&mut t, facts).map_err(|e| anyhow::anyhow!(e))?;
    if found.is_empty() {
        return Ok(None);
    }
    eprintln!("os detected: {}", found.join(", "));
    Ok(Some(t))
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
