//! The plan as text (for reading and learning), JSON (for tools) and shell
//! scripts (the commands a student would otherwise type from the handout).

use std::fmt::Write as _;

use crate::plan::{Plan, Resource};

/// `1 host`, `2 hosts`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Greedy word wrap at `width` columns.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.lines() {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

fn comment(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{indent}# {line}");
    }
}

/// The plan, phase by phase and host by host, each step with its why and commands.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan for lab {} ({}): {}, {}, {}",
        plan.lab,
        plan.mode.map_or("no LVS services".into(), |m| format!(
            "mode {}",
            m.as_str().to_uppercase()
        )),
        count(plan.host_names().len(), "host"),
        count(plan.phases.len(), "phase"),
        count(plan.step_count(), "step")
    );
    for note in &plan.notes {
        let _ = writeln!(out, "note: {note}");
    }
    for phase in &plan.phases {
        let _ = writeln!(out, "\n== phase {} ==", phase.name);
        for hp in &phase.hosts {
            let _ = writeln!(out, "\n{}", hp.host);
            for (i, step) in hp.steps.iter().enumerate() {
                let _ = writeln!(out, "  {:>2}. {}", i + 1, step.summary);
                for (j, line) in wrap(&step.why, 90).iter().enumerate() {
                    let label = if j == 0 { "why: " } else { "     " };
                    let _ = writeln!(out, "      {label}{line}");
                }
                match &step.resource {
                    Resource::File { content, validate, .. } => {
                        let _ = writeln!(
                            out,
                            "      writes {} (see --format sh)",
                            count(content.lines().count(), "line")
                        );
                        if let Some(v) = validate {
                            let _ = writeln!(out, "      checked first with: {v}");
                        }
                    }
                    _ => {
                        for c in &step.apply {
                            let _ = writeln!(out, "      $ {c}");
                        }
                    }
                }
            }
        }
    }
    if !plan.removals.is_empty() {
        let _ = writeln!(
            out,
            "\n== removals: the running lab has these, the topology no longer declares them (`up` removes them) =="
        );
        for r in &plan.removals {
            let _ = writeln!(out, "  - {r}");
        }
    }
    out
}

/// The plan as JSON (schema `lvslab.plan/v1`, documented in docs/plan-schema.md).
pub fn plan_json(plan: &Plan) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(plan).map(|mut s| {
        s.push('\n');
        s
    })
}

/// One POSIX shell script per host: the apply commands of its steps, in order.
pub fn plan_sh(plan: &Plan) -> Vec<(String, String)> {
    plan.host_names()
        .into_iter()
        .map(|host| (host.to_string(), host_script(plan, host)))
        .collect()
}

fn host_script(plan: &Plan, host: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "#!/bin/sh");
    let _ = writeln!(
        out,
        "# lvslab plan: lab {}, host {}, {}",
        plan.lab,
        host,
        plan.mode
            .map_or("no LVS services".into(), |m| format!("mode {}", m.as_str()))
    );
    let _ = writeln!(
        out,
        "# The commands that bring a fresh host to the planned state, in order. Run as root."
    );
    let _ = writeln!(out, "set -eu");
    for phase in &plan.phases {
        let Some(hp) = phase.hosts.iter().find(|h| h.host == host) else {
            continue;
        };
        let _ = writeln!(out, "\n# ===== phase {} =====", phase.name);
        for step in &hp.steps {
            let _ = writeln!(out);
            comment(&mut out, "", &step.summary);
            comment(&mut out, "", &wrap(&format!("why: {}", step.why), 90).join("\n"));
            for c in step.resource.apply_for_script(&plan.secrets) {
                let _ = writeln!(out, "{c}");
            }
        }
    }
    out
}
