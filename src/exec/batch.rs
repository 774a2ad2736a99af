//! The batch wire protocol: many command lists in one script (one round
//! trip), each framed by a marker line carrying its index and exit status,
//! and the parser that splits the output back per item. Used by the runner,
//! drift's observation and verify's gathering alike.

use crate::plan::assess::Observed;

/// A marker no output is expected to contain (time and pid in it).
pub fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("@@lvslab-{:x}-{:x}", t, std::process::id())
}

/// A script that runs each command list in a subshell, framed by markers.
/// With `stop_on_failure`, the script ends after the first failing item.
pub fn batch(items: &[Vec<String>], marker: &str, stop_on_failure: bool) -> String {
    let mut s = String::from("exec 2>&1\n");
    for (i, cmds) in items.iter().enumerate() {
        s.push_str(&format!("printf '%s\\n' '{marker} {i}'\n( set -e\n"));
        for c in cmds {
            s.push_str(c);
            s.push('\n');
        }
        s.push_str(&format!(
            ") </dev/null; r=$?; printf '\\n%s %s\\n' '{marker} rc' \"$r\"\n"
        ));
        if stop_on_failure {
            s.push_str("[ \"$r\" -eq 0 ] || exit 0\n");
        }
    }
    s
}

/// Split a batch's output into one observation per item that ran.
pub fn parse_batch(out: &str, marker: &str, n: usize) -> Vec<Option<Observed>> {
    let mut res: Vec<Option<Observed>> = vec![None; n];
    let mut current: Option<(usize, String)> = None;
    let rc_prefix = format!("{marker} rc ");
    let start_prefix = format!("{marker} ");
    for line in out.split_inclusive('\n') {
        let bare = line.trim_end_matches('\n');
        if let Some(rc) = bare.strip_prefix(&rc_prefix) {
            if let Some((i, mut text)) = current.take()
                && i < n
            {
                // The rc marker is preceded by one newline we added.
                if text.ends_with('\n') {
                    text.pop();
                }
                res[i] = Some(Observed {
                    output: text,
                    rc: rc.trim().parse().unwrap_or(-1),
                });
            }
        } else if let Some(i) = bare.strip_prefix(&start_prefix).and_then(|i| i.parse::<usize>().ok()) {
            current = Some((i, String::new()));
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
        }
    }
    res
}
