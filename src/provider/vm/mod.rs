//! The vm provider: for machines whose kernel cannot run LVS (no IPVS, no
//! ipip) or users without root. It boots a small disposable VM (qemu; KVM
//! when it works, TCG otherwise) with a distribution kernel that has IPVS,
//! shares this machine's root file system into it read-only (a tmpfs overlay
//! on top), so the VM runs this machine's programs (sshd, ipvsadm, keepalived,
//! busybox, curl) unchanged, and builds the lab inside it as network
//! namespaces with the netns provider's code (run there by this binary).
//!
//! This machine reaches the lab hosts over SSH, the same code path as real
//! labs: an sshd in the VM behind a forwarded loopback port is the jump host,
//! each lab host's own sshd listens on its management address.
//!
//! On this machine the VM leaves only its directory in the lab's state
//! directory (console log, keys, the share the VM sees at [`GUEST_SHARE`]);
//! `down` stops qemu and removes it. The kernel is cached in
//! [`cache_root`]`/vm` (a cache, kept across labs).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::model::{Mgmt, Topology};
use crate::process::Proc;
pub use crate::state::VmRecord;

mod initramfs;
mod kernel;
mod qemu;

use crate::state::{LabState, Reach};
use initramfs::*;
pub use kernel::{Kernel, prepare_kernel};
use qemu::*;

/// Where the VM sees its share (this machine's `<vm dir>/share`, writable).
pub const GUEST_SHARE: &str = "/mnt/lvslab";
/// Printed on the VM's console by the initramfs, then by the guest script
/// once sshd runs.
const INIT_MARK: &str = "lvslab-vm: init";
const READY_MARK: &str = "lvslab-vm: ready";
/// qemu user networking: the VM's address, and the network it must not meet.
const SLIRP_NET: &str = "10.0.2.0/24";

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("`{program}` is missing: install the `{package}` package")]
    Missing { program: String, package: String },
    /// A refusal or a failure with nothing underneath it.
    #[error("{0}")]
    Failed(String),
    /// `what` failed; the cause is the error's source (printed after it).
    #[error("{what}")]
    Cause {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Command(#[from] crate::local::CommandError),
    #[error("cannot save the lab state")]
    State(#[from] crate::state::StateError),
}

fn failed(msg: impl Into<String>) -> VmError {
    VmError::Failed(msg.into())
}

/// `.map_err(because(what))`: `what` failed, caused by the error mapped.
fn because<E>(what: impl std::fmt::Display) -> impl FnOnce(E) -> VmError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let what = what.to_string();
    move |e| VmError::Cause {
        what,
        source: Box::new(e),
    }
}

/// Where downloads are cached: `$LVSLAB_CACHE_DIR`, else `$XDG_CACHE_HOME/lvslab`,
/// else `~/.cache/lvslab`.
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("LVSLAB_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("lvslab");
    }
    std::env::home_dir()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
        .join(".cache/lvslab")
}

/// Run a program (an argument vector: no value ever reaches a shell).
fn run(argv: &[&str]) -> Result<String, VmError> {
    run_in(argv, None)
}

fn run_in(argv: &[&str], dir: Option<&Path>) -> Result<String, VmError> {
    crate::local::run_in(argv, dir).map_err(VmError::from)
}

fn path_arg(p: &Path) -> Result<&str, VmError> {
    p.to_str()
        .ok_or_else(|| failed(format!("{}: not a UTF-8 path", p.display())))
}

fn have(program: &str) -> bool {
    crate::local::have(program)
}

fn which(program: &str) -> Result<String, VmError> {
    crate::local::which(program)
        .map(|p| p.display().to_string())
        .ok_or_else(|| failed(format!("`{program}` is not on PATH")))
}

/// What the VM needs on this machine, checked before anything is created:
/// qemu and the initramfs tools here, and the lab's own programs (the VM runs
/// this machine's).
pub fn preflight(topo: &Topology, kernel: Option<&Path>) -> Result<(), VmError> {
    let mut needs = vec![
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("modprobe", "kmod"),
        ("depmod", "kmod"),
        ("ssh-keygen", "openssh-client"),
        ("/usr/sbin/sshd", "openssh-server"),
        ("dpkg", "dpkg"),
    ];
    match kernel {
        None => needs.extend([("apt-get", "apt"), ("apt-cache", "apt")]),
        Some(p) if !p.exists() => {
            return Err(failed(format!(
                "--vm-kernel {}: no such file or directory (give a linux-image-*.deb, or a directory with boot/vmlinuz-* and lib/modules/*)",
                p.display()
            )));
        }
        Some(_) => {}
    }
    for (program, package) in needs {
        if !have(program) {
            return Err(VmError::Missing {
                program: program.into(),
                package: package.into(),
            });
        }
    }
    let busybox = which("busybox")?;
    let ldd = Command::new("ldd")
        .arg(busybox.trim())
        .output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default();
    if !(ldd.contains("not a dynamic") || ldd.contains("statically linked")) {
        return Err(failed(format!(
            "{} is linked dynamically; the VM's initramfs needs a static one: install the `busybox-static` package",
            busybox.trim()
        )));
    }
    super::netns::programs(topo).map_err(because("the lab runs this machine's programs in the VM"))
}

/// The guest script, PID 1 after switch_root: network, sshd, then reap.
const GUEST: &str = r#"#!/bin/bash
# lvslab vm guest: runs as PID 1 inside the VM (written by lvslab up).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
say() { echo "lvslab-vm: $*"; }
cd /
hostname lvslab-vm
ip link set lo up
modprobe virtio_net 2>/dev/null
if ! { ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2; }; then
  say "no network: $(ip -o link 2>&1 | tr '\n' ' ')"
fi
# Root gets a home of its own: this machine's dotfiles must not run in every
# session of the lab (a .bashrc that takes 0.1 s here takes seconds under TCG).
mount -t tmpfs -o mode=0700 tmpfs /root
mkdir -p /run/sshd /run/lvslab-vm
install -m 600 /mnt/lvslab/ssh/vm_host_key /run/lvslab-vm/host_key
install -m 600 /mnt/lvslab/ssh/lab_key.pub /run/lvslab-vm/authorized_keys
cat > /run/lvslab-vm/sshd_config <<EOF
Port 22
HostKey /run/lvslab-vm/host_key
AuthorizedKeysFile /run/lvslab-vm/authorized_keys
PidFile /run/lvslab-vm/sshd.pid
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
PrintMotd no
MaxSessions 50
MaxStartups 50:30:100
EOF
if /usr/sbin/sshd -f /run/lvslab-vm/sshd_config -E /run/lvslab-vm/sshd.log; then
  say ready
else
  say "sshd did not start: $(cat /run/lvslab-vm/sshd.log 2>&1 | tail -n 3)"
fi
# PID 1: reap orphans for ever.
while :; do sleep 3600 & wait $!; done
"#;

/// The lab with a management network for the VM's sshds: the topology's own
/// `mgmt:`, else the first of a few private /24s that meets neither a lab
/// network nor qemu's user network.
pub fn with_mgmt(topo: &Topology) -> Result<Topology, VmError> {
    let mut t = topo.clone();
    if t.mgmt.is_some() {
        return Ok(t);
    }
    let slirp: ipnetwork::Ipv4Network = SLIRP_NET.parse().map_err(|_| failed("bad SLIRP_NET"))?;
    let candidates = [
        "10.250.0.0/24",
        "10.251.0.0/24",
        "10.252.0.0/24",
        "172.31.250.0/24",
        "192.168.250.0/24",
    ];
    let hosts = t.hosts.len();
    if hosts > 250 {
        return Err(failed(format!(
            "{hosts} hosts do not fit the VM's management network (250 at most)"
        )));
    }
    for c in candidates {
        let cidr: ipnetwork::Ipv4Network = c.parse().map_err(|_| failed("bad candidate"))?;
        if cidr.overlaps(slirp) || t.networks.iter().any(|n| n.cidr.overlaps(cidr)) {
            continue;
        }
        let mut free = cidr.iter().skip(1);
        let Some(gateway) = free.next() else { continue };
        t.mgmt = Some(Mgmt {
            cidr,
            gateway,
            addresses: free.take(hosts).collect(),
        });
        return Ok(t);
    }
    Err(failed(format!(
        "every management network the VM would use ({}) meets a lab network: add `mgmt: {{ cidr: ... }}` with a free /24",
        candidates.join(", ")
    )))
}

/// How to reach the VM's own sshd.
pub fn vm_reach(rec: &VmRecord) -> Reach {
    Reach {
        address: "127.0.0.1".into(),
        port: rec.port,
        user: "root".into(),
        key: Some(rec.dir.join("share/ssh/lab_key")),
        passphrase_env: None,
        known_hosts: vec![rec.dir.join("vm_known_hosts")],
        jump: None,
        become_root: false,
        connect_timeout_secs: 20,
    }
}

/// How to reach each lab host: its sshd on the management network inside
/// the VM, through the VM's sshd as jump host.
pub fn host_reach(topo: &Topology, rec: &VmRecord) -> BTreeMap<String, Reach> {
    let Some(m) = &topo.mgmt else {
        return BTreeMap::new();
    };
    topo.hosts
        .iter()
        .zip(&m.addresses)
        .map(|(h, a)| {
            let mut r = vm_reach(rec);
            r.address = a.to_string();
            r.port = 22;
            r.known_hosts = vec![rec.dir.join("share/ssh/known_hosts"), rec.dir.join("vm_known_hosts")];
            r.jump = Some(format!("root@127.0.0.1:{}", rec.port));
            (h.name.clone(), r)
        })
        .collect()
}

/// Whether the recorded qemu still runs.
pub fn alive(rec: &VmRecord) -> bool {
    !qemu_procs(rec).is_empty()
}

/// The recorded qemu process.
fn qemu(rec: &VmRecord) -> Option<Proc> {
    Some(Proc {
        pid: rec.pid?,
        start: rec.start?,
    })
}

/// qemu processes of this VM: the recorded one (by pid *and* start time,
/// recorded as soon as qemu runs), never a process found by its command line.
fn qemu_procs(rec: &VmRecord) -> Vec<Proc> {
    let console = rec.dir.join("console.log").display().to_string();
    let is_this_vm = |p: &Proc| {
        std::fs::read(format!("/proc/{}/cmdline", p.pid)).is_ok_and(|c| {
            let c = String::from_utf8_lossy(&c);
            c.starts_with("qemu-system") && c.contains(&console)
        })
    };
    qemu(rec).filter(|p| p.alive() && is_this_vm(p)).into_iter().collect()
}

/// Stop the VM (everything in it goes with it) and remove its directory.
/// Returns what was done, a line each, and only once qemu has exited.
pub fn stop(rec: &VmRecord) -> Result<Vec<String>, VmError> {
    let mut done = Vec::new();
    let procs = qemu_procs(rec);
    if !procs.is_empty() {
        let list: Vec<String> = procs.iter().map(|p| p.pid.to_string()).collect();
        if let Some(p) = crate::process::stop_all(&procs, Duration::from_secs(5)).first() {
            return Err(failed(format!(
                "qemu (pid {}) does not stop; kill it and run `lvslab down` again",
                p.pid
            )));
        }
        done.push(format!("stopped the VM (qemu pid {})", list.join(", ")));
    }
    if rec.dir.exists() {
        std::fs::remove_dir_all(&rec.dir).map_err(because(rec.dir.display()))?;
        done.push(format!("removed {}", rec.dir.display()));
    }
    Ok(done)
}

pub use crate::exec::Progress;

fn keygen(path: &Path) -> Result<(), VmError> {
    Ok(crate::local::keygen(path)?)
}

/// Put this binary in the share (the VM runs it to build the hosts):
/// a hard link when possible, else a copy, replaced atomically.
fn install_binary(share: &Path) -> Result<(), VmError> {
    let exe = std::env::current_exe().map_err(because("cannot find this program"))?;
    let bin = share.join("bin");
    std::fs::create_dir_all(&bin).map_err(because(bin.display()))?;
    let tmp = bin.join("lvslab.new");
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(&exe, &tmp).is_err() {
        std::fs::copy(&exe, &tmp).map_err(because(format!("copying {}", exe.display())))?;
    }
    std::fs::rename(&tmp, bin.join("lvslab")).map_err(because(bin.display()))
}

/// Make sure the lab's VM runs and its hosts exist ([`preflight`] first): boot it if needed
/// (recording it in `state` first), then have the lvslab inside build the
/// hosts as namespaces. `topo_text` is the topology file's text (the VM reads
/// it from its share); `topo` is it with a management network ([`with_mgmt`]).
pub async fn ensure(
    topo: &Topology,
    topo_text: &str,
    dir: &Path,
    state: &mut LabState,
    save: &dyn Fn(&LabState) -> Result<(), crate::state::StateError>,
    kernel_arg: Option<&Path>,
    progress: &dyn Progress,
) -> Result<VmRecord, VmError> {
    state.provider = Some(crate::spec::Provider::Vm);
    let share = dir.join("share");
    let rec = match state.vm.clone() {
        Some(rec) if alive(&rec) => {
            progress.done(&format!(
                "running (qemu pid {}, {})",
                rec.pid.unwrap_or(0),
                rec.accel.to_uppercase()
            ));
            rec
        }
        stale => {
            if let Some(old) = stale {
                // A VM that is gone took the lab with it: start afresh,
                // forgetting what was recorded of the hosts inside it.
                stop(&old)?;
                state.hosts.clear();
                state.reach.clear();
            }
            progress.step("preparing the kernel");
            let kernel = crate::exec::blocking(|| prepare_kernel(kernel_arg, &|m| progress.step(m)))?;
            progress.done(&format!("kernel {} ready", kernel.release));
            let ssh = share.join("ssh");
            std::fs::create_dir_all(&ssh).map_err(because(ssh.display()))?;
            keygen(&ssh.join("lab_key"))?;
            keygen(&ssh.join("vm_host_key"))?;
            std::fs::write(share.join("guest.sh"), GUEST).map_err(because("guest.sh"))?;
            let mut rec = VmRecord {
                dir: dir.to_path_buf(),
                pid: None,
                start: None,
                port: free_port()?,
                accel: String::new(),
                kernel: kernel.release.clone(),
            };
            state.vm = Some(rec.clone());
            save(state)?;
            let booted = boot(&mut rec, &kernel, progress, &mut |r: &VmRecord| {
                state.vm = Some(r.clone());
                save(state)
            })
            .await;
            state.vm = Some(rec.clone());
            save(state)?;
            booted?;
            let key = std::fs::read_to_string(ssh.join("vm_host_key.pub")).map_err(because("vm_host_key.pub"))?;
            let key: Vec<&str> = key.split_whitespace().take(2).collect();
            std::fs::write(
                dir.join("vm_known_hosts"),
                format!("[127.0.0.1]:{} {}\n", rec.port, key.join(" ")),
            )
            .map_err(because("vm_known_hosts"))?;
            progress.done(&format!(
                "booted {} ({}, {} MiB), sshd on 127.0.0.1:{}",
                rec.kernel,
                rec.accel.to_uppercase(),
                mem_mib(),
                rec.port
            ));
            rec
        }
    };
    crate::exec::blocking(|| install_binary(&share))?;
    std::fs::write(share.join("topology.yaml"), topo_text).map_err(because("topology.yaml"))?;
    progress.step(&format!("creating {} hosts as namespaces in the VM", topo.hosts.len()));
    let vm = connect_vm(&rec).await?;
    let out = vm
        .run(&format!(
            "{GUEST_SHARE}/bin/lvslab vm-guest {GUEST_SHARE}/topology.yaml --ssh-dir {GUEST_SHARE}/ssh\n"
        ))
        .await
        .map_err(because("running lvslab in the VM"))?;
    if out.status != 0 {
        return Err(failed(format!(
            "creating the hosts in the VM failed (exit {}):\n{}{}",
            out.status,
            out.stdout.trim(),
            out.stderr.trim()
        )));
    }
    progress.done(&format!(
        "hosts up in the VM: {}",
        topo.hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(rec)
}

/// An SSH connection to the VM itself (retried while its sshd starts).
pub async fn connect_vm(rec: &VmRecord) -> Result<std::sync::Arc<dyn crate::exec::transport::Transport>, VmError> {
    let mut reach = BTreeMap::new();
    reach.insert("vm".to_string(), vm_reach(rec));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let conns = crate::exec::connect::connect_all(&["vm".to_string()], &reach, false, 1).await;
        let t = conns
            .into_iter()
            .next()
            .map(|c| c.transport)
            .unwrap_or_else(|| Err("no connection".into()));
        match t {
            Ok(t) => return Ok(t),
            Err(e) if Instant::now() > deadline => {
                return Err(failed(format!(
                    "cannot reach the VM's sshd on 127.0.0.1:{}: {e}\n  console: {}",
                    rec.port,
                    rec.dir.join("console.log").display()
                )));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nat() -> Topology {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/nat.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        crate::load_str(path, text).unwrap().topology
    }

    #[test]
    fn management_network_is_added_apart_from_the_lab() {
        let t = with_mgmt(&nat()).unwrap();
        let m = t.mgmt.as_ref().unwrap();
        assert_eq!(m.cidr.to_string(), "10.250.0.0/24");
        assert_eq!(m.gateway.to_string(), "10.250.0.1");
        let addrs: Vec<String> = m.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["10.250.0.2", "10.250.0.3", "10.250.0.4", "10.250.0.5"]);

        // A lab network that takes 10.250/16 pushes it to the next candidate.
        let mut lab = nat();
        lab.networks[0].cidr = "10.250.0.0/16".parse().unwrap();
        let t = with_mgmt(&lab).unwrap();
        assert_eq!(t.mgmt.as_ref().unwrap().cidr.to_string(), "10.251.0.0/24");

        // The topology's own management network is kept.
        let t2 = with_mgmt(&t).unwrap();
        assert_eq!(t2.mgmt.as_ref().unwrap().cidr, t.mgmt.as_ref().unwrap().cidr);
    }

    #[test]
    fn hosts_are_reached_through_the_vm_sshd() {
        let t = with_mgmt(&nat()).unwrap();
        let rec = VmRecord {
            dir: PathBuf::from("/state/nat/vm"),
            pid: None,
            start: None,
            port: 40022,
            accel: "tcg".into(),
            kernel: "6.1.0-1-amd64".into(),
        };
        let reach = host_reach(&t, &rec);
        let web1 = &reach["web1"];
        assert_eq!(web1.address, "10.250.0.4");
        assert_eq!(web1.port, 22);
        assert_eq!(web1.jump.as_deref(), Some("root@127.0.0.1:40022"));
        assert_eq!(web1.key.as_deref(), Some(Path::new("/state/nat/vm/share/ssh/lab_key")));
        assert_eq!(
            web1.known_hosts,
            [
                PathBuf::from("/state/nat/vm/share/ssh/known_hosts"),
                PathBuf::from("/state/nat/vm/vm_known_hosts")
            ]
        );
        let vm = vm_reach(&rec);
        assert_eq!(
            (vm.address.as_str(), vm.port, vm.jump.clone()),
            ("127.0.0.1", 40022, None)
        );
        assert!(!alive(&rec), "a record without a pid is not a running VM");
    }

    #[test]
    fn cpio_newc_layout() {
        let a = cpio_newc(&[CpioEntry {
            name: "init".into(),
            mode: 0o100755,
            rdev: (0, 0),
            data: b"#!x\n".to_vec(),
        }]);
        // Header (110 bytes), "init\0" padded to 4, data padded to 4, then the trailer.
        assert!(a.starts_with(b"070701"));
        assert_eq!(&a[14..22], b"000081ed", "mode");
        assert_eq!(&a[54..62], b"00000004", "file size");
        assert_eq!(&a[94..102], b"00000005", "name size with NUL");
        assert_eq!(&a[110..115], b"init\0");
        assert_eq!(&a[116..120], b"#!x\n");
        assert_eq!(a.len() % 4, 0);
        assert!(a.windows(10).any(|w| w == b"TRAILER!!!"));
    }
}
