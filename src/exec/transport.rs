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

/// Which output stream a chunk of a command's output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Most output kept of one stream of one command (observe reads files up to
/// 1 MiB, base64: a few MiB at most); the rest is counted and dropped.
pub const MAX_CAPTURE: usize = 16 << 20;

/// How long one command may run (`LVSLAB_COMMAND_TIMEOUT` seconds, else 15
/// minutes: package installs on a slow mirror take minutes).
pub fn command_timeout() -> std::time::Duration {
    let secs = std::env::var("LVSLAB_COMMAND_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(900);
    std::time::Duration::from_secs(secs)
}

/// A command's output as it is captured: at most [`MAX_CAPTURE`] bytes per
/// stream are kept, and a note says how much was dropped.
#[derive(Default)]
pub struct Capture {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    dropped: [usize; 2],
}

impl Capture {
    pub fn push(&mut self, stream: Stream, data: &[u8]) {
        let (buf, dropped) = match stream {
            Stream::Stdout => (&mut self.stdout, &mut self.dropped[0]),
            Stream::Stderr => (&mut self.stderr, &mut self.dropped[1]),
        };
        let room = MAX_CAPTURE.saturating_sub(buf.len()).min(data.len());
        buf.extend_from_slice(&data[..room]);
        *dropped += data.len() - room;
    }

    pub fn finish(self, status: i32) -> CmdOutput {
        let mut stderr = String::from_utf8_lossy(&self.stderr).into_owned();
        for (name, n) in ["stdout", "stderr"].iter().zip(self.dropped) {
            if n > 0 {
                stderr.push_str(&format!(
                    "\n[lvslab: {n} more bytes of {name} dropped; at most {MAX_CAPTURE} are kept]\n"
                ));
            }
        }
        CmdOutput {
            stdout: String::from_utf8_lossy(&self.stdout).into_owned(),
            stderr,
            status,
        }
    }
}

/// Where streamed output goes, chunk by chunk.
pub type Sink<'a> = &'a mut (dyn FnMut(Stream, &[u8]) + Send);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{host}: the command did not finish within {secs} s (stopped; LVSLAB_COMMAND_TIMEOUT sets the limit)")]
    Timeout { host: String, secs: u64 },
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
        "{host}: HOST KEY CHANGED for {addr}: it now offers {fingerprint} ({}), which does not match the {} key in {file} line {line}; refusing to connect (someone may be intercepting, or the host was reinstalled: if so, remove that line)",
        algorithms.0,
        algorithms.1
    )]
    ChangedHostKey {
        host: String,
        addr: String,
        fingerprint: String,
        /// The offered key's algorithm, and the recorded one's.
        algorithms: Box<(String, String)>,
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

    /// Run `script` with `sh -s` on the host, handing its output to `sink`
    /// as it comes (nothing is buffered here); returns the exit status. Bounded
    /// by [`command_timeout`].
    async fn run_streaming(&self, script: &str, sink: Sink<'_>) -> Result<i32, TransportError>;

    /// Run `script` with `sh -s` on the host: one round trip. Output beyond
    /// [`MAX_CAPTURE`] per stream is dropped (and said so).
    async fn run(&self, script: &str) -> Result<CmdOutput, TransportError> {
        let mut cap = Capture::default();
        let status = self.run_streaming(script, &mut |s, d| cap.push(s, d)).await?;
        Ok(cap.finish(status))
    }

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
    timeout: std::time::Duration,
}

impl LocalTransport {
    pub fn new(host: impl Into<String>) -> Self {
        Self::with_prefix(host, Vec::new())
    }

    pub fn with_prefix(host: impl Into<String>, prefix: Vec<String>) -> Self {
        LocalTransport {
            host: host.into(),
            prefix,
            timeout: command_timeout(),
        }
    }

    /// Another limit than [`command_timeout`] for each command.
    pub fn timeout(mut self, limit: std::time::Duration) -> Self {
        self.timeout = limit;
        self
    }
}

#[async_trait]
impl Transport for LocalTransport {
    fn host(&self) -> &str {
        &self.host
    }

    async fn run_streaming(&self, script: &str, sink: Sink<'_>) -> Result<i32, TransportError> {
        use tokio::io::AsyncReadExt;
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
        let stdin = child.stdin.take();
        let (Some(mut out), Some(mut errs)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(err(std::io::Error::other("no pipes to the command")));
        };
        let script = script.as_bytes().to_vec();
        let work = async {
            // The script is written while output is read: a script larger
            // than a pipe never deadlocks against its own output.
            let feed = async move {
                if let Some(mut stdin) = stdin {
                    let _ = stdin.write_all(&script).await;
                }
            };
            let read = async {
                let (mut b1, mut b2) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
                let (mut out_open, mut err_open) = (true, true);
                while out_open || err_open {
                    tokio::select! {
                        n = out.read(&mut b1), if out_open => match n {
                            Ok(0) | Err(_) => out_open = false,
                            Ok(n) => sink(Stream::Stdout, &b1[..n]),
                        },
                        n = errs.read(&mut b2), if err_open => match n {
                            Ok(0) | Err(_) => err_open = false,
                            Ok(n) => sink(Stream::Stderr, &b2[..n]),
                        },
                    }
                }
            };
            tokio::join!(feed, read);
            child.wait().await
        };
        let limit = self.timeout;
        match tokio::time::timeout(limit, work).await {
            Ok(status) => Ok(status.map_err(err)?.code().unwrap_or(-1)),
            Err(_) => Err(TransportError::Timeout {
                host: self.host.clone(),
                secs: limit.as_secs(),
            }),
        }
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

    async fn run_streaming(&self, script: &str, sink: Sink<'_>) -> Result<i32, TransportError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.run_streaming(script, sink).await
    }
}

/// A host to run on: its transport, or why there is none. Cloning shares
/// the connection.
#[derive(Clone)]
pub struct HostConn {
    pub host: String,
    pub transport: Result<Arc<dyn Transport>, String>,
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

    /// Output beyond the cap is dropped (and said so), not gathered; a
    /// command that does not finish is stopped at its limit.
    #[tokio::test]
    async fn output_is_capped_and_commands_are_timed() {
        let t = LocalTransport::new("here");
        let big = MAX_CAPTURE + 3_000_000;
        let out = t.run(&format!("head -c {big} /dev/zero; echo done >&2")).await.unwrap();
        assert_eq!(out.stdout.len(), MAX_CAPTURE);
        assert!(
            out.stderr.starts_with("done\n") && out.stderr.contains("3000000 more bytes of stdout dropped"),
            "{}",
            out.stderr
        );
        let mut streamed = 0;
        let status = t
            .run_streaming(&format!("head -c {big} /dev/zero"), &mut |_, d| streamed += d.len())
            .await
            .unwrap();
        assert_eq!((status, streamed), (0, big), "streaming hands over everything");
        let started = std::time::Instant::now();
        let slow = LocalTransport::new("here").timeout(std::time::Duration::from_millis(500));
        let e = slow.run("sleep 30").await.unwrap_err();
        assert!(matches!(e, TransportError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
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
