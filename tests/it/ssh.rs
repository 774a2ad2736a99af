//! `up` / `down` over SSH against real OpenSSH servers started by the tests on
//! 127.0.0.1 (random ports, temporary host and user keys). Every resource the
//! test labs touch lives under a temporary directory; this machine's network
//! and sysctls are never changed. sshd must be installed (.ci/run installs
//! openssh-server): a missing sshd fails these tests, it never skips them.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Lvslab, Output};

const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub port: u16,
    pub host_key: PathBuf,
    child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path, kind: &str) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "lvslab-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs (package openssh-client)");
    assert!(st.success());
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The user these tests run as: the loopback sshd (started by the test, as
/// that user) can only let that user in, so the SSH tier needs no root.
pub fn me() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8(out.stdout)
        .expect("user name is UTF-8")
        .trim()
        .to_string()
}

/// A test lab directory: user key, known_hosts, state, and a work area.
pub struct Lab {
    pub dir: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("userkey"), "ed25519");
        std::fs::create_dir_all(dir.path().join("home/.ssh")).unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        Lab { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn work(&self) -> String {
        self.path("work").display().to_string()
    }

    /// Start an sshd that accepts this lab's user key.
    pub fn sshd(&self, name: &str) -> Sshd {
        self.sshd_with(name, "")
    }

    /// [`Lab::sshd`] whose every command first appends a line to
    /// `NAME/sessions`: a count of round trips, as the server saw them.
    pub fn sshd_counting(&self, name: &str) -> Sshd {
        let log = self.path(name).join("sessions");
        self.sshd_with(
            name,
            &format!(
                "ForceCommand echo x >> {}; exec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
                log.display()
            ),
        )
    }

    /// The round trips an [`Lab::sshd_counting`] server has seen since the last call.
    pub fn sessions(&self, name: &str) -> usize {
        let log = self.path(name).join("sessions");
        let n = std::fs::read_to_string(&log).map_or(0, |s| s.lines().count());
        let _ = std::fs::remove_file(&log);
        n
    }

    fn sshd_with(&self, name: &str, extra: &str) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: apt-get install openssh-server (.ci/run does)"
        );
        if rustix::process::geteuid().is_root() {
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let d = self.path(name);
        std::fs::create_dir_all(&d).unwrap();
        let host_key = d.join("hostkey");
        if !host_key.exists() {
            keygen(&host_key, "ed25519");
        }
        std::fs::copy(self.path("userkey.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile none\n\
                 StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nUsePAM no\nAllowTcpForwarding yes\nMaxStartups 100\nMaxSessions 100\n{extra}",
                hk = host_key.display(),
                ak = d.join("authorized_keys").display()
            ),
        )
        .unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Sshd { port, host_key, child }
    }

    /// Write a topology whose hosts all reach `port`, with `hosts` as the hosts section.
    pub fn topology(&self, name: &str, port: u16, hosts: &str) -> PathBuf {
        let text = format!(
            "lab: {name}\nmode: dr\nprovider: ssh\nnetworks:\n  lan: {{ cidr: 10.99.0.0/24 }}\n\
             defaults:\n  init: daemon\n  packages: false\n  own_addresses: false\n  ssh: {{ host: 127.0.0.1, port: {port}, user: {user}, key: userkey, known_hosts: known_hosts, connect_timeout: 3 }}\n\
             hosts:\n{hosts}",
            user = me()
        );
        let path = self.path(&format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn lvslab<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Lvslab {
        Lvslab::new()
            .args(args)
            .env("HOME", self.path("home"))
            .env("LVSLAB_STATE_DIR", self.path("state"))
            .env_remove_agent()
    }
}

trait NoAgent {
    fn env_remove_agent(self) -> Self;
}

impl NoAgent for Lvslab {
    fn env_remove_agent(self) -> Self {
        self.env("SSH_AUTH_SOCK", "/nonexistent")
    }
}

/// Alive and not a zombie (this sandbox's init may not reap orphans at once).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

fn ok(out: &Output) {
    assert_eq!(out.code, 0, "stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
}

/// The recap row of a host: (ok, changed, failed, skipped).
pub fn recap(out: &Output, host: &str) -> (usize, usize, usize, usize) {
    let line = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(host))
        .unwrap_or_else(|| panic!("no recap line for {host}:\n{}", out.stdout));
    let n: Vec<usize> = line
        .split_whitespace()
        .skip(1)
        .take(4)
        .map(|x| x.parse().unwrap())
        .collect();
    (n[0], n[1], n[2], n[3])
}

pub fn box_steps(work: &str) -> String {
    format!(
        r#"  box1:
    role: client
    interfaces: [{{ network: lan }}]
    steps:
      - command: {{ name: marker, check: "test -f {work}/marker", run: "touch {work}/marker", revert: "rm -f {work}/marker" }}
        phase: network
        why: a command with its own check
      - directory: {{ path: {work}/site, mode: "0750" }}
        why: a directory lvslab creates
      - file: {{ path: {work}/site/index.html, content: "<h1>{{{{ host.name }}}}</h1>\n", render: true }}
        why: a file lvslab creates
      - file: {{ path: {work}/existing.conf, content: "managed\n", mode: "0644" }}
        why: a file that existed before, replaced
      - service: {{ name: sleeper, unit: sleeper, command: "sleep 600", state_dir: {work}/run, restart_on: [{work}/site/index.html] }}
        why: a daemon restarted when its page changes
"#
    )
}

#[test]
fn up_is_idempotent_check_changes_nothing_and_down_restores_exactly() {
    let lab = Lab::new();
    let sshd = lab.sshd("sshd");
    let work = lab.work();
    std::fs::write(format!("{work}/existing.conf"), "original\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(format!("{work}/existing.conf"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let topo = lab.topology("idem", sshd.port, &box_steps(&work));

    let first = lab
        .lvslab(&["up".as_ref(), topo.as_os_str(), "--accept-new-host-keys".as_ref()])
        .run();
    ok(&first);
    assert_eq!(recap(&first, "box1"), (0, 5, 0, 0), "{}", first.stderr);
    assert_eq!(
        std::fs::read_to_string(format!("{work}/site/index.html")).unwrap(),
        "<h1>box1</h1>\n"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{work}/existing.conf")).unwrap(),
        "managed\n"
    );
    let pid: u32 = std::fs::read_to_string(format!("{work}/run/sleeper.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(running(pid), "the daemon runs");

    let second = lab.lvslab(&["up".as_ref(), topo.as_os_str()]).run();
    ok(&second);
    assert_eq!(recap(&second, "box1"), (5, 0, 0, 0), "a second up changes nothing");

    // A hand edit: --check shows it (with a diff) and changes nothing.
    std::fs::write(format!("{work}/site/index.html"), "tampered\n").unwrap();
    let check = lab.lvslab(&["up".as_ref(), topo.as_os_str(), "--check".as_ref()]).run();
    ok(&check);
    assert!(
        check.stderr.contains("would change [services] box1: file"),
        "{}",
        check.stderr
    );
    assert!(
        check.stderr.contains("-tampered") && check.stderr.contains("+<h1>box1</h1>"),
        "{}",
        check.stderr
    );
    assert!(
        check.stderr.contains("would change [services] box1: service sleeper"),
        "the restart follows the file"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{work}/site/index.html")).unwrap(),
        "tampered\n"
    );

    // up repairs it and restarts the daemon because its page changed.
    let repair = lab.lvslab(&["up".as_ref(), topo.as_os_str()]).run();
    ok(&repair);
    assert_eq!(recap(&repair, "box1"), (3, 2, 0, 0), "{}", repair.stderr);
    let pid2: u32 = std::fs::read_to_string(format!("{work}/run/sleeper.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(pid, pid2, "restarted");
    assert!(!running(pid), "the old daemon is gone");

    let down = lab.lvslab(&["down".as_ref(), topo.as_os_str()]).run();
    ok(&down);
    assert_eq!(
        std::fs::read_to_string(format!("{work}/existing.conf")).unwrap(),
        "original\n"
    );
    let mode = std::fs::metadata(format!("{work}/existing.conf"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the original mode is back too");
    assert!(
        !Path::new(&format!("{work}/site")).exists(),
        "created directory removed"
    );
    assert!(!Path::new(&format!("{work}/marker")).exists(), "command reverted");
    assert!(!running(pid2), "daemon stopped");

    let again = lab.lvslab(&["down".as_ref(), topo.as_os_str()]).run();
    ok(&again);
    assert!(again.stderr.contains("is not up here"), "{}", again.stderr);
}

#[test]
fn host_keys_unknown_then_accepted_and_changed_always_refused() {
    let lab = Lab::new();
    let sshd = lab.sshd("sshd");
    let work = lab.work();
    let hosts = format!(
        "  box1:\n    role: client\n    interfaces: [{{ network: lan }}]\n    steps:\n      - file: {{ path: {work}/f, content: x }}\n        why: something\n"
    );
    let topo = lab.topology("keys", sshd.port, &hosts);

    let unknown = lab.lvslab(&["up".as_ref(), topo.as_os_str()]).run();
    assert_eq!(unknown.code, 1);
    let fp = String::from_utf8(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(sshd.host_key.with_extension("pub"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        unknown
            .stdout
            .contains(&format!("unknown host key {fp} for 127.0.0.1:{}", sshd.port)),
        "{}",
        unknown.stdout
    );
    assert!(
        unknown.stdout.contains(&lab.path("known_hosts").display().to_string()),
        "names the file"
    );
    assert!(!Path::new(&format!("{work}/f")).exists());

    let accepted = lab
        .lvslab(&["up".as_ref(), topo.as_os_str(), "--accept-new-host-keys".as_ref()])
        .run();
    ok(&accepted);
    let known = std::fs::read_to_string(lab.path("known_hosts")).unwrap();
    assert!(
        known.starts_with(&format!("[127.0.0.1]:{} ssh-ed25519 ", sshd.port)),
        "{known}"
    );

    // Same address and port, another host key: refused, even with the flag.
    drop(sshd);
    std::fs::remove_file(lab.path("sshd/hostkey")).unwrap();
    std::fs::remove_file(lab.path("sshd/hostkey.pub")).unwrap();
    let port = {
        let s = lab.sshd("sshd");
        let p = s.port;
        std::mem::forget(s); // keep it running; killed below
        p
    };
    let topo = lab.topology("keys", port, &hosts);
    std::fs::write(lab.path("known_hosts"), known.replace(&format!(":{}]", 0), "")).unwrap();
    // Record the old key for the new port so the key, not the port, differs.
    let old_key_line = known.lines().next().unwrap().split_once(' ').unwrap().1.to_string();
    std::fs::write(lab.path("known_hosts"), format!("[127.0.0.1]:{port} {old_key_line}\n")).unwrap();
    let changed = lab
        .lvslab(&["up".as_ref(), topo.as_os_str(), "--accept-new-host-keys".as_ref()])
        .run();
    let _ = Command::new("pkill")
        .args(["-f", &lab.path("sshd/sshd_config").display().to_string()])
        .status();
    assert_eq!(changed.code, 1, "{}", changed.stdout);
    assert!(changed.stdout.contains("HOST KEY CHANGED"), "{}", changed.stdout);
    assert!(changed.stdout.contains("known_hosts line 1"), "{}", changed.stdout);
    assert_eq!(
        std::fs::read_to_string(lab.path("known_hosts"))
            .unwrap()
            .lines()
            .count(),
        1,
        "a changed key is never recorded"
    );
}

#[test]
fn wrong_user_key_and_closed_port_give_clear_errors() {
    let lab = Lab::new();
    let sshd = lab.sshd("sshd");
    let hosts = "  box1:\n    role: client\n    interfaces: [{ network: lan }]\n    steps:\n      - command: { name: x, check: \"true\", run: \"true\" }\n        why: something\n";
    // Another key than the one sshd accepts.
    keygen(&lab.path("otherkey"), "ecdsa");
    let topo = lab.topology("auth", sshd.port, hosts);
    let text = std::fs::read_to_string(&topo)
        .unwrap()
        .replace("key: userkey", "key: otherkey");
    std::fs::write(&topo, text).unwrap();
    let out = lab
        .lvslab(&["up".as_ref(), topo.as_os_str(), "--accept-new-host-keys".as_ref()])
        .run();
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains(&format!("box1: authentication as {} failed (tried: key ", me())),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("otherkey"), "{}", out.stdout);

    let closed = free_port();
    let topo = lab.topology("closed", closed, hosts);
    let start = Instant::now();
    let out = lab.lvslab(&["up".as_ref(), topo.as_os_str()]).run();
    assert_eq!(out.code, 1);
    assert!(start.elapsed() < Duration::from_secs(10), "within the connect timeout");
    assert!(
        out.stdout
            .contains(&format!("box1: cannot connect to 127.0.0.1:{closed}")),
        "{}",
        out.stdout
    );
}

#[test]
fn a_failing_step_stops_its_host_and_no_later_phase_starts() {
    let lab = Lab::new();
    let sshd = lab.sshd("sshd");
    let w = lab.work();
    let hosts = format!(
        r#"  a:
    role: client
    interfaces: [{{ network: lan }}]
    steps:
      - file: {{ path: {w}/a1, content: one }}
        why: first
      - command: {{ name: boom, check: "false", run: "echo it broke >&2; exit 3" }}
        why: fails
      - file: {{ path: {w}/a3, content: three }}
        why: after the failure
      - file: {{ path: {w}/a-balancer, content: late }}
        phase: balancer
        why: a later phase
  b:
    role: client
    interfaces: [{{ network: lan }}]
    steps:
      - file: {{ path: {w}/b1, content: one }}
        why: the other host finishes the phase
      - file: {{ path: {w}/b-balancer, content: late }}
        phase: balancer
        why: a later phase
"#
    );
    let topo = lab.topology("fail", sshd.port, &hosts);
    let out = lab
        .lvslab(&["up".as_ref(), topo.as_os_str(), "--accept-new-host-keys".as_ref()])
        .run();
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(recap(&out, "a"), (0, 1, 1, 2), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(recap(&out, "b"), (0, 1, 0, 1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("FAILED       [services] a: command: boom"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("it broke"), "{}", out.stderr);
    assert!(Path::new(&format!("{w}/a1")).exists());
    assert!(!Path::new(&format!("{w}/a3")).exists(), "the failed host stopped");
    assert!(
        Path::new(&format!("{w}/b1")).exists(),
        "the other host finished the phase"
    );
    assert!(
        !Path::new(&format!("{w}/b-balancer")).exists(),
        "no later phase started"
    );
}

#[test]
fn jump_host_through_a_second_sshd() {
    let lab = Lab::new();
    let target = lab.sshd("target");
    let jump = lab.sshd("jump");
    let w = lab.work();
    let hosts = format!(
        "  box1:\n    role: client\n    interfaces: [{{ network: lan }}]\n    ssh: {{ jump: \"{}@127.0.0.1:{}\" }}\n    steps:\n      - command: {{ name: where, check: \"test -f {w}/jumped\", run: \"echo $SSH_CONNECTION > {w}/jumped\" }}\n        why: records how it was reached\n",
        me(),
        jump.port
    );
    let topo = lab.topology("jump", target.port, &hosts);
    let out = lab
        .lvslab(&["up".as_ref(), topo.as_os_str(), "--accept-new-host-keys".as_ref()])
        .run();
    ok(&out);
    let conn = std::fs::read_to_string(format!("{w}/jumped")).unwrap();
    // SSH_CONNECTION = client-ip client-port server-ip server-port: the target saw the jump host's forwarded connection.
    assert!(conn.trim().ends_with(&format!("127.0.0.1 {}", target.port)), "{conn}");
    let known = std::fs::read_to_string(lab.path("known_hosts")).unwrap();
    assert_eq!(known.lines().count(), 2, "both keys verified and recorded: {known}");
}

#[test]
fn two_concurrent_ups_on_one_lab_the_second_is_refused() {
    let lab = Lab::new();
    let sshd = lab.sshd("sshd");
    let w = lab.work();
    let hosts = format!(
        "  box1:\n    role: client\n    interfaces: [{{ network: lan }}]\n    steps:\n      - command: {{ name: slow, check: \"test -f {w}/slow\", run: \"sleep 3; touch {w}/slow\" }}\n        why: takes a while\n"
    );
    let topo = lab.topology("locked", sshd.port, &hosts);
    let first = lab
        .lvslab(&["up".as_ref(), topo.as_os_str(), "--accept-new-host-keys".as_ref()])
        .spawn();
    // Wait until the first holds the lock (its state directory has a lock file with its pid).
    let lock = lab.path("state/locked/lock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.contains(&first.id().to_string())) {
        assert!(Instant::now() < deadline, "first up never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = lab.lvslab(&["up".as_ref(), topo.as_os_str()]).run();
    assert_eq!(second.code, 1);
    assert!(
        second.stderr.contains(&format!(
            "lab locked is being changed by another lvslab process (pid {})",
            first.id()
        )),
        "{}",
        second.stderr
    );
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stdout));
}

#[test]
fn key_types_passphrases_and_the_agent() {
    let lab = Lab::new();
    let sshd = lab.sshd("sshd");
    let hosts = "  box1:\n    role: client\n    interfaces: [{ network: lan }]\n    steps:\n      - command: { name: x, check: \"true\", run: \"true\" }\n        why: something\n";
    let mut authorized = std::fs::read_to_string(lab.path("sshd/authorized_keys")).unwrap();
    for kind in ["ecdsa", "rsa"] {
        keygen(&lab.path(&format!("{kind}key")), kind);
        authorized.push_str(&std::fs::read_to_string(lab.path(&format!("{kind}key.pub"))).unwrap());
    }
    // A key with a passphrase, given through an environment variable.
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "s3cret pass", "-f"])
        .arg(lab.path("lockedkey"))
        .status()
        .unwrap();
    assert!(st.success());
    authorized.push_str(&std::fs::read_to_string(lab.path("lockedkey.pub")).unwrap());
    std::fs::write(lab.path("sshd/authorized_keys"), authorized).unwrap();

    let topo = lab.topology("keys2", sshd.port, hosts);
    let base = std::fs::read_to_string(&topo).unwrap();
    for (key, extra) in [
        ("ecdsakey", ""),
        ("rsakey", ""),
        ("lockedkey", ", passphrase_env: LAB_PASS"),
    ] {
        std::fs::write(&topo, base.replace("key: userkey", &format!("key: {key}{extra}"))).unwrap();
        let out = lab
            .lvslab(&["up".as_ref(), topo.as_os_str(), "--accept-new-host-keys".as_ref()])
            .env("LAB_PASS", "s3cret pass")
            .run();
        ok(&out);
        assert!(!out.stdout.contains("s3cret") && !out.stderr.contains("s3cret"));
    }
    // Without the variable, the encrypted key is explained.
    let out = lab.lvslab(&["up".as_ref(), topo.as_os_str()]).run();
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("is encrypted"), "{}", out.stdout);

    // No key named: the ssh-agent is used.
    let sock = lab.path("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "ssh-agent did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = Command::new("ssh-add")
        .arg(lab.path("userkey"))
        .env("SSH_AUTH_SOCK", &sock)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(&topo, base.replace("key: userkey, ", "")).unwrap();
    let out = lab
        .lvslab(&["up".as_ref(), topo.as_os_str()])
        .env("SSH_AUTH_SOCK", &sock)
        .run();
    let _ = agent.kill();
    let _ = agent.wait();
    ok(&out);
}

#[test]
fn json_output_and_limit() {
    let lab = Lab::new();
    let sshd = lab.sshd("sshd");
    let w = lab.work();
    let hosts = format!(
        "  a:\n    role: client\n    interfaces: [{{ network: lan }}]\n    steps:\n      - file: {{ path: {w}/a, content: a }}\n        why: a\n  b:\n    role: client\n    interfaces: [{{ network: lan }}]\n    steps:\n      - file: {{ path: {w}/b, content: b }}\n        why: b\n"
    );
    let topo = lab.topology("json", sshd.port, &hosts);
    let out = lab
        .lvslab(&[
            "up".as_ref(),
            topo.as_os_str(),
            "--accept-new-host-keys".as_ref(),
            "--limit".as_ref(),
            "a".as_ref(),
            "--output".as_ref(),
            "json".as_ref(),
        ])
        .run();
    ok(&out);
    let events: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let steps: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "step").collect();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0]["step"]["host"], "a");
    assert_eq!(steps[0]["step"]["status"], "changed");
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["failed"], false);
    assert!(Path::new(&format!("{w}/a")).exists());
    assert!(!Path::new(&format!("{w}/b")).exists(), "--limit a leaves b alone");

    let bad = lab
        .lvslab(&["up".as_ref(), topo.as_os_str(), "--limit".as_ref(), "c".as_ref()])
        .run();
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("--limit: no host `c`"), "{}", bad.stderr);
}

#[test]
fn a_silent_server_hits_the_connect_timeout() {
    let lab = Lab::new();
    // Accepts TCP connections but never says a word of SSH.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hosts = "  box1:\n    role: client\n    interfaces: [{ network: lan }]\n    steps:\n      - command: { name: x, check: \"true\", run: \"true\" }\n        why: something\n";
    let topo = lab.topology("silent", port, hosts);
    let start = Instant::now();
    let out = lab.lvslab(&["up".as_ref(), topo.as_os_str()]).run();
    let took = start.elapsed();
    drop(listener);
    assert_eq!(out.code, 1);
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    assert!(
        out.stdout.contains(&format!(
            "box1: cannot connect to 127.0.0.1:{port}: no answer within 3s"
        )),
        "{}",
        out.stdout
    );
}

#[test]
fn down_by_lab_name_after_the_topology_is_gone() {
    let lab = Lab::new();
    let sshd = lab.sshd("sshd");
    let w = lab.work();
    std::fs::write(format!("{w}/conf"), "before\n").unwrap();
    let hosts = format!(
        "  box1:\n    role: client\n    interfaces: [{{ network: lan }}]\n    steps:\n      - file: {{ path: {w}/conf, content: \"after\\n\" }}\n        why: replaced\n"
    );
    let topo = lab.topology("byname", sshd.port, &hosts);
    ok(&lab
        .lvslab(&["up".as_ref(), topo.as_os_str(), "--accept-new-host-keys".as_ref()])
        .run());
    std::fs::remove_file(&topo).unwrap();
    let listed = lab.lvslab(&["list"]).run();
    assert!(listed.stdout.contains("byname"), "{}", listed.stdout);
    let down = lab.lvslab(&["down", "byname"]).run();
    ok(&down);
    assert_eq!(std::fs::read_to_string(format!("{w}/conf")).unwrap(), "before\n");
}

#[test]
fn an_interrupted_up_is_cleaned_up_by_down() {
    let lab = Lab::new();
    let sshd = lab.sshd("sshd");
    let w = lab.work();
    std::fs::write(format!("{w}/conf"), "before\n").unwrap();
    let hosts = format!(
        r#"  box1:
    role: client
    interfaces: [{{ network: lan }}]
    steps:
      - file: {{ path: {w}/conf, content: "after\n" }}
        why: replaced first
      - command: {{ name: slow, check: "test -f {w}/done", run: "touch {w}/started; sleep 30; touch {w}/done", revert: "rm -f {w}/started {w}/done" }}
        why: interrupted here
"#
    );
    let topo = lab.topology("crash", sshd.port, &hosts);
    let mut up = lab
        .lvslab(&["up".as_ref(), topo.as_os_str(), "--accept-new-host-keys".as_ref()])
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !Path::new(&format!("{w}/started")).exists() {
        assert!(Instant::now() < deadline, "the slow step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    up.kill().unwrap(); // like a crash: no cleanup of its own
    let _ = up.wait();
    assert_eq!(
        std::fs::read_to_string(format!("{w}/conf")).unwrap(),
        "after\n",
        "the first step was applied"
    );
    let down = lab.lvslab(&["down".as_ref(), topo.as_os_str()]).run();
    ok(&down);
    assert_eq!(
        std::fs::read_to_string(format!("{w}/conf")).unwrap(),
        "before\n",
        "restored from the record made before the change"
    );
    assert!(!Path::new(&format!("{w}/started")).exists());
}

fn dpkg_installed(pkg: &str) -> bool {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", pkg])
        .output()
        .expect("dpkg-query runs (this is a Debian machine)");
    String::from_utf8_lossy(&out.stdout).contains("install ok installed")
}

fn apt(args: &[&str]) {
    let st = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .expect("apt-get runs");
    assert!(st.success(), "apt-get {args:?}");
}

/// The apt path for real on this Debian machine: a package the client needs
/// (iputils-arping, for verify's ARP check) is absent, `up` detects the OS
/// family over SSH and installs it (and only it: curl is already there),
/// a second `up` changes nothing, `drift` sees it removed by hand, and `down`
/// removes exactly what `up` installed. The machine's package set is put back
/// as it was found.
#[test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
fn packages_missing_are_installed_with_apt_and_down_removes_only_those() {
    const PKG: &str = "iputils-arping";
    let had = dpkg_installed(PKG);
    if had {
        apt(&["remove", "-y", "-q", PKG]);
    }
    assert!(dpkg_installed("curl"), "curl is installed (.ci/run installs it)");
    let lab = Lab::new();
    let sshd = lab.sshd("sshd");
    let hosts = "  box1:\n    role: client\n    packages: true\n    interfaces: [{ network: lan }]\n";
    let topo = lab.topology("pkgs", sshd.port, hosts);

    let plan = lab.lvslab(&["plan".as_ref(), topo.as_os_str()]).run();
    ok(&plan);
    assert!(
        plan.stdout.contains("note: box1: no `os:` declared: planned as debian"),
        "{}",
        plan.stdout
    );

    let first = lab
        .lvslab(&["up".as_ref(), topo.as_os_str(), "--accept-new-host-keys".as_ref()])
        .run();
    let restore = || {
        if had && !dpkg_installed(PKG) {
            apt(&["install", "-y", "-q", "--no-install-recommends", PKG]);
        }
    };
    if first.code != 0 {
        restore();
    }
    ok(&first);
    assert!(first.stderr.contains("os detected: box1 debian"), "{}", first.stderr);
    assert_eq!(
        recap(&first, "box1"),
        (1, 1, 0, 0),
        "curl ok, arping installed:\n{}",
        first.stdout
    );
    assert!(dpkg_installed(PKG), "installed by up");

    let second = lab.lvslab(&["up".as_ref(), topo.as_os_str()]).run();
    ok(&second);
    assert_eq!(recap(&second, "box1"), (2, 0, 0, 0), "nothing installed twice");

    let clean = lab.lvslab(&["drift".as_ref(), topo.as_os_str()]).run();
    assert_eq!(clean.code, 0, "{}\n{}", clean.stdout, clean.stderr);
    apt(&["remove", "-y", "-q", PKG]);
    let drifted = lab.lvslab(&["drift".as_ref(), topo.as_os_str()]).run();
    assert_eq!(drifted.code, 2, "{}\n{}", drifted.stdout, drifted.stderr);
    assert!(
        drifted.stdout.contains("box1: package iputils-arping not installed"),
        "{}",
        drifted.stdout
    );
    let fixed = lab
        .lvslab(&["drift".as_ref(), topo.as_os_str(), "--fix".as_ref()])
        .run();
    assert_eq!(fixed.code, 0, "{}\n{}", fixed.stdout, fixed.stderr);
    assert!(
        fixed
            .stdout
            .contains("fixed: box1: package iputils-arping not installed"),
        "{}",
        fixed.stdout
    );
    assert!(dpkg_installed(PKG), "reinstalled by drift --fix");

    let down = lab.lvslab(&["down".as_ref(), topo.as_os_str()]).run();
    ok(&down);
    assert!(!dpkg_installed(PKG), "down removes what up installed");
    assert!(dpkg_installed("curl"), "and nothing that was there before");
    restore();
}

/// Issue 16: a host pinned under one key type that offers a key of another
/// type (or another key of the same type) is an impostor: refused as a
/// changed key, even with `--accept-new-host-keys`, and never recorded.
/// Every pair of the three key families sshd offers, through a real sshd.
#[test]
fn an_impostor_key_of_any_type_is_refused_and_never_learned() {
    let types = ["ed25519", "rsa", "ecdsa"];
    let lab = Lab::new();
    let work = lab.work();
    for pinned in types {
        // The genuine host's key, pinned in known_hosts.
        let genuine = lab.path(&format!("genuine-{pinned}"));
        keygen(&genuine, pinned);
        for offered in types {
            let name = format!("impostor-{pinned}-{offered}");
            std::fs::create_dir_all(lab.path(&name)).unwrap();
            keygen(&lab.path(&format!("{name}/hostkey")), offered);
            let sshd = lab.sshd(&name);
            let pub_line = std::fs::read_to_string(genuine.with_extension("pub")).unwrap();
            let mut fields = pub_line.split_whitespace();
            let pinned_line = format!(
                "[127.0.0.1]:{} {} {}\n",
                sshd.port,
                fields.next().unwrap(),
                fields.next().unwrap()
            );
            std::fs::write(lab.path("known_hosts"), &pinned_line).unwrap();
            let hosts = format!(
                "  box1:\n    role: client\n    interfaces: [{{ network: lan }}]\n    steps:\n      - file: {{ path: {work}/{name}, content: x }}\n        why: something\n"
            );
            let topo = lab.topology(&name, sshd.port, &hosts);
            let out = lab
                .lvslab(&["up".as_ref(), topo.as_os_str(), "--accept-new-host-keys".as_ref()])
                .run();
            assert_eq!(out.code, 1, "pinned {pinned}, offered {offered}: {}", out.stdout);
            assert!(
                out.stdout.contains("HOST KEY CHANGED") && out.stdout.contains("known_hosts line 1"),
                "pinned {pinned}, offered {offered}: {}",
                out.stdout
            );
            assert!(!out.stdout.contains("unknown host key"), "{}", out.stdout);
            assert_eq!(
                std::fs::read_to_string(lab.path("known_hosts")).unwrap(),
                pinned_line,
                "pinned {pinned}, offered {offered}: the impostor's key is never recorded"
            );
            assert!(!Path::new(&format!("{work}/{name}")).exists(), "nothing ran");
        }
    }
}

/// The run-time flags of `up`, `verify`, `drift`, `down` and `list`, each
/// doing what its help says.
#[test]
fn run_flags_do_what_their_help_says() {
    let lab = Lab::new();
    let sshd = lab.sshd("sshd");
    let work = lab.work();
    let topo = lab.topology("flags", sshd.port, &box_steps(&work));
    let t = topo.to_str().unwrap();
    let up = lab
        .lvslab(&["up", t, "--accept-new-host-keys", "--forks", "1", "--no-verify"])
        .run();
    ok(&up);
    // --verbose lists the steps already in the desired state too.
    let quiet = lab.lvslab(&["up", t, "--no-verify"]).run();
    ok(&quiet);
    let verbose = lab.lvslab(&["up", t, "--no-verify", "--verbose"]).run();
    ok(&verbose);
    let oks = |o: &Output| o.stderr.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(oks(&quiet), 0, "{}", quiet.stderr);
    assert_eq!(oks(&verbose), 5, "{}", verbose.stderr);
    // verify --junit and --save-evidence write their files.
    let junit = lab.path("verify.xml");
    let evidence = lab.path("evidence.json");
    let v = lab
        .lvslab(&[
            "verify",
            t,
            "--forks",
            "1",
            "--accept-new-host-keys",
            "--junit",
            junit.to_str().unwrap(),
            "--save-evidence",
            evidence.to_str().unwrap(),
        ])
        .run();
    assert!(v.code == 0 || v.code == 1, "{}", v.stderr);
    assert!(std::fs::read_to_string(&junit).unwrap().contains("<testsuite"));
    let ev: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&evidence).unwrap()).unwrap();
    assert!(ev.get("before").is_some(), "{ev}");
    // drift --host: only that host (and an unknown one is refused).
    ok(&lab.lvslab(&["drift", t, "--host", "box1", "--forks", "1"]).run());
    let bad = lab.lvslab(&["drift", t, "--host", "nosuch"]).run();
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    // list --format json.
    let list = lab.lvslab(&["list", "--format", "json"]).run();
    ok(&list);
    let j: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(j["schema"], "lvslab.list/v1");
    assert_eq!(j["labs"][0]["lab"], "flags", "{j}");
    assert_eq!(j["labs"][0]["hosts"], 1, "{j}");
    // down --forks --verbose --accept-new-host-keys.
    let down = lab
        .lvslab(&["down", t, "--forks", "1", "-v", "--accept-new-host-keys"])
        .run();
    ok(&down);
    assert!(!Path::new(&format!("{work}/marker")).exists());
}

/// Round trips as the server counts them (one per command it runs): with
/// `os:` declared, a no-op `up` and a `drift` are one per host; a cold `up`
/// one, plus one per phase that has changes. Without `os:`, the facts that
/// pick the OS family cost one more.
#[test]
fn round_trips_as_the_server_counts_them() {
    let lab = Lab::new();
    let sshd = lab.sshd_counting("sshd");
    let work = lab.work();
    std::fs::create_dir_all(format!("{work}/b2")).unwrap();
    let one = box_steps(&work).replace("    role: client\n", "    role: client\n    os: debian\n");
    let two = one.replace("box1:", "box2:").replace(&work, &format!("{work}/b2"));
    let topo = lab.topology("trips", sshd.port, &format!("{one}{two}"));
    let up = |extra: &[&str]| {
        let mut args = vec!["up", topo.to_str().unwrap()];
        args.extend(extra);
        let out = lab.lvslab(&args).run();
        ok(&out);
        out
    };
    // Two phases with changes (network: the marker; services: the rest).
    let cold = up(&["--accept-new-host-keys"]);
    assert_eq!(recap(&cold, "box1"), (0, 5, 0, 0), "{}", cold.stderr);
    assert_eq!(lab.sessions("sshd"), 2 * (1 + 2), "cold up");
    up(&[]);
    assert_eq!(lab.sessions("sshd"), 2, "no-op up: one per host");
    let drift = lab.lvslab(&["drift", topo.to_str().unwrap()]).run();
    ok(&drift);
    assert_eq!(lab.sessions("sshd"), 2, "drift: one per host");
    up(&["--check"]);
    assert_eq!(lab.sessions("sshd"), 2, "--check: one per host");
    // A change in one phase of one host: one round trip more, on that host.
    std::fs::remove_file(format!("{work}/marker")).unwrap();
    let fix = up(&[]);
    assert_eq!(recap(&fix, "box1"), (4, 1, 0, 0), "{}", fix.stderr);
    assert_eq!(lab.sessions("sshd"), 3);
    // Without `os:`, each host's facts are read first.
    let undeclared = std::fs::read_to_string(&topo).unwrap().replace("    os: debian\n", "");
    std::fs::write(&topo, undeclared).unwrap();
    up(&[]);
    assert_eq!(lab.sessions("sshd"), 2 * 2, "facts, then one observation");
}
