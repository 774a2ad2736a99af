//! The `line` resource: one line of a file, as Ansible's `lineinfile` keeps
//! it. The edit is computed here from the content observed (with Rust's
//! `regex`), so `up`, `--check` and `drift` agree and show a diff; `down`
//! puts back the line it replaced, or removes the one it added, with `awk`
//! comparing whole lines literally (no pattern reaches the shell).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::Regex;

use crate::shell::quote;

/// `pattern` compiled, once per process (a lab's line steps share a few
/// patterns across all its hosts; compiling is the costly part); `None`
/// when it does not compile.
pub fn regex(pattern: &str) -> Option<Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(r) = cache.lock().ok()?.get(pattern) {
        return r.clone();
    }
    let compiled = Regex::new(pattern).ok();
    if let Ok(mut c) = cache.lock() {
        c.insert(pattern.to_string(), compiled.clone());
    }
    compiled
}

/// What a line step found before its first change (kept as the original's value).
pub const CREATED: &str = "created";
pub const APPENDED: &str = "appended";
pub const REPLACED: &str = "replaced: ";

/// The content with `line` in it: replacing the last line `regexp` matches,
/// else appended unless it is there already (a final newline is added
/// first when missing). A regexp that does not compile changes nothing
/// (validation refuses it before any run).
pub fn edit(content: &str, line: &str, regexp: Option<&str>) -> String {
    let re = regexp.and_then(regex);
    let lines = lines_of(content);
    if let Some(re) = &re
        && let Some(last) = lines.iter().rposition(|l| re.is_match(l))
    {
        if lines[last] == line {
            return content.to_string();
        }
        let mut out: Vec<&str> = lines.clone();
        out[last] = line;
        return out.join("\n") + "\n";
    }
    if lines.contains(&line) {
        return content.to_string();
    }
    let mut s = content.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(line);
    s.push('\n');
    s
}

/// The lines of `content` as awk sees them: split at `\n` only, so a CRLF
/// file's lines keep their `\r` (`str::lines` would drop it, and every
/// line of the file would lose it when written back).
pub fn lines_of(content: &str) -> Vec<&str> {
    if content.is_empty() {
        return Vec::new();
    }
    content.strip_suffix('\n').unwrap_or(content).split('\n').collect()
}

/// `s` as a literal in a pattern that both Rust's regex and a POSIX ERE
/// (mawk, Debian's default awk, in `plan --format sh`) read the same:
/// only the ERE metacharacters are escaped (`regex::escape` also escapes
/// `#`, `&`, `-` and `~`, which are undefined escapes in an ERE).
pub fn ere_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if ".[]()*+?{}|^$\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What the step is about to change, from the content before it (`None`:
/// the file does not exist).
pub fn original(content: Option<&str>, regexp: Option<&str>) -> String {
    let Some(content) = content else {
        return CREATED.into();
    };
    let re = regexp.and_then(regex);
    match re.and_then(|re| {
        lines_of(content)
            .into_iter()
            .rfind(|l| re.is_match(l))
            .map(str::to_string)
    }) {
        Some(old) => format!("{REPLACED}{old}"),
        None => APPENDED.into(),
    }
}

/// Rewrite `path` through an awk program that sees the line as `l` (and the
/// old one as `o`), from the environment: no value is parsed by awk or the
/// shell. The file keeps its inode and mode.
fn through_awk(path: &str, line: &str, old: Option<&str>, program: &str) -> String {
    let p = quote(path);
    let t = quote(&format!("{path}.lvslab-new"));
    let old = old.map(|o| format!(" O={}", quote(o))).unwrap_or_default();
    format!(
        "L={}{old} awk 'BEGIN {{ l = ENVIRON[\"L\"]; o = ENVIRON[\"O\"] }} {program}' {p} > {t} && cat {t} > {p} && rm -f {t}",
        quote(line)
    )
}

/// What a line's revert says when the line is no longer in its file.
pub const TAKEN: &str = "lvslab: the line is no longer in the file";

/// Put back what [`original`] recorded in place of the last copy of the
/// line (where lvslab put it; copies that were there before stay): the
/// replaced line, or no line at all (and no file, when lvslab made it and
/// nothing else is in it). Lines compare as strings (`(x "")`: awk would
/// compare `1` and `01` as numbers).
pub fn revert(path: &str, line: &str, original: &str) -> Vec<String> {
    let p = quote(path);
    // The line no longer there: put back by hand already (the replaced line
    // is back, or the file lvslab made is empty), or changed by hand since
    // and the user's: left as it is (and said). A file it cannot read fails.
    let back = match original.strip_prefix(REPLACED) {
        Some(old) => format!("! grep -qxF -- {} {p} || exit 0; ", quote(old)),
        None if original == CREATED => format!("[ -s {p} ] || {{ rm -f {p}; exit 0; }}; "),
        None => String::new(),
    };
    let mut cmds = vec![
        format!("[ -f {p} ] || exit 0"),
        format!(
            "if grep -qxF -- {} {p}; then :; else [ $? -eq 1 ] || exit 2; {back}echo '{TAKEN}'; exit 0; fi",
            quote(line)
        ),
    ];
    let last = "{ a[NR] = $0; if (($0 \"\") == (l \"\")) m = NR }";
    match original.strip_prefix(REPLACED) {
        Some(old) => cmds.push(through_awk(
            path,
            line,
            Some(old),
            &format!("{last} END {{ for (i = 1; i <= NR; i++) print (i == m ? o : a[i]) }}"),
        )),
        None => cmds.push(through_awk(
            path,
            line,
            None,
            &format!("{last} END {{ for (i = 1; i <= NR; i++) if (i != m) print a[i] }}"),
        )),
    }
    if original == CREATED {
        cmds.push(format!("[ -s {p} ] || rm -f {p}"));
    }
    cmds
}

/// The apply as a standalone script (`plan --format script`), without an
/// observation: awk does the edit, matching `regexp` as a POSIX extended
/// regular expression (lvslab itself matches with Rust's regex syntax).
pub fn script(path: &str, line: &str, regexp: Option<&str>, mode: &str) -> Vec<String> {
    let p = quote(path);
    let dir = path
        .rsplit_once('/')
        .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
    let mut cmds = vec![format!(
        "[ -f {p} ] || {{ mkdir -p {d} && : > {p} && chmod {m} {p}; }}",
        d = quote(dir),
        m = quote(mode)
    )];
    let program = match regexp {
        Some(_) => "{ a[NR] = $0; if ($0 ~ ENVIRON[\"R\"]) m = NR; if (($0 \"\") == (l \"\")) f = 1 } \
                    END { for (i = 1; i <= NR; i++) print (i == m ? l : a[i]); if (!m && !f) print l }"
            .to_string(),
        None => "{ print; if (($0 \"\") == (l \"\")) f = 1 } END { if (!f) print l }".to_string(),
    };
    let cmd = through_awk(path, line, None, &program);
    cmds.push(match regexp {
        Some(r) => format!("R={} {cmd}", quote(r)),
        None => cmd,
    });
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_like_lineinfile() {
        // Appended when missing, with the final newline mended first.
        assert_eq!(edit("a = 1\n", "b = 2", None), "a = 1\nb = 2\n");
        assert_eq!(edit("a = 1", "b = 2", None), "a = 1\nb = 2\n");
        assert_eq!(edit("", "b = 2", None), "b = 2\n");
        // Present: unchanged, byte for byte.
        assert_eq!(edit("b = 2\na = 1", "b = 2", None), "b = 2\na = 1");
        // The last match is replaced.
        let re = Some(r"^\s*b\s*=");
        assert_eq!(edit("b = 1\nx\n b=3\n", "b = 2", re), "b = 1\nx\nb = 2\n");
        assert_eq!(edit("x\n", "b = 2", re), "x\nb = 2\n");
        assert_eq!(edit("b = 2\n", "b = 2", re), "b = 2\n");
        // A CRLF file keeps its `\r` on the lines the step does not touch.
        let re = Some(r"^[[:space:]]*b[[:space:]]*=");
        assert_eq!(edit("a\r\nb = 1\r\nc\r\n", "b = 2", re), "a\r\nb = 2\nc\r\n");
        assert_eq!(original(Some("a\r\nb = 1\r\n"), re), "replaced: b = 1\r");
        assert_eq!(edit("a\r\n", "b = 2", None), "a\r\nb = 2\n");
    }

    #[test]
    fn escaped_keys_mean_the_same_in_rust_and_in_mawk() {
        let key = r"a.b[1]#&-~+x\y";
        let re = format!("^{}$", ere_escape(key));
        assert!(regex(&re).unwrap().is_match(key));
        assert!(!regex(&re).unwrap().is_match("aXb[1]#&-~+x\\y"));
        for awk in ["mawk", "awk"] {
            let out = std::process::Command::new(awk)
                .arg("BEGIN { exit !(ENVIRON[\"K\"] ~ ENVIRON[\"R\"]) }")
                .env("K", key)
                .env("R", &re)
                .status()
                .unwrap_or_else(|e| panic!("{awk}: {e} (Debian's awk is mawk)"));
            assert!(out.success(), "{awk} does not match {key} with {re}");
        }
    }

    #[test]
    fn originals_say_what_to_put_back() {
        let re = Some(r"^b =");
        assert_eq!(original(None, re), CREATED);
        assert_eq!(original(Some("x\n"), re), APPENDED);
        assert_eq!(original(Some("b = 1\n"), re), "replaced: b = 1");
    }

    fn sh(script: &str) {
        let out = std::process::Command::new("sh").arg("-c").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A line no longer in its file at `down`: changed by hand, it is left
    /// and said; the replaced line put back by hand, or the file lvslab
    /// made emptied by hand, is simply reverted (silently).
    #[test]
    fn a_line_no_longer_there_is_left_and_said() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.conf");
        let p = f.display().to_string();
        let run = |cmds: Vec<String>| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("set -e\n{}", cmds.join("\n")))
                .output()
                .unwrap();
            (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
        };
        std::fs::write(&f, "a = 3\n").unwrap();
        assert_eq!(run(revert(&p, "a = 2", APPENDED)), (Some(0), format!("{TAKEN}\n")));
        assert_eq!(
            run(revert(&p, "a = 2", "replaced: a = 1")),
            (Some(0), format!("{TAKEN}\n"))
        );
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a = 3\n");
        std::fs::write(&f, "a = 1\n").unwrap();
        assert_eq!(run(revert(&p, "a = 2", "replaced: a = 1")), (Some(0), String::new()));
        std::fs::write(&f, "").unwrap();
        assert_eq!(run(revert(&p, "a = 2", CREATED)), (Some(0), String::new()));
        assert!(!f.exists(), "made by lvslab, emptied by hand: removed");
    }

    #[test]
    fn reverts_and_the_script_form_run_in_sh() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.conf");
        let p = f.display().to_string();
        let tricky = r#"k = "$HOME" \n 'q' & \1"#;
        std::fs::write(&f, "k = old\nother\n").unwrap();
        sh(&script(&p, tricky, Some("^k ="), "0644").join("\n"));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), format!("{tricky}\nother\n"));
        sh(&revert(&p, tricky, "replaced: k = old").join("\n"));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "k = old\nother\n");
        sh(&script(&p, tricky, None, "0644").join("\n"));
        sh(&revert(&p, tricky, APPENDED).join("\n"));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "k = old\nother\n");
        let g = dir.path().join("new/made.conf");
        let q = g.display().to_string();
        sh(&script(&q, "x = 1", None, "0600").join("\n"));
        assert_eq!(std::fs::read_to_string(&g).unwrap(), "x = 1\n");
        sh(&revert(&q, "x = 1", CREATED).join("\n"));
        assert!(!g.exists(), "made by lvslab, empty again: removed");
        // Only lvslab's copy goes; numbers compare as text.
        std::fs::write(&f, "1\n01\n1.0\n1\n").unwrap();
        sh(&revert(&p, "1", APPENDED).join("\n"));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "1\n01\n1.0\n");
        std::fs::write(&f, "PermitRootLogin no\n#x\nPermitRootLogin no\n").unwrap();
        sh(&revert(&p, "PermitRootLogin no", "replaced: #PermitRootLogin yes").join("\n"));
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "PermitRootLogin no\n#x\n#PermitRootLogin yes\n"
        );
    }
}
