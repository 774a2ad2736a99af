//! Verify reports: a readable table with a bar chart per service (text),
//! JSON (schema `lvslab.verify/v1`) and JUnit XML for CI systems.

use std::fmt::Write as _;

use crate::verify::{Check, Report, Share, Verdict};

fn word(v: Verdict) -> &'static str {
    match v {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Skip => "SKIP",
    }
}

const BAR: usize = 30;

fn bar_line(sh: &Share, total: u32, name_w: usize) -> String {
    let frac = if total == 0 {
        0.0
    } else {
        f64::from(sh.answered) / f64::from(total)
    };
    let filled = (frac * BAR as f64).round() as usize;
    let mut s = format!(
        "{:<name_w$}  w{:<3} {}{}  {:>4}  {:>3.0}%",
        sh.host,
        sh.weight,
        "█".repeat(filled),
        "░".repeat(BAR - filled.min(BAR)),
        sh.answered,
        frac * 100.0
    );
    if let Some(e) = sh.expected {
        let _ = write!(s, "  want {:>3.0}%", e * 100.0);
    }
    if let Some(c) = sh.ipvs_conns {
        let _ = write!(s, "  ipvs conns +{c}");
    }
    s
}

fn check_text(c: &Check, s: &mut String) {
    let _ = writeln!(s, "{}  {:<22} {}", word(c.verdict), c.id, c.title);
    let _ = writeln!(s, "      {}", c.message);
    let _ = writeln!(s, "      proves: {}", c.proves);
    if !c.shares.is_empty() {
        let total: u32 = c.shares.iter().map(|x| x.answered).sum();
        let w = c.shares.iter().map(|x| x.host.len()).max().unwrap_or(4);
        for sh in &c.shares {
            let _ = writeln!(s, "        {}", bar_line(sh, total, w));
        }
    }
    for e in &c.evidence {
        let _ = writeln!(s, "      · {e}");
    }
}

pub fn verify_text(r: &Report) -> String {
    let mut s = String::new();
    // A lab of plain hosts (steps, no services) has no traffic to check:
    // said, not reported as a pass of nothing (`up` skips verify for it).
    if r.checks.is_empty() {
        let _ = writeln!(
            s,
            "VERIFY {}: nothing to verify (no services, no HA, no checks); `lvslab drift` checks a lab's steps",
            r.lab
        );
        return s;
    }
    let _ = writeln!(
        s,
        "VERIFY {}: {} request(s) per service from {}, shares within ±{:.0}%",
        r.lab,
        r.requests,
        r.client.as_deref().unwrap_or("(no client)"),
        r.tolerance * 100.0
    );
    let _ = writeln!(s);
    for c in &r.checks {
        check_text(c, &mut s);
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "{}", verify_summary(r));
    s
}

/// One line for CI logs.
pub fn verify_summary(r: &Report) -> String {
    let failed: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| c.id.as_str())
        .collect();
    let mut s = format!(
        "VERIFY {} {}: {} passed, {} failed, {} skipped in {:.1} s",
        r.lab,
        if r.passed { "PASSED" } else { "FAILED" },
        r.counts.passed,
        r.counts.failed,
        r.counts.skipped,
        r.seconds
    );
    if !failed.is_empty() {
        let _ = write!(s, " (failed: {})", failed.join(", "));
    }
    s
}

pub fn verify_json(r: &Report) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(r)? + "\n")
}

/// Text safe inside an XML attribute or element: escaped, and without the
/// control characters XML 1.0 forbids.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `testsuite` for the lab, one `testcase` per check
/// (`classname` lvslab.LAB.KIND), failures with the evidence as their text.
pub fn verify_junit(r: &Report) -> String {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total = r.checks.len();
    let time = format!("{:.3}", r.seconds);
    let _ = writeln!(
        s,
        "<testsuites name=\"lvslab verify\" tests=\"{total}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{time}\">",
        r.counts.failed, r.counts.skipped
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"lvslab.verify.{}\" tests=\"{total}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{time}\">",
        xml_escape(&r.lab),
        r.counts.failed,
        r.counts.skipped
    );
    let _ = writeln!(s, "    <properties>");
    for (k, v) in [
        ("lab", r.lab.clone()),
        ("requests", r.requests.to_string()),
        ("tolerance", r.tolerance.to_string()),
        ("client", r.client.clone().unwrap_or_default()),
    ] {
        let _ = writeln!(s, "      <property name=\"{k}\" value=\"{}\"/>", xml_escape(&v));
    }
    let _ = writeln!(s, "    </properties>");
    for c in &r.checks {
        let mut body = String::new();
        check_text(c, &mut body);
        let _ = write!(
            s,
            "    <testcase name=\"{}\" classname=\"lvslab.{}.{}\" time=\"0\">",
            xml_escape(&c.id),
            xml_escape(&r.lab),
            c.kind
        );
        match c.verdict {
            Verdict::Pass => {}
            Verdict::Fail => {
                let _ = write!(
                    s,
                    "\n      <failure message=\"{}\" type=\"verify.{}\">{}</failure>",
                    xml_escape(&c.message),
                    c.kind,
                    xml_escape(&body)
                );
            }
            Verdict::Skip => {
                let _ = write!(s, "\n      <skipped message=\"{}\"/>", xml_escape(&c.message));
            }
        }
        let _ = writeln!(
            s,
            "\n      <system-out>{}</system-out>\n    </testcase>",
            xml_escape(&body)
        );
    }
    let _ = writeln!(s, "  </testsuite>\n</testsuites>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(
            xml_escape("a<b & \"c\" 'd'>\u{1}"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;?"
        );
    }

    #[test]
    fn a_report_of_no_checks_says_there_is_nothing_to_verify() {
        let r = Report {
            schema: "t",
            lab: "plain".into(),
            requests: 60,
            tolerance: 0.1,
            client: None,
            passed: true,
            counts: crate::verify::Counts::default(),
            seconds: 0.0,
            checks: Vec::new(),
        };
        let text = verify_text(&r);
        assert!(text.starts_with("VERIFY plain: nothing to verify"), "{text}");
        assert!(!text.contains("PASSED") && !text.contains("(no client)"), "{text}");
    }

    #[test]
    fn bars_are_proportional() {
        let sh = Share {
            host: "web1".into(),
            weight: 1,
            answered: 20,
            expected: Some(1.0 / 3.0),
            ipvs_conns: Some(20),
        };
        let l = bar_line(&sh, 60, 4);
        assert_eq!(l.matches('█').count(), 10);
        assert_eq!(l.matches('░').count(), 20);
        assert!(l.contains("33%  want  33%  ipvs conns +20"), "{l}");
    }
}
