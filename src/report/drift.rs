//! Drift reports: text grouped by host (one self-contained line per finding,
//! diffs indented under theirs) and JSON (schema lvslab.drift/v1).

use crate::drift::{Fix, Report};

pub fn drift_text(r: &Report) -> String {
    let steps: usize = r.hosts.iter().map(|h| h.steps).sum();
    let mut s = format!("DRIFT {}: {} host(s), {steps} step(s) observed\n", r.lab, r.hosts.len());
    let mut clean = Vec::new();
    for h in &r.hosts {
        if let Some(e) = &h.error {
            s.push_str(&format!("\n{}: NOT CHECKED: {e}\n", h.host));
            continue;
        }
        if h.findings.is_empty() {
            clean.push(format!("{} ({} steps)", h.host, h.steps));
        } else {
            s.push('\n');
            for f in &h.findings {
                s.push_str(&format!("{}: {}\n", h.host, f.message));
                if let Some(d) = &f.diff {
                    for l in d.lines() {
                        s.push_str(&format!("    {l}\n"));
                    }
                }
                if let Fix::Never { why } = &f.fix {
                    s.push_str(&format!("    (--fix leaves it: {why})\n"));
                }
            }
        }
        for n in &h.notes {
            s.push_str(&format!("{}: note: {n}\n", h.host));
        }
    }
    if !clean.is_empty() {
        s.push_str(&format!("\nno drift: {}\n", clean.join(", ")));
    }
    if !r.fixed.is_empty() {
        s.push('\n');
        for f in &r.fixed {
            s.push_str(&format!("fixed: {}: {}\n", f.host, f.message));
        }
    }
    s.push('\n');
    s.push_str(&r.summary());
    s.push('\n');
    s
}

pub fn drift_json(r: &Report) -> serde_json::Result<String> {
    let mut v = serde_json::to_value(r)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("findings".into(), r.findings().into());
        o.insert("exit_code".into(), r.exit_code().into());
        o.insert("summary".into(), r.summary().into());
    }
    Ok(serde_json::to_string_pretty(&v)? + "\n")
}
