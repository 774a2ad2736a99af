//! Reporting a run: one line per step that is not `ok`, live progress on a
//! terminal (indicatif, one line per host with what it is doing), JSON events
//! for tools, and a recap table at the end. Secrets are masked before results
//! reach this module.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::exec::runner::{Reporter, RunOutcome, Status, StepResult};

pub fn status_word(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Changed => "changed",
        Status::Failed => "FAILED",
        Status::Skipped => "skipped",
        Status::WouldChange => "would change",
        Status::Conditional => "conditional",
        Status::Reverted => "reverted",
        Status::Removed => "removed",
        Status::WouldRemove => "would remove",
        Status::Kept => "kept",
    }
}

fn step_line(r: &StepResult) -> String {
    let mut s = format!("{:<12} [{}] {}: {}", status_word(r.status), r.phase, r.host, r.summary);
    for d in &r.details {
        let _ = write!(s, "\n             {d}");
    }
    if let Some(diff) = &r.diff {
        for l in diff.lines() {
            let _ = write!(s, "\n             {l}");
        }
    }
    s
}

/// Plain lines on stderr (not a terminal, or `NO_COLOR`-style plain output).
pub struct PlainReporter {
    pub verbose: bool,
}

impl Reporter for PlainReporter {
    fn step(&self, r: &StepResult) {
        if self.verbose || r.status != Status::Ok {
            eprintln!("{}", step_line(r));
        }
    }
}

/// indicatif on a terminal: a line per host showing what it is doing now.
pub struct TtyReporter {
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
}

impl TtyReporter {
    pub fn new(hosts: &[String]) -> Self {
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{spinner} {prefix:>12} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let mut bars = BTreeMap::new();
        for h in hosts {
            let b = multi.add(
                ProgressBar::new_spinner()
                    .with_style(style.clone())
                    .with_prefix(h.clone()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b.set_message("waiting");
            bars.insert(h.clone(), b);
        }
        TtyReporter {
            multi,
            bars: Mutex::new(bars),
        }
    }
}

impl Reporter for TtyReporter {
    fn activity(&self, host: &str, what: &str) {
        if let Some(b) = self.bars.lock().ok().and_then(|b| b.get(host).cloned()) {
            b.set_message(what.to_string());
        }
    }

    fn step(&self, r: &StepResult) {
        if r.status != Status::Ok {
            let _ = self.multi.println(step_line(r));
        }
    }

    fn host_done(&self, host: &str, failed: bool) {
        if let Some(b) = self.bars.lock().ok().and_then(|b| b.get(host).cloned()) {
            b.finish_with_message(if failed { "failed" } else { "done" });
        }
    }
}

impl Drop for TtyReporter {
    fn drop(&mut self) {
        let _ = self.multi.clear();
    }
}

/// One JSON object per line on stdout: `{"event":"step",...}`; the summary
/// comes from the CLI at the end.
pub struct JsonReporter;

impl Reporter for JsonReporter {
    fn step(&self, r: &StepResult) {
        if let Ok(line) = serde_json::to_string(&serde_json::json!({ "event": "step", "step": r })) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
        }
    }
}

/// The recap table, like Ansible's PLAY RECAP.
pub fn recap_text(outcome: &RunOutcome, title: &str, changed_label: &str) -> String {
    let mut s = String::new();
    let width = outcome.recap.iter().map(|r| r.host.len()).max().unwrap_or(4).max(4);
    let _ = writeln!(s, "{title}");
    let _ = writeln!(
        s,
        "{:<width$}  {:>4}  {:>8}  {:>6}  {:>7}  {:>6}",
        "host", "ok", changed_label, "failed", "skipped", "time"
    );
    for r in &outcome.recap {
        let _ = writeln!(
            s,
            "{:<width$}  {:>4}  {:>8}  {:>6}  {:>7}  {:>5.1}s",
            r.host, r.ok, r.changed, r.failed, r.skipped, r.seconds
        );
        if let Some(e) = &r.error {
            let _ = writeln!(s, "{:<width$}  error: {e}", "");
        }
    }
    // Whatever failed says why at the end, however quiet the run was.
    for r in outcome.results.iter().filter(|r| r.status == Status::Failed) {
        let why = if r.details.is_empty() {
            String::new()
        } else {
            format!(": {}", r.details.join("; "))
        };
        let _ = writeln!(s, "FAILED {}: {}{why}", r.host, r.summary);
    }
    s
}

/// Why each failed step failed (for the JSON summary).
pub fn failures_json(outcome: &RunOutcome) -> Vec<serde_json::Value> {
    outcome
        .results
        .iter()
        .filter(|r| r.status == Status::Failed)
        .map(|r| serde_json::json!({ "host": r.host, "phase": r.phase, "step": r.summary, "why": r.details }))
        .collect()
}
