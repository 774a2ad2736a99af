//! Transports: how lvslab reaches a host. Everything a transport must do is
//! run a shell script (`sh -s`, the script on stdin so that secrets in it never
//! appear in a process list) and return its output and exit status; uploads
//! and facts are built on that.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use crate::plan::assess::write_file;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    pub stdout: String,
    pub stderr: String,
    pub status: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{host}: cannot connect to {addr}: {reason}")]
    Connect { host: String, addr: String, reason: String },
    #[error(
        "{host}: unknown host key {fingerprint} for {addr} (not in {files}); check it, then run again with --accept-new-host-keys to record it"
    )]
    UnknownHostKey {
        host: String,
        addr: String,
        fingerprint: String,
        files: String,
    },
    #[error(
        "{host}: HOST KEY CHANGED for {addr}: it now offers {fingerprint} ({offered}), which does not match the {recorded} key in {file} line {line}; refusing to connect (someone may be intercepting, or the host was reinstalled: if so, remove that line)"
    )]
    ChangedHostKey {
        host: String,
        addr: String,
        fingerprint: String,
        /// The offered key's algorithm, and the recorded one's.
        offered: String,
        recorded: String,
        file: String,
        line: usize,
    },
    #[error("{host}: authentication as {user} failed (tried: {tried})")]
    Auth { host: String, user: String, tried: String },
    #[error("{host}: {message}")]
    Other { host: String, message: String },
}

/// Operating-system facts about a host, read once per run.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Facts {
    /// `debian`, `rhel`, … (from /etc/os-release `ID_LIKE`/`ID`).
    pub os_family: String,
    /// `apt`, `dnf`, `yum` or empty.
    pub package_manager: String,
    /// `systemd` or `none`.
    pub init: String,
}

pub const FACTS_SCRIPT: &str = "\
. /etc/os-release 2>/dev/null; echo \"os ${ID_LIKE:-$ID}\"
for p in apt-get dnf yum; do command -v $p >/dev/null 2>&1 && { echo \"pm $p\"; break; }; done
if [ -d /run/systemd/system ]; then echo 'init systemd'; else echo 'init none'; fi
";

pub fn parse_facts(out: &str) -> Facts {
    let mut f = Facts {
        init: "none".into(),
        ..Facts::default()
    };
    for line in out.lines() {
        match line.split_once(' ') {
            Some(("os", v)) => {
                f.os_family = match crate::model::OsFamily::from_os_release(v) {
                    Some(family) => family.as_str().into(),
                    None => v.split_whitespace().next().unwrap_or("").into(),
                };
            }
            Some(("pm", v)) => f.package_manager = v.trim_end_matches("-get").into(),
            Some(("init", v)) => f.init = v.into(),
            _ => {}
        }
    }
    f
}

#[async_trait]
pub trait Transport: Send + Sync {
    /// The lab host this transport reaches.
    fn host(&self) -> &str;

    /// Run `script` with `sh -s` on the host: one round trip.
    async fn run(&self, script: &str) -> Result<CmdOutput, TransportError>;

    /// Write a file atomically (temporary file, mode, rename): one round trip.
    async fn upload(&self, path: &str, content: &[u8], mode: &str) -> Result<(), TransportError> {
        let script = format!("set -e\n{}\n", write_file(path, content, mode, None).join("\n"));
        let out = self.run(&script).await?;
        if out.status == 0 {
            Ok(())
        } else {
            Err(TransportError::Other {
                host: self.host().to_string(),
                message: format!("writing {path} failed: {}", out.stderr.trim()),
            })
        }
    }

    /// OS family, package manager and init system: one round trip.
    async fn facts(&self) -> Result<Facts, TransportError> {
        Ok(parse_facts(&self.run(FACTS_SCRIPT).await?.stdout))
    }
}

/// This machine, optionally through a command prefix (e.g. `nsenter … --` to
/// enter a lab host's namespaces).
pub struct LocalTransport {
    host: String,
    prefix: Vec<String>,
}

impl LocalTransport {
    pub fn new(host: impl Into<String>) -> Self {
        Self::with_prefix(host, Vec::new())
    }

    pub fn with_prefix(host: impl Into<String>, prefix: Vec<String>) -> Self {
        LocalTransport {
            host: host.into(),
            prefix,
        }
    }
}

#[async_trait]
impl Transport for LocalTransport {
    fn host(&self) -> &str {
        &self.host
    }

    async fn run(&self, script: &str) -> Result<CmdOutput, TransportError> {
        let err = |e: std::io::Error| TransportError::Other {
            host: self.host.clone(),
            message: e.to_string(),
        };
        let mut argv: Vec<&str> = self.prefix.iter().map(String::as_str).collect();
        argv.extend(["sh", "-s"]);
        let mut child = tokio::process::Command::new(argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(err)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).await.map_err(err)?;
        }
        let out = child.wait_with_output().await.map_err(err)?;
        Ok(CmdOutput {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            status: out.status.code().unwrap_or(-1),
        })
    }
}

/// Counts round trips: wraps another transport (used by tests and the benchmark).
pub struct Counting {
    inner: Arc<dyn Transport>,
    pub calls: AtomicUsize,
}

impl Counting {
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Counting {
            inner,
            calls: AtomicUsize::new(0),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Transport for Counting {
    fn host(&self) -> &str {
        self.inner.host()
    }

    async fn run(&self, script: &str) -> Result<CmdOutput, TransportError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.run(script).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_runs_scripts_and_uploads_atomically() {
        let t = LocalTransport::new("here");
        let out = t.run("echo out; echo err >&2; exit 3").await.unwrap();
        assert_eq!(
            out,
            CmdOutput {
                stdout: "out\n".into(),
                stderr: "err\n".into(),
                status: 3
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/f.bin");
        let data = b"\x00\xffbinary\n'quote' $(x)";
        t.upload(path.to_str().unwrap(), data, "0600").await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let f = t.facts().await.unwrap();
        assert_eq!(f.package_manager, "apt");
    }

    #[test]
    fn facts_parse() {
        let f = parse_facts("os rhel fedora\npm dnf\ninit systemd\n");
        assert_eq!(
            f,
            Facts {
                os_family: "rhel".into(),
                package_manager: "dnf".into(),
                init: "systemd".into()
            }
        );
        // ID_LIKE words (or ID) name the family; others are kept as they are.
        for (release, family) in [
            ("os debian", "debian"),
            ("os ubuntu debian", "debian"),
            ("os rocky rhel centos fedora", "rhel"),
            ("os almalinux", "rhel"),
            ("os fedora", "rhel"),
            ("os arch", "arch"),
            ("os suse opensuse", "suse"),
        ] {
            assert_eq!(parse_facts(release).os_family, family, "{release}");
        }
    }
}
