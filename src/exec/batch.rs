//! The batch wire protocol: many command lists in one script (one round
//! trip), each framed by a marker line carrying its index and exit status,
//! and the parser that splits the output back per item. Used by the runner,
//! drift's observation and verify's gathering alike.

use crate::plan::Resource;
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

/// One observation in a batch: a read-only command, and whether it must run
/// in a subshell of its own (user code, which may `exit`) or may run in a
/// brace group of the batch's shell (lvslab's own observations: no fork).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    pub cmd: String,
    pub own_shell: bool,
}

impl Look {
    /// The observation of a step (its secrets resolved).
    pub fn of(r: &Resource) -> Look {
        match r {
            // A user's check: in its own shell, stopping at its first
            // failing command (`:` keeps a check of comments valid).
            Resource::Command { .. } => Look {
                cmd: format!("set -e\n:\n{}", r.observe_command()),
                own_shell: true,
            },
            _ => Look {
                cmd: r.observe_command(),
                own_shell: false,
            },
        }
    }
}

/// The script lines of one observation, framed by `marker` and item `i`.
fn push_look(s: &mut String, marker: &str, i: usize, look: &Look) {
    let (open, close) = if look.own_shell { ("(", ")") } else { ("{", "}") };
    // An empty group is a syntax error.
    let cmd = if look.cmd.trim().is_empty() { ":" } else { &look.cmd };
    s.push_str(&format!(
        "printf '%s\\n' '{marker} {i}'\n{open}\n{cmd}\n{close} </dev/null; "
    ));
    s.push_str(&format!("printf '\\n%s %s\\n' '{marker} rc' \"$?\"\n"));
}

/// The observations of a batch that run: the first of each kind (several
/// line steps on one file read it once), by index.
fn firsts(looks: &[Look]) -> impl Iterator<Item = (usize, &Look)> {
    looks.iter().enumerate().filter(|(i, l)| !looks[..*i].contains(l))
}

/// A read-only script: each observation framed by markers (parse with
/// [`parse_looks`]); one that repeats an earlier one does not run again.
/// Only user code gets a subshell.
pub fn observe_batch(looks: &[Look], marker: &str) -> String {
    let mut s = String::from("exec 2>&1\n");
    for (i, l) in firsts(looks) {
        push_look(&mut s, marker, i, l);
    }
    s
}

/// Each observation's output from a script of [`observe_batch`] or
/// [`apply_batch`] (a repeated one shares the first one's).
pub fn parse_looks(out: &str, marker: &str, looks: &[Look]) -> Vec<Option<Observed>> {
    let mut parsed = parse_batch(out, marker, looks.len());
    for i in 0..looks.len() {
        if let Some(first) = looks[..i].iter().position(|l| *l == looks[i]) {
            parsed[i] = parsed[first].clone();
        }
    }
    parsed
}

/// What a read-back can learn of many steps with two programs: a file's
/// mode and hash, a directory's mode (`stat` and `sha256sum` over all
/// their paths at once; paths are of lvslab's safe grammar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bulk {
    File(String),
    Dir(String),
}

impl Bulk {
    /// The bulk read-back of a step, when it has one.
    pub fn of(r: &Resource) -> Option<Bulk> {
        match r {
            Resource::File { path, .. } => Some(Bulk::File(path.clone())),
            Resource::Directory { path, .. } => Some(Bulk::Dir(path.clone())),
            _ => None,
        }
    }
}

/// The script lines that read `bulk` back, framed by `marker` as item 0.
fn push_bulk(s: &mut String, marker: &str, bulk: &[Bulk]) {
    let quote = crate::shell::quote;
    let all: Vec<String> = bulk
        .iter()
        .map(|b| match b {
            Bulk::File(p) | Bulk::Dir(p) => quote(p),
        })
        .collect();
    let files: Vec<String> = bulk
        .iter()
        .filter_map(|b| match b {
            Bulk::File(p) => Some(quote(p)),
            Bulk::Dir(_) => None,
        })
        .collect();
    s.push_str(&format!(
        "printf '%s\\n' '{marker} 0'\n{{ stat -L -c '%a %n' -- {} 2>/dev/null; echo '{BULK_SHA}'",
        all.join(" ")
    ));
    if !files.is_empty() {
        s.push_str(&format!("; sha256sum -- {} 2>/dev/null", files.join(" ")));
    }
    s.push_str(&format!("; }} </dev/null; printf '\\n%s %s\\n' '{marker} rc' \"$?\"\n"));
}

const BULK_SHA: &str = "@@sha256";

/// Each bulk step's observation, in the form its own observe command gives
/// (a file: mode and hash, its content not read; a directory: its mode).
pub fn parse_bulk(out: &str, marker: &str, bulk: &[Bulk]) -> Vec<Option<Observed>> {
    // The whole read-back lost (the output was cut short): nothing is known.
    let Some(text) = parse_batch(out, marker, 1).pop().flatten().map(|o| o.output) else {
        return vec![None; bulk.len()];
    };
    let (modes, shas) = text.split_once(BULK_SHA).unwrap_or((&text, ""));
    let mode_of = |p: &str| {
        modes
            .lines()
            .find_map(|l| l.split_once(' ').filter(|(_, n)| *n == p).map(|(m, _)| m.to_string()))
    };
    let sha_of = |p: &str| {
        shas.lines().find_map(|l| {
            let (h, n) = l.split_once(' ')?;
            (n.trim_start_matches([' ', '*']) == p).then(|| h.to_string())
        })
    };
    bulk.iter()
        .map(|b| match b {
            Bulk::Dir(p) => Some(match mode_of(p) {
                Some(m) => Observed { output: m, rc: 0 },
                None => Observed {
                    output: String::new(),
                    rc: 1,
                },
            }),
            Bulk::File(p) => Some(match (mode_of(p), sha_of(p)) {
                (Some(m), Some(h)) => Observed {
                    output: format!("{m}\n{h}\n"),
                    rc: 0,
                },
                _ => Observed {
                    output: "absent\n".into(),
                    rc: 0,
                },
            }),
        })
        .collect()
}

/// One round trip that applies and reads back: the `apply` items in order
/// under `apply_marker` (each in a `set -e` subshell; with
/// `stop_on_failure`, after the first that fails the rest do not run), then
/// the `bulk` read-backs under `{look_marker}b` (see [`parse_bulk`]) and
/// under `look_marker` the `confirm` observations (always: what ran before a
/// failure is still judged), then the `later` ones (only when every apply
/// item succeeded), numbered on from the confirm ones.
pub fn apply_batch(
    apply: &[Vec<String>],
    apply_marker: &str,
    stop_on_failure: bool,
    bulk: &[Bulk],
    confirm: &[Look],
    later: &[Look],
    look_marker: &str,
) -> String {
    let mut s = String::from("exec 2>&1\nf=0\n");
    let guard = if stop_on_failure { "[ \"$f\" = 0 ]" } else { ":" };
    for (i, cmds) in apply.iter().enumerate() {
        if cmds.is_empty() {
            // Nothing to run (another item does its work): no subshell.
            s.push_str(&format!(
                "if {guard}; then printf '%s\\n\\n%s %s\\n' '{apply_marker} {i}' '{apply_marker} rc' 0; fi\n"
            ));
            continue;
        }
        s.push_str(&format!(
            "if {guard}; then\nprintf '%s\\n' '{apply_marker} {i}'\n( set -e\n"
        ));
        for c in cmds {
            s.push_str(c);
            s.push('\n');
        }
        s.push_str(&format!(
            ") </dev/null; r=$?; printf '\\n%s %s\\n' '{apply_marker} rc' \"$r\"\n[ \"$r\" -eq 0 ] || f=1\nfi\n"
        ));
    }
    if !bulk.is_empty() {
        push_bulk(&mut s, &format!("{look_marker}b"), bulk);
    }
    let all: Vec<Look> = confirm.iter().chain(later).cloned().collect();
    let mut later_open = false;
    for (i, l) in firsts(&all) {
        if i >= confirm.len() && !later_open {
            s.push_str("if [ \"$f\" = 0 ]; then\n");
            later_open = true;
        }
        push_look(&mut s, look_marker, i, l);
    }
    if later_open {
        s.push_str("fi\n");
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
