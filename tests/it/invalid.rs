//! Every invalid topology under tests/invalid/ gives pinned messages, each at
//! file:line:col; files under tests/warnings/ are valid but warn.

use crate::repo;

fn render(path: &std::path::Path) -> Result<String, String> {
    let rel = path.strip_prefix(repo()).unwrap().display().to_string();
    let text = std::fs::read_to_string(path).unwrap();
    match lvslab::load_str(&rel, text) {
        Ok(l) => Ok(l.warnings.to_string()),
        Err(d) => Err(d.to_string()),
    }
}

#[test]
fn invalid_topologies_have_pinned_errors_with_positions() {
    let mut count = 0;
    insta::glob!(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests"),
        "invalid/*.yaml",
        |path| {
            count += 1;
            let out = render(path).expect_err("must be invalid");
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            assert!(out.starts_with("error: "), "{name}: errors come first:\n{out}");
            let located = regex_like_position(&out, &name);
            assert!(located, "{name}: every error has file:line:col:\n{out}");
            insta::assert_snapshot!(out);
        }
    );
    assert!(count >= 20, "at least 20 invalid topologies, found {count}");
}

/// True if every `error:` block is followed by a `--> path:line:col` line.
fn regex_like_position(out: &str, name: &str) -> bool {
    out.split("\nerror: ").all(|block| {
        block.lines().nth(1).is_some_and(|l| {
            let l = l.trim_start();
            l.starts_with("--> tests/invalid/")
                && l.contains(name)
                && l.rsplit(':').take(2).all(|n| n.parse::<u32>().is_ok())
        })
    })
}

#[test]
fn warnings_do_not_invalidate() {
    insta::glob!(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests"),
        "warnings/*.yaml",
        |path| {
            let out = render(path).expect("valid with warnings");
            assert!(out.starts_with("warning: "), "{out}");
            insta::assert_snapshot!(out);
        }
    );
}

#[test]
fn secrets_are_never_quoted_in_diagnostics() {
    let out = render(&repo().join("tests/warnings/long-auth-pass.yaml")).unwrap();
    assert!(!out.contains("supersecret99"), "{out}");
}
