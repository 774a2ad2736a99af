//! The SSH transport, on russh (no `ssh` binary involved). One connection per
//! host, reused for every round trip; host keys verified against known_hosts.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};

use super::transport::{Sink, Stream, Transport, TransportError, command_timeout};
use crate::state::Reach;

/// Everything needed to reach one host: its [`Reach`] (the settings, as kept
/// in the lab state), plus what only a run decides.
#[derive(Debug, Clone)]
pub struct SshConnect {
    /// The lab host's name (for messages).
    pub host: String,
    pub reach: Reach,
    pub accept_new_host_keys: bool,
    /// `reach.jump`, parsed.
    pub jump: Option<Box<SshConnect>>,
}

impl std::ops::Deref for SshConnect {
    type Target = Reach;
    fn deref(&self) -> &Reach {
        &self.reach
    }
}

impl SshConnect {
    pub fn new(host: &str, reach: &Reach, accept_new_host_keys: bool) -> Result<SshConnect, String> {
        let mut c = SshConnect {
            host: host.to_string(),
            reach: reach.clone(),
            accept_new_host_keys,
            jump: None,
        };
        if let Some(j) = &reach.jump {
            c.jump = Some(Box::new(c.jump_from(j)?));
        }
        Ok(c)
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.connect_timeout_secs))
    }

    /// Parse a jump host written `[user@]host[:port]`; it inherits key,
    /// known_hosts and timeouts from `self`.
    fn jump_from(&self, spec: &str) -> Result<SshConnect, String> {
        let (user, rest) = match spec.split_once('@') {
            Some((u, r)) => (u.to_string(), r),
            None => (self.user.clone(), spec),
        };
        let (address, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("bad port in jump host `{spec}`"))?,
            ),
            None => (rest.to_string(), 22),
        };
        if address.is_empty() || user.is_empty() {
            return Err(format!("jump host `{spec}` is not [user@]host[:port]"));
        }
        Ok(SshConnect {
            host: format!("{} (jump)", self.host),
            reach: Reach {
                address,
                port,
                user,
                jump: None,
                become_root: false,
                ..self.reach.clone()
            },
            accept_new_host_keys: self.accept_new_host_keys,
            jump: None,
        })
    }
}

struct Client {
    target: SshConnect,
    problem: Arc<Mutex<Option<TransportError>>>,
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// What known_hosts files say of a host's offered key.
#[derive(Debug, PartialEq, Eq)]
pub enum HostKeyVerdict {
    /// Recorded: connect.
    Known,
    /// The host is recorded, but not with this key: under the same algorithm
    /// or another one (an impostor offering only RSA where ed25519 is pinned
    /// is as suspect as a changed ed25519 key). Never learned.
    Changed {
        file: String,
        line: usize,
        recorded: String,
    },
    /// No key of any type is recorded for the host: may be learned.
    Unknown,
}

/// Judge `key` offered by `host:port` against known_hosts files. A host known
/// under any key type is never "unknown" (as OpenSSH's `accept-new`).
pub fn judge_host_key(
    host: &str,
    port: u16,
    key: &PublicKey,
    files: &[std::path::PathBuf],
) -> Result<HostKeyVerdict, String> {
    let mut first_recorded = None;
    for file in files {
        if !file.exists() {
            continue;
        }
        let recorded = russh::keys::known_hosts::known_host_keys_path(host, port, file)
            .map_err(|e| format!("reading {}: {e}", file.display()))?;
        for (line, k) in recorded {
            if k.key_data() == key.key_data() {
                return Ok(HostKeyVerdict::Known);
            }
            first_recorded.get_or_insert(HostKeyVerdict::Changed {
                file: file.display().to_string(),
                line,
                recorded: k.algorithm().to_string(),
            });
        }
    }
    Ok(first_recorded.unwrap_or(HostKeyVerdict::Unknown))
}

impl Client {
    fn verify(&self, key: &PublicKey) -> Result<bool, TransportError> {
        let t = &self.target;
        let fp = fingerprint(key);
        let verdict =
            judge_host_key(&t.address, t.port, key, &t.known_hosts).map_err(|message| TransportError::Other {
                host: t.host.clone(),
                message,
            })?;
        match verdict {
            HostKeyVerdict::Known => return Ok(true),
            HostKeyVerdict::Changed { file, line, recorded } => {
                return Err(TransportError::ChangedHostKey {
                    host: t.host.clone(),
                    addr: t.addr(),
                    fingerprint: fp,
                    algorithms: Box::new((key.algorithm().to_string(), recorded)),
                    file,
                    line,
                });
            }
            HostKeyVerdict::Unknown => {}
        }
        let files = t
            .known_hosts
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        match (t.accept_new_host_keys, t.known_hosts.first()) {
            (true, Some(file)) => {
                learn(file, &t.address, t.port, key).map_err(|e| TransportError::Other {
                    host: t.host.clone(),
                    message: format!("recording the host key in {}: {e}", file.display()),
                })?;
                Ok(true)
            }
            _ => Err(TransportError::UnknownHostKey {
                host: t.host.clone(),
                addr: t.addr(),
                fingerprint: fp,
                files,
            }),
        }
    }
}

/// Append `[host]:port key` (or `host key` on port 22) to a known_hosts file.
fn learn(file: &std::path::Path, host: &str, port: u16, key: &PublicKey) -> Result<(), String> {
    use std::io::Write;
    let line = key.to_openssh().map_err(|e| e.to_string())?;
    let name = if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    };
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let existing = std::fs::read(file).unwrap_or_default();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .map_err(|e| e.to_string())?;
    let sep = if existing.is_empty() || existing.ends_with(b"\n") {
        ""
    } else {
        "\n"
    };
    writeln!(f, "{sep}{name} {line}").map_err(|e| e.to_string())
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let key = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            PublicKeyOrCertificate::Certificate(c) => c.public_key().clone().into(),
        };
        match self.verify(&key) {
            Ok(ok) => Ok(ok),
            Err(e) => {
                if let Ok(mut p) = self.problem.lock() {
                    *p = Some(e);
                }
                Ok(false)
            }
        }
    }
}

pub struct SshTransport {
    host: String,
    handle: Handle<Client>,
    become_root: bool,
    /// Kept open while the connection through it is used.
    _jump: Option<Box<SshTransport>>,
}

fn config() -> Arc<client::Config> {
    Arc::new(client::Config {
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    })
}

impl SshTransport {
    /// Connect (through the jump host if any), verify the host key and authenticate.
    pub async fn connect(t: &SshConnect) -> Result<SshTransport, TransportError> {
        let fut = Self::connect_inner(t);
        match tokio::time::timeout(t.connect_timeout(), fut).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Connect {
                host: t.host.clone(),
                addr: t.addr(),
                reason: format!("no answer within {}s (connect_timeout)", t.connect_timeout_secs),
            }),
        }
    }

    async fn connect_inner(t: &SshConnect) -> Result<SshTransport, TransportError> {
        let problem = Arc::new(Mutex::new(None));
        let handler = Client {
            target: t.clone(),
            problem: Arc::clone(&problem),
        };
        let connect_err = |e: russh::Error| {
            let recorded = problem.lock().ok().and_then(|mut p| p.take());
            recorded.unwrap_or_else(|| TransportError::Connect {
                host: t.host.clone(),
                addr: t.addr(),
                reason: e.to_string(),
            })
        };
        let (mut handle, jump) = match &t.jump {
            None => {
                let h = client::connect(config(), (t.address.as_str(), t.port), handler)
                    .await
                    .map_err(connect_err)?;
                (h, None)
            }
            Some(j) => {
                let jump = Box::pin(SshTransport::connect(j)).await?;
                let channel = jump
                    .handle
                    .channel_open_direct_tcpip(t.address.clone(), u32::from(t.port), "127.0.0.1", 0)
                    .await
                    .map_err(|e| TransportError::Connect {
                        host: t.host.clone(),
                        addr: t.addr(),
                        reason: format!("through jump host {}: {e}", j.addr()),
                    })?;
                let h = client::connect_stream(config(), channel.into_stream(), handler)
                    .await
                    .map_err(connect_err)?;
                (h, Some(Box::new(jump)))
            }
        };
        authenticate(&mut handle, t).await?;
        Ok(SshTransport {
            host: t.host.clone(),
            handle,
            become_root: t.become_root && t.user != "root",
            _jump: jump,
        })
    }

    pub async fn close(&self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
    }
}

async fn authenticate(handle: &mut Handle<Client>, t: &SshConnect) -> Result<(), TransportError> {
    let mut tried = Vec::new();
    let other = |message: String| TransportError::Other {
        host: t.host.clone(),
        message,
    };
    let hash = handle.best_supported_rsa_hash().await.ok().flatten().flatten();

    let mut keyfiles: Vec<PathBuf> = Vec::new();
    if let Some(k) = &t.key {
        keyfiles.push(k.clone());
    } else {
        // ssh-agent first, as OpenSSH does.
        if let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_env().await
            && let Ok(ids) = agent.request_identities().await
        {
            for id in ids {
                let key = id.public_key().into_owned();
                tried.push(format!("agent key {}", fingerprint(&key)));
                if let Ok(r) = handle.authenticate_publickey_with(&t.user, key, hash, &mut agent).await
                    && r.success()
                {
                    return Ok(());
                }
            }
        }
        if let Some(home) = std::env::home_dir() {
            for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let p = home.join(".ssh").join(name);
                if p.exists() {
                    keyfiles.push(p);
                }
            }
        }
    }
    for path in keyfiles {
        let passphrase = t.passphrase_env.as_ref().and_then(|v| std::env::var(v).ok());
        let key = match russh::keys::load_secret_key(&path, passphrase.as_deref()) {
            Ok(k) => k,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                return Err(other(format!(
                    "key {} is encrypted: name the environment variable holding its passphrase with `ssh.passphrase_env`",
                    path.display()
                )));
            }
            Err(e) if t.key.is_some() => return Err(other(format!("cannot load key {}: {e}", path.display()))),
            Err(_) => continue,
        };
        tried.push(format!("key {}", path.display()));
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        let r = handle
            .authenticate_publickey(&t.user, key)
            .await
            .map_err(|e| other(format!("authentication: {e}")))?;
        if r.success() {
            return Ok(());
        }
    }
    if tried.is_empty() {
        tried.push("no key: set ssh.key, or run an ssh-agent".into());
    }
    Err(TransportError::Auth {
        host: t.host.clone(),
        user: t.user.clone(),
        tried: tried.join(", "),
    })
}

#[async_trait]
impl Transport for SshTransport {
    fn host(&self) -> &str {
        &self.host
    }

    async fn run_streaming(&self, script: &str, sink: Sink<'_>) -> Result<i32, TransportError> {
        let err = |e: russh::Error| TransportError::Other {
            host: self.host.clone(),
            message: format!("ssh: {e}"),
        };
        let work = async {
            let mut ch = self.handle.channel_open_session().await.map_err(err)?;
            // sudo resets the environment: SSH_CONNECTION is passed on, for the
            // default-route guard (plan::default_route_guard).
            let cmd = if self.become_root {
                "sudo -n env SSH_CONNECTION=\"$SSH_CONNECTION\" sh -s"
            } else {
                "sh -s"
            };
            ch.exec(true, cmd).await.map_err(err)?;
            ch.data(script.as_bytes()).await.map_err(err)?;
            ch.eof().await.map_err(err)?;
            let mut status = -1;
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => sink(Stream::Stdout, &data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => sink(Stream::Stderr, &data),
                    ChannelMsg::ExitStatus { exit_status } => status = exit_status as i32,
                    _ => {}
                }
            }
            Ok(status)
        };
        let limit = command_timeout();
        match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                host: self.host.clone(),
                secs: limit.as_secs(),
            }),
        }
    }
}

#[cfg(test)]
mod host_key_tests {
    use super::*;

    fn keygen(dir: &std::path::Path, name: &str, kind: &str, bits: &str) -> PublicKey {
        let path = dir.join(name);
        let st = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-b", bits, "-N", "", "-f"])
            .arg(&path)
            .status()
            .expect("ssh-keygen (openssh-client)");
        assert!(st.success());
        let text = std::fs::read_to_string(path.with_extension("pub")).unwrap();
        PublicKey::from_openssh(text.trim()).unwrap()
    }

    /// Every pair of key types: a host recorded under any type is never
    /// "unknown" (so never learned); only the very key recorded is known.
    #[test]
    fn a_host_known_under_any_key_type_is_never_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let kinds = [
            ("ed25519", "ed25519", "256"),
            ("rsa", "rsa", "2048"),
            ("ecdsa256", "ecdsa", "256"),
            ("ecdsa384", "ecdsa", "384"),
            ("ecdsa521", "ecdsa", "521"),
        ];
        let keys: Vec<(PublicKey, PublicKey)> = kinds
            .iter()
            .map(|(n, k, b)| {
                (
                    keygen(dir.path(), &format!("{n}-a"), k, b),
                    keygen(dir.path(), &format!("{n}-b"), k, b),
                )
            })
            .collect();
        let file = dir.path().join("known_hosts");
        let files = [file.clone()];
        for (i, (pinned, _)) in keys.iter().enumerate() {
            std::fs::write(
                &file,
                format!(
                    "other.example {}
[10.0.0.1]:2222 {}
",
                    keys[(i + 1) % keys.len()].0.to_openssh().unwrap(),
                    pinned.to_openssh().unwrap()
                ),
            )
            .unwrap();
            assert_eq!(
                judge_host_key("10.0.0.1", 2222, pinned, &files).unwrap(),
                HostKeyVerdict::Known
            );
            for (j, (a, b)) in keys.iter().enumerate() {
                for offered in [a, b] {
                    if offered == pinned {
                        continue;
                    }
                    let v = judge_host_key("10.0.0.1", 2222, offered, &files).unwrap();
                    assert!(
                        matches!(&v, HostKeyVerdict::Changed { line: 2, recorded, .. } if *recorded == pinned.algorithm().to_string()),
                        "pinned {}, offered {} ({j}): {v:?}",
                        kinds[i].0,
                        kinds[j].0
                    );
                }
            }
            // Another port or address is another host: unknown.
            assert_eq!(
                judge_host_key("10.0.0.1", 22, &keys[j_other(i)].0, &files).unwrap(),
                HostKeyVerdict::Unknown
            );
        }
    }

    fn j_other(i: usize) -> usize {
        (i + 2) % 5
    }
}
