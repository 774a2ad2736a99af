//! Booting qemu: accelerators (KVM first when it works here, TCG otherwise,
//! a KVM failure remembered per host kernel), the command line, and waiting
//! for the guest's marks on its console.

use std::path::{Path, PathBuf};

use super::*;

/// Accelerators to try, in order: `$LVSLAB_VM_ACCEL` if set; KVM first when
/// /dev/kvm opens and it has not already failed on this machine's kernel; TCG.
pub(super) fn accels(cache: &Path) -> Vec<&'static str> {
    match std::env::var("LVSLAB_VM_ACCEL").as_deref() {
        Ok("kvm") => return vec!["kvm"],
        Ok("tcg") => return vec!["tcg"],
        _ => {}
    }
    let kvm_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if kvm_opens && !kvm_verdict_path(cache).exists() {
        vec!["kvm", "tcg"]
    } else {
        vec!["tcg"]
    }
}

pub(super) fn kvm_verdict_path(cache: &Path) -> PathBuf {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    cache.join(format!("kvm-failed-{}", release.trim()))
}

pub(super) fn free_port() -> Result<u16, VmError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(because("no free loopback port"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(because("no free loopback port"))
}

pub(super) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let text = text.replace('\r', "");
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n    ")
}

pub(super) fn mem_mib() -> u32 {
    std::env::var("LVSLAB_VM_MEM")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(2048)
}

pub(super) fn boot_timeout() -> Duration {
    Duration::from_secs(
        std::env::var("LVSLAB_VM_BOOT_TIMEOUT")
            .ok()
            .and_then(|m| m.parse().ok())
            .unwrap_or(300),
    )
}

pub(super) fn spawn_qemu(rec: &VmRecord, kernel: &Kernel, accel: &str) -> Result<std::process::Child, VmError> {
    let console = rec.dir.join("console.log");
    let _ = std::fs::remove_file(&console);
    let log = std::fs::File::create(rec.dir.join("qemu.log")).map_err(because("qemu.log"))?;
    let log2 = log.try_clone().map_err(because("qemu.log"))?;
    let smp = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", accel, "-M", "pc", "-cpu", "max", "-smp", &smp.to_string()])
        .args(["-m", &mem_mib().to_string()])
        .args(["-nodefaults", "-display", "none", "-no-reboot", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(&kernel.initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet loglevel=3 lvslab.mods={}",
            kernel.modules.display()
        ))
        .arg("-virtfs")
        .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=lvslab,security_model=none",
            rec.dir.join("share").display()
        ))
        .arg("-netdev")
        .arg(format!("user,id=n0,hostfwd=tcp:127.0.0.1:{}-:22", rec.port))
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    cmd.spawn().map_err(because("qemu-system-x86_64"))
}

/// Wait for `mark` on the console; `Err` says why it did not come.
pub(super) async fn wait_mark(
    child: &mut std::process::Child,
    rec: &VmRecord,
    mark: &str,
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let console = rec.dir.join("console.log");
    loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if text.contains(mark) {
            return Ok(());
        }
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("lvslab-vm:") && !l.contains(INIT_MARK))
        {
            return Err(line.trim().to_string());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "qemu exited ({status}): {}",
                tail(&rec.dir.join("qemu.log"), 3)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("nothing after {} s", within.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Boot the VM (KVM if it works, else TCG) and wait until its sshd runs.
/// `record` saves the VM's record as soon as qemu runs (its pid and start
/// time), so an interrupted `up` leaves a record `down` stops it by.
pub(super) async fn boot(
    rec: &mut VmRecord,
    kernel: &Kernel,
    progress: &dyn Progress,
    record: &mut dyn FnMut(&VmRecord) -> Result<(), crate::state::StateError>,
) -> Result<(), VmError> {
    let cache = cache_root().join("vm");
    let order = accels(&cache);
    for (i, accel) in order.iter().enumerate() {
        let last = i + 1 == order.len();
        progress.step(&format!(
            "booting {} with qemu ({})",
            kernel.release,
            accel.to_uppercase()
        ));
        let mut child = spawn_qemu(rec, kernel, accel)?;
        rec.pid = Some(child.id());
        rec.start = crate::process::start_time(child.id());
        rec.accel = accel.to_string();
        if let Err(e) = record(rec) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e.into());
        }
        // KVM that hangs shows nothing: give it a short time to reach init.
        if !last && let Err(why) = wait_mark(&mut child, rec, INIT_MARK, Duration::from_secs(30)).await {
            let _ = child.kill();
            let _ = child.wait();
            progress.done(&format!("KVM did not boot ({why}); falling back to TCG"));
            let _ = std::fs::create_dir_all(&cache);
            let _ = std::fs::write(kvm_verdict_path(&cache), format!("{why}\n"));
            continue;
        }
        match wait_mark(&mut child, rec, READY_MARK, boot_timeout()).await {
            Ok(()) => return Ok(()),
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "the VM did not come up ({why}).\n  console ({}):\n    {}\n  hint: a slow machine may need more time: LVSLAB_VM_BOOT_TIMEOUT=600 (seconds)",
                    rec.dir.join("console.log").display(),
                    tail(&rec.dir.join("console.log"), 15)
                )));
            }
        }
    }
    Err(failed("no accelerator to try"))
}
