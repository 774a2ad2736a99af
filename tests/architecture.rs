//! The shape rules of ARCHITECTURE.md, checked against the code: no function
//! over [`MAX_FN_LINES`] lines outside tests, and the module dependency rules
//! ("X knows nothing about Y"): every `crate::…` and `super::…` path in
//! `src/` (tests' own modules left out) is an edge from the file's module to
//! the module it names. Fails on a cycle between top-level modules, on a
//! cycle between files (a `mod.rs` re-exporting its own children aside), and
//! on any edge a rule forbids.
//!
//! `cargo test --test architecture -- --nocapture` prints the module graph
//! and the longest functions.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on the unexpected

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules and what each may not use (directly or not). The order
/// is the pipeline's, lowest first; ARCHITECTURE.md explains each line.
const RULES: &[(&str, &[&str])] = &[
    ("diag", LAB),
    ("shell", LAB),
    ("assets", LAB),
    ("local", LAB),
    ("process", LAB),
    ("iproute", LAB),
    (
        "spec",
        &[
            "model", "compile", "plan", "state", "exec", "provider", "verify", "drift", "report", "app",
        ],
    ),
    (
        "model",
        &[
            "compile", "plan", "state", "exec", "provider", "verify", "drift", "report", "app",
        ],
    ),
    (
        "plan",
        &[
            "compile", "state", "exec", "provider", "verify", "drift", "report", "app",
        ],
    ),
    (
        "compile",
        &["state", "exec", "provider", "verify", "drift", "report", "app"],
    ),
    (
        "state",
        &["compile", "exec", "provider", "verify", "drift", "report", "app"],
    ),
    ("exec", &["compile", "provider", "verify", "drift", "report", "app"]),
    ("provider", &["compile", "verify", "drift", "report", "app"]),
    ("verify", &["state", "provider", "drift", "report", "app"]),
    ("drift", &["provider", "verify", "report", "app"]),
    ("report", &["state", "provider", "app"]),
    (
        "graph",
        &[
            "plan", "compile", "state", "exec", "provider", "verify", "drift", "report", "app",
        ],
    ),
];

/// What the leaves (helpers of any layer) may not use: anything about labs.
const LAB: &[&str] = &[
    "spec", "model", "plan", "compile", "state", "exec", "provider", "verify", "drift", "report", "graph", "app",
];

/// Files that may not use each other: verify's judge is pure and takes its
/// vocabulary from `probe`, never from the gatherer.
const FILE_RULES: &[(&str, &str)] = &[
    ("verify::decide", "verify::gather"),
    ("verify::decide", "exec"),
    ("verify::probe", "verify::gather"),
    ("verify::probe", "verify::decide"),
    ("compile", "local"),
    ("compile", "process"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` → `a::b`, `src/a/mod.rs` → `a`, `src/lib.rs` → `` (the root).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib" || l == "main") {
        parts.pop();
    }
    parts.join("::")
}

/// The text without comments, string literals and `#[cfg(test)]` items.
fn code_of(text: &str) -> String {
    let mut out: Vec<u8> = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"#[cfg(test)]") {
            // Skip the attribute and the item it guards (to its closing brace or `;`).
            let mut depth = 0;
            let mut j = i + "#[cfg(test)]".len();
            while j < b.len() {
                match b[j] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            j += 1;
                            break;
                        }
                    }
                    b';' if depth == 0 => {
                        j += 1;
                        break;
                    }
                    _ => {}
                }
                j += 1;
            }
            i = j;
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'"' && !(i > 0 && b[i - 1] == b'\'') {
            // A string literal (raw strings with # are rare here and hold no paths).
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.extend_from_slice(b"\"\"");
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The module paths a file's code names: `crate::a::b::{c, d::e}` gives
/// `a::b::c`, `a::b::d::e`; `super::x` is resolved against the file's module.
fn paths_named(code: &str, module: &str) -> Vec<String> {
    let mut found = Vec::new();
    let b = code.as_bytes();
    for (start, prefix) in [("crate::", "crate"), ("super::", "super")] {
        let mut from = 0;
        while let Some(pos) = code[from..].find(start) {
            let at = from + pos;
            from = at + start.len();
            if at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_' || b[at - 1] == b':') {
                continue;
            }
            let base: Vec<String> = if prefix == "crate" {
                Vec::new()
            } else {
                let mut m: Vec<String> = module.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
                m.pop();
                m
            };
            expand(&code[from..], base, &mut found);
        }
    }
    found
}

/// Read `a::b::{c, d}` (or a plain path) at the start of `s`.
fn expand(s: &str, base: Vec<String>, found: &mut Vec<String>) {
    let mut path = base;
    let mut rest = s;
    loop {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                // A group: split at top-level commas up to the matching brace.
                let mut depth = 1;
                let mut item = String::new();
                for c in inner.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 || (depth == 1 && c == ',') {
                        let t = item.trim();
                        if !t.is_empty() && t != "self" {
                            expand(t, path.clone(), found);
                        }
                        item.clear();
                        if depth == 0 {
                            break;
                        }
                    } else {
                        item.push(c);
                    }
                }
            }
            found.push(path.join("::"));
            return;
        }
        rest = &rest[ident.len()..];
        if ident != "self" {
            path.push(ident);
        }
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => {
                found.push(path.join("::"));
                return;
            }
        }
    }
}

struct Graph {
    /// File-level module → modules it names (resolved to existing modules).
    files: BTreeMap<String, BTreeSet<String>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| f.file_name().is_some_and(|n| n != "main.rs") || f.parent() != Some(src.as_path()));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut out = BTreeMap::new();
    for f in &files {
        let module = module_of(&src, f);
        let code = code_of(&std::fs::read_to_string(f).unwrap());
        let mut to = BTreeSet::new();
        for p in paths_named(&code, &module) {
            // The longest prefix that is a module (a file); the root when none.
            let parts: Vec<&str> = p.split("::").collect();
            let target = (1..=parts.len())
                .rev()
                .map(|n| parts[..n].join("::"))
                .find(|m| modules.contains(m))
                .unwrap_or_default();
            if target != module && !target.is_empty() {
                to.insert(target);
            }
        }
        out.insert(module, to);
    }
    Graph { files: out }
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap_or(m)
}

fn top_graph(g: &Graph) -> BTreeMap<String, BTreeSet<String>> {
    let mut t: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in &g.files {
        let e = t.entry(top(from).to_string()).or_default();
        for to in tos {
            if top(to) != top(from) {
                e.insert(top(to).to_string());
            }
        }
    }
    t
}

/// Every cycle's members (strongly connected components of size > 1).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(n) = stack.pop() {
            for m in g.get(&n).into_iter().flatten() {
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        seen
    };
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in g.keys() {
        if done.contains(n) {
            continue;
        }
        let r = reach(n);
        if !r.contains(n) {
            continue;
        }
        let comp: Vec<String> = r.iter().filter(|m| reach(m).contains(n)).cloned().collect();
        done.extend(comp.iter().cloned());
        out.push(comp);
    }
    out
}

#[test]
fn top_level_modules_form_no_cycle_and_follow_the_rules() {
    let g = graph();
    let t = top_graph(&g);
    println!("module graph (top level; `A -> B`: A uses B):");
    for (from, tos) in &t {
        let tos: Vec<&str> = tos.iter().map(String::as_str).collect();
        println!("  {from:<9} -> {}", tos.join(", "));
    }
    let c = cycles(&t);
    assert!(c.is_empty(), "cycles between top-level modules: {c:?}");
    let mut bad = Vec::new();
    for (from, forbidden) in RULES {
        for (file, tos) in &g.files {
            if top(file) != *from {
                continue;
            }
            for to in tos {
                if forbidden.contains(&top(to)) {
                    bad.push(format!("{file} uses {to} ({from} knows nothing about {})", top(to)));
                }
            }
        }
    }
    assert!(bad.is_empty(), "forbidden uses:\n{}", bad.join("\n"));
}

#[test]
fn files_form_no_cycle_and_follow_the_file_rules() {
    let g = graph();
    // A `mod.rs` naming its own children (re-exports) is how a module shows
    // its API, not a dependency of the children.
    let mut files = g.files.clone();
    for (from, tos) in files.iter_mut() {
        tos.retain(|to| !(to.starts_with(&format!("{from}::")) || from.is_empty()));
    }
    println!("module graph (files):");
    for (from, tos) in &files {
        if !tos.is_empty() {
            let tos: Vec<&str> = tos.iter().map(String::as_str).collect();
            println!("  {from} -> {}", tos.join(", "));
        }
    }
    let c = cycles(&files);
    assert!(c.is_empty(), "cycles between files: {c:?}");
    let mut bad = Vec::new();
    for (from, to) in FILE_RULES {
        for (file, tos) in &g.files {
            if file == from || file.starts_with(&format!("{from}::")) {
                for t in tos {
                    if t == to || t.starts_with(&format!("{to}::")) {
                        bad.push(format!("{file} uses {t}"));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "forbidden file uses:\n{}", bad.join("\n"));
}

/// The checker itself: a cycle and a forbidden edge are found.
#[test]
fn the_checker_finds_a_cycle_and_reads_groups() {
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".to_string()]]);
    let mut found = Vec::new();
    expand("plan::{ipvs::{a, b}, Resource};", Vec::new(), &mut found);
    assert!(found.contains(&"plan::ipvs::a".to_string()), "{found:?}");
    assert!(found.contains(&"plan::Resource".to_string()), "{found:?}");
    let code =
        code_of("use crate::x; // crate::y\n#[cfg(test)]\nmod tests { use crate::z; }\nfn f() { \"crate::w\"; }");
    assert!(
        code.contains("crate::x")
            && !code.contains("crate::y")
            && !code.contains("crate::z")
            && !code.contains("crate::w")
    );
    assert_eq!(
        paths_named("super::gather::x", "verify::decide"),
        vec!["verify::gather::x"]
    );
}

/// The longest a function may be (lines from `fn` to its closing brace),
/// outside `#[cfg(test)]` code. Longer ones are split by concern.
const MAX_FN_LINES: usize = 120;

/// Every function's length in `src/`: (lines, file:function), longest first.
fn function_lengths() -> Vec<(usize, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out = Vec::new();
    for f in &files {
        let code = code_of(&std::fs::read_to_string(f).unwrap());
        let b = code.as_bytes();
        let mut from = 0;
        while let Some(pos) = code[from..].find("fn ") {
            let at = from + pos;
            from = at + 3;
            if at > 0 && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_') {
                continue;
            }
            let name: String = code[at + 3..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                continue;
            }
            // The body: the first `{` before any `;` (a declaration has none).
            let Some(open) = code[at..].find(['{', ';']).map(|i| at + i) else {
                continue;
            };
            if b[open] == b';' {
                continue;
            }
            let mut depth = 0;
            let mut close = open;
            for (i, c) in code[open..].bytes().enumerate() {
                match c {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            close = open + i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let lines = code[at..=close].lines().count();
            let rel = f.strip_prefix(&src).unwrap().display().to_string();
            out.push((lines, format!("src/{rel}:{name}")));
        }
    }
    out.sort_by(|a, b| b.cmp(a));
    out
}

#[test]
fn no_function_is_longer_than_the_limit() {
    let lengths = function_lengths();
    println!("longest functions (lines):");
    for (n, f) in lengths.iter().take(10) {
        println!("  {n:5} {f}");
    }
    let long: Vec<String> = lengths
        .iter()
        .filter(|(n, _)| *n > MAX_FN_LINES)
        .map(|(n, f)| format!("{f}: {n} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines (split them by concern):\n{}",
        long.join("\n")
    );
}
