//! lvslab's integration tests: one binary, one module per concern.
//!
//! Snapshots live in `tests/it/snapshots/`; review changes with `cargo insta review`
//! (CI fails on any difference: `CI=true` makes insta refuse to write).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on the unexpected

mod cli;
mod compile;
mod drift;
mod flags;
mod graph;
mod hostile;
mod injection;
mod invalid;
mod keepalived;
mod netns;
mod runner;
mod ssh;
mod steps;
mod verify;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A program the tests need, by its full path: on `PATH`, or in the sbin
/// directories a user's PATH on Debian lacks (the fast tier runs without
/// root). Missing fails loudly, naming the package.
pub fn program(name: &str, package: &str) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/bin", "/usr/sbin", "/sbin"])
        .map(|d| format!("{d}/{name}"))
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| panic!("{name} is missing: apt-get install {package} (README, Tests)"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped example topologies, sorted by file name.
pub fn topologies() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("topologies"))
        .expect("topologies/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

pub fn load(path: &Path) -> lvslab::Loaded {
    let rel = path.strip_prefix(repo()).unwrap_or(path);
    let text = std::fs::read_to_string(path).expect("readable topology");
    match lvslab::load_str(&rel.display().to_string(), text) {
        Ok(l) => l,
        Err(d) => panic!("{} does not validate:\n{d}", rel.display()),
    }
}

pub fn plan(path: &Path) -> lvslab::plan::Plan {
    lvslab::compile::compile(&load(path).topology).expect("compiles")
}

/// A small builder around the `lvslab` binary.
pub struct Lvslab {
    cmd: Command,
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Default for Lvslab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lvslab {
    pub fn new() -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lvslab"));
        cmd.current_dir(repo()).env("NO_COLOR", "1");
        Lvslab { cmd }
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Self {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn spawn(mut self) -> std::process::Child {
        self.cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("lvslab starts")
    }

    pub fn run(mut self) -> Output {
        let out = self.cmd.output().expect("lvslab runs");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Run `sh -n` on a script; panics with the shell's message if it does not parse.
pub fn assert_sh_parses(name: &str, script: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("script.sh");
    std::fs::write(&path, script).expect("write script");
    let out = Command::new("sh").arg("-n").arg(&path).output().expect("sh runs");
    assert!(
        out.status.success(),
        "{name}: sh -n failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}
