//! `list`: the labs recorded on this machine, as a table or JSON.

use std::process::ExitCode;

use super::cli::Output;
use crate::state;

/// One lab as `list` shows it.
#[derive(serde::Serialize)]
struct Row {
    lab: String,
    /// `None` when the record cannot be read (`error` says why).
    provider: Option<&'static str>,
    hosts: Option<usize>,
    /// Unix seconds, and as UTC text.
    since: Option<u64>,
    since_utc: Option<String>,
    topology: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn row(lab: &str) -> Row {
    let mut row = Row {
        lab: lab.to_string(),
        provider: None,
        hosts: None,
        since: None,
        since_utc: None,
        topology: None,
        error: None,
    };
    if !crate::model::is_simple_name(lab) {
        row.lab = lab.escape_debug().to_string();
        row.error = Some("not a lab name".into());
        return row;
    }
    match state::LabDir::new(lab).load() {
        Ok(Some(s)) => {
            row.provider = Some(s.provider.map_or("ssh", |p| p.as_str()));
            row.hosts = Some(s.known_hosts().len());
            row.since = Some(s.since);
            row.since_utc = Some(utc(s.since));
            row.topology = s.topology.map(|t| t.escape_debug().to_string());
        }
        Ok(None) => row.error = Some("no record".into()),
        Err(e) => row.error = Some(crate::diag::chain(&e)),
    }
    row
}

pub fn list(format: Output) -> anyhow::Result<ExitCode> {
    let labs = state::list_labs()?;
    let rows: Vec<Row> = labs.iter().map(|l| row(l)).collect();
    let unreadable = rows
        .iter()
        .filter(|r| r.error.as_deref().is_some_and(|e| e != "no record"))
        .count();
    match format {
        Output::Json => println!("{}", serde_json::json!({ "schema": "lvslab.list/v1", "labs": rows })),
        Output::Text if rows.is_empty() => eprintln!("no labs recorded in {}", state::state_root().display()),
        Output::Text => {
            let now = super::unix_now();
            println!(
                "{:<16} {:<8} {:<5} {:<28} topology",
                "lab", "provider", "hosts", "since"
            );
            for r in &rows {
                match (&r.error, r.since) {
                    (None, Some(since)) => println!(
                        "{:<16} {:<8} {:<5} {:<28} {}",
                        r.lab,
                        r.provider.unwrap_or("-"),
                        r.hosts.unwrap_or(0),
                        format!("{} ({})", utc(since), ago(now.saturating_sub(since))),
                        r.topology.as_deref().unwrap_or("-")
                    ),
                    (Some(e), _) if e == "no record" => {
                        println!("{:<16} -        -     -                            (no record)", r.lab)
                    }
                    (e, _) => {
                        println!("{:<16} UNREADABLE", r.lab);
                        eprintln!("{}: {}", r.lab, e.as_deref().unwrap_or("unreadable"));
                    }
                }
            }
        }
    }
    Ok(if unreadable == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC` (the civil calendar from days, as
/// in Howard Hinnant's `civil_from_days`).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02} UTC")
}

/// A duration the way people say it: `12 s ago`, `5 min ago`, `3 h ago`, `2 days ago`.
pub fn ago(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_times_read_as_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_796_126_580), "2026-12-01 12:03 UTC");
        assert_eq!(ago(5), "5 s ago");
        assert_eq!(ago(3 * 3600 + 5), "3 h ago");
        assert_eq!(ago(2 * 86_400), "2 days ago");
    }
}
