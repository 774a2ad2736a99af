//! Machine-lab end-to-end tests: `provider: ssh` on real Debian 12 machines
//! (systemd as PID 1, their own sshd, network stack and dpkg/apt), made by
//! tests/machine-lab/mlab as systemd-nspawn machines inside one qemu VM that
//! boots Debian's stock kernel (this machine's kernel has no IPVS). lvslab
//! runs here and reaches them only over SSH, through the VM as a jump host,
//! with pinned host keys. The scenarios and their checks are in
//! tests/machine-lab/scenarios.sh: the course's NAT lab with packages
//! installed by apt, a no-op second `up`, clean `drift`, every machine
//! rebooted and the lab back by itself, and `down` leaving each machine as
//! it was (packages, units, files, sysctls, addresses, routes, IPVS, rules).
//!
//! Needs root, qemu-system-x86, qemu-utils, mmdebstrap, e2fsprogs, zstd,
//! dpkg-dev, openssh-client and apt access to Debian's archive once (.ci/run
//! installs them; the root file system, the repository of the lab's .deb
//! files and the VM image are cached in ~/.cache/lvslab/machine-lab). A
//! missing prerequisite fails this test; it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on the unexpected

use std::process::Command;

#[test]
#[cfg_attr(
    not(feature = "lab"),
    ignore = "lab tier (root, VMs): .ci/run, or cargo test --features lab as root"
)]
fn nat_on_real_debian_machines_over_ssh() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{repo}/tests/machine-lab/mlab"))
        .arg("run")
        .arg(format!("{repo}/tests/machine-lab/scenarios.sh"))
        .args([
            "client:11:public",
            "director:12:public,private",
            "web1:13:private",
            "web2:14:private",
        ])
        .env("LVSLAB", env!("CARGO_BIN_EXE_lvslab"))
        .output()
        .expect("tests/machine-lab/mlab runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    // Kept for the CI log (.ci/run prints its checks and timings).
    let _ = std::fs::write(format!("{repo}/target/machine-lab.log"), format!("{stdout}\n{stderr}"));
    assert!(
        out.status.success(),
        "machine-lab scenarios failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    for check in [
        "ok   nat: up (installs, provisions, verifies): exits 0",
        "ok   reboot: verify passes without up: exits 0",
        "ok   down: web1 is as before up",
    ] {
        assert!(stdout.contains(check), "missing `{check}`:\n{stdout}");
    }
}
