//! Running programs on this machine (the providers' work): always an
//! argument vector, never a shell command line, so no value is ever
//! interpreted by a shell.

use std::path::Path;
use std::process::{Command, Stdio};

/// A program that could not be run, or that failed.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed: {message}")]
pub struct CommandError {
    pub command: String,
    pub message: String,
}

/// Run a program with its arguments, returning its standard output.
pub fn run(argv: &[&str]) -> Result<String, CommandError> {
    run_in(argv, None)
}

/// [`run`] in a working directory.
pub fn run_in(argv: &[&str], dir: Option<&Path>) -> Result<String, CommandError> {
    let err = |message: String| CommandError {
        command: argv.join(" "),
        message,
    };
    let (program, args) = argv.split_first().ok_or_else(|| err("empty command".into()))?;
    let mut c = Command::new(program);
    c.args(args).stdin(Stdio::null());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let out = c.output().map_err(|e| err(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// The path of a program: itself when it contains a `/` and is executable,
/// else the first executable of that name on `$PATH`.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let exec = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = Path::new(program);
        return exec(p).then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| exec(p))
}

/// Whether a program can be run.
pub fn have(program: &str) -> bool {
    which(program).is_some()
}

/// Whether this process runs with root's effective uid.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// An ed25519 key pair without passphrase at `path` (and `path.pub`),
/// unless it exists.
pub fn keygen(path: &Path) -> Result<(), CommandError> {
    if path.exists() {
        return Ok(());
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| CommandError {
            command: format!("mkdir {}", d.display()),
            message: e.to_string(),
        })?;
    }
    let p = path.display().to_string();
    run(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lvslab", "-f", &p]).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_never_interpreted() {
        let out = run(&["printf", "%s", "$(touch /tmp/lvslab-never) `id` ; rm -rf /"]).unwrap();
        assert_eq!(out, "$(touch /tmp/lvslab-never) `id` ; rm -rf /");
        let e = run(&["sh", "-c", "echo boom >&2; exit 3"]).unwrap_err();
        assert_eq!(e.message, "boom");
        assert!(have("sh") && !have("no-such-program-lvslab"));
        assert!(which("/bin/sh").is_some());
    }
}
