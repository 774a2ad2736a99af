//! The topology's own checks (`checks:`): named once, on a known host, with
//! a command, an exit status, an output pattern and retry timing.

use std::collections::BTreeMap;

use super::{Cx, lookup};
use crate::model::{HostId, UserCheck};
use crate::spec::{self, Spanned};

pub(super) fn build_checks(
    cx: &mut Cx,
    specs: &[Spanned<spec::CheckSpec>],
    host_ids: &BTreeMap<String, HostId>,
) -> Vec<UserCheck> {
    let mut out = Vec::new();
    let mut names: BTreeMap<&str, ()> = BTreeMap::new();
    for c in specs {
        let c = &c.value;
        if names.insert(c.name.value.as_str(), ()).is_some() {
            cx.error(
                c.name.span,
                format!("two checks are named `{}`", c.name.value),
                "give each check its own name: reports and JUnit files use it",
            );
        }
        if c.name.value.trim().is_empty() {
            cx.error(
                c.name.span,
                "a check needs a name",
                "say what it proves, e.g. `web1 serves /upload.txt`",
            );
        }
        let host = lookup(cx, host_ids, &c.host, "host").copied();
        if c.run.value.trim().is_empty() {
            cx.error(
                c.run.span,
                "the check runs an empty command",
                "give a shell command, e.g. `test -f /srv/www/upload.txt`",
            );
        }
        let status = cx.range_or(
            c.status.as_ref(),
            (0, 255),
            "exit status",
            "an exit status is 0..=255",
            0,
        ) as i32;
        let output = c.output.as_ref().and_then(|o| output_pattern(cx, o));
        let timeout_secs = cx.range_or(
            c.timeout.as_ref(),
            (0, 3600),
            "timeout",
            "seconds to keep retrying the check",
            0,
        ) as u32;
        let interval_secs = cx.range_or(c.interval.as_ref(), (1, 600), "interval", "seconds between tries", 1) as u32;
        if let Some(host) = host {
            out.push(UserCheck {
                name: c.name.value.clone(),
                description: c.description.clone(),
                host,
                run: c.run.value.clone(),
                status,
                output,
                timeout_secs,
                interval_secs,
            });
        }
    }
    out
}

/// The check's `output` as a regular expression; None after an error.
fn output_pattern(cx: &mut Cx, o: &Spanned<String>) -> Option<regex::Regex> {
    match regex::Regex::new(&o.value) {
        Ok(r) => Some(r),
        Err(e) => {
            let msg = e.to_string();
            let last = msg
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .trim_start_matches("error: ")
                .to_string();
            cx.error(
                o.span,
                format!("`output` is not a valid regular expression: {last}"),
                "a regular expression (Rust regex syntax); escape special characters like `.` and `(` with `\\`",
            );
            None
        }
    }
}
