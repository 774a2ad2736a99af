//! Reboot persistence for real hosts (`persist: true`, the default for
//! `provider: ssh` hosts on systemd): after the lab is built, what the kernel
//! forgets on a reboot is written where the host restores it at boot. Derived
//! from the host's own planned steps, so it can never disagree with them:
//!
//! - sysctls → `/etc/sysctl.d/90-lvslab.conf` (a drop-in, never an edit of
//!   sysctl.conf); kernel modules → `/etc/modules-load.d/lvslab.conf`;
//! - addresses, links, routes, firewall-mark rules and NFS mounts → one small
//!   oneshot unit, `lvslab-network.service`, running `/etc/lvslab/boot.sh`
//!   (the same on ifupdown, NetworkManager, netplan and networkd hosts; it
//!   applies the sysctl drop-in again once the lab's interfaces exist);
//! - the ipvsadm table → where the distribution's ipvsadm service restores it
//!   (debian: `/etc/ipvsadm.rules` with `AUTO="true"` in /etc/default/ipvsadm;
//!   rhel: `/etc/sysconfig/ipvsadm` with ipvsadm.service enabled);
//! - keepalived, the web server and the lab's other units → enabled.
//!
//! Every step is an ordinary file or command step: `down` removes the files
//! it created, restores the ones it replaced, and disables what it enabled.

use sha2::{Digest, Sha256};

use super::hex;
use crate::model::{Host, OsFamily, Topology};
use crate::plan::{HostPlan, Phase, Plan, Resource, ServiceManager, Step, ipvs};
use crate::shell::quote;

pub const PHASE: &str = "persist";
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-lvslab.conf";
pub const MODULES_FILE: &str = "/etc/modules-load.d/lvslab.conf";
pub const BOOT_SCRIPT: &str = "/etc/lvslab/boot.sh";
pub const BOOT_UNIT: &str = "lvslab-network.service";

/// A file resource with its content's hash.
pub(crate) fn file_resource(path: &str, content: String, mode: &str) -> Resource {
    let sha256 = hex(&Sha256::digest(content.as_bytes()));
    Resource::File {
        path: path.into(),
        content,
        mode: mode.into(),
        validate: None,
        sha256,
    }
}

fn file(path: &str, content: String, mode: &str, why: &str) -> Step {
    Step::new(file_resource(path, content, mode), why.into())
}

/// `systemctl enable UNIT` as a step: checked with `is-enabled`, so a unit
/// enabled before lvslab is left alone (and never disabled by `down`).
fn enable(unit: &str, why: String) -> Step {
    let u = quote(unit);
    Step::new(
        Resource::Command {
            name: format!("enable-{}", unit.trim_end_matches(".service")),
            check: format!("systemctl is-enabled -q {u}"),
            run: format!("systemctl daemon-reload && systemctl enable {u}"),
            revert: Some(format!("systemctl disable {u}")),
        },
        why,
    )
}

/// The boot script's commands for one planned step (none for what needs no
/// restoring at boot).
fn boot_commands(r: &Resource) -> Vec<String> {
    match r {
        Resource::Address { address, dev } => {
            vec![format!("ip addr replace {} dev {}", quote(address), quote(dev))]
        }
        Resource::Link { name, up: true } => vec![format!("ip link set dev {} up", quote(name))],
        Resource::Route { .. } => r.apply(),
        Resource::Command { name, check, run, .. } if name.starts_with("fwmark-") => {
            vec![format!("{check} 2>/dev/null || {run}")]
        }
        Resource::Mount { target, .. } => {
            let mut cmds = r.apply();
            if let Some(last) = cmds.pop() {
                cmds.push(format!("mountpoint -q {} || {last}", quote(target)));
            }
            cmds
        }
        _ => Vec::new(),
    }
}

/// The persistence steps of one host, from its planned steps.
pub fn host_steps(topo: &Topology, host: &Host, planned: &[&Step]) -> Vec<Step> {
    let lab = &topo.lab;
    let header = format!("# Written by lvslab for lab {lab}; `lvslab down` removes it.\n");
    let mut out = Vec::new();
    let has_sysctls = kernel_files(&header, planned, &mut out);
    let boot: Vec<String> = planned.iter().flat_map(|s| boot_commands(&s.resource)).collect();
    boot_script_steps(lab, boot, has_sysctls, &mut out);
    ipvs_table_steps(host, &header, planned, &mut out);
    unit_enables(planned, &mut out);
    out
}

/// The sysctl drop-in and the modules-load file (each only when the host
/// plans such steps), pushed to `out`; whether there are sysctls.
fn kernel_files(header: &str, planned: &[&Step], out: &mut Vec<Step>) -> bool {
    let lines =
        |f: fn(&Resource) -> Option<String>| -> Vec<String> { planned.iter().filter_map(|s| f(&s.resource)).collect() };
    let sysctls = lines(|r| match r {
        Resource::Sysctl { key, value } => Some(format!("{key} = {value}\n")),
        _ => None,
    });
    if !sysctls.is_empty() {
        out.push(file(
            SYSCTL_FILE,
            format!("{header}{}", sysctls.concat()),
            "0644",
            "the lab's kernel settings, as a drop-in that systemd-sysctl applies at every boot",
        ));
    }
    let modules = lines(|r| match r {
        Resource::KernelModule { name } => Some(format!("{name}\n")),
        _ => None,
    });
    if !modules.is_empty() {
        out.push(file(
            MODULES_FILE,
            format!("{header}{}", modules.concat()),
            "0644",
            "the kernel modules the lab needs, loaded by systemd-modules-load at every boot",
        ));
    }
    !sysctls.is_empty()
}

/// The boot script (the `boot` commands, then the sysctls applied again when
/// there are any), its directory, its oneshot unit and that unit's enabling,
/// pushed to `out`; nothing when there is nothing to restore at boot.
fn boot_script_steps(lab: &str, mut boot: Vec<String>, has_sysctls: bool, out: &mut Vec<Step>) {
    if boot.is_empty() && !has_sysctls {
        return;
    }
    if has_sysctls {
        // Per-interface keys (tunl0, lo) need their interface: apply them again now.
        boot.push(format!("sysctl -q -p {SYSCTL_FILE} || true"));
    }
    out.push(Step::new(
        Resource::Directory {
            path: "/etc/lvslab".into(),
            mode: "0755".into(),
            purge: false,
        },
        "holds the boot script (removed by down when lvslab made it)".into(),
    ));
    let script = format!(
        "#!/bin/sh\n# Written by lvslab for lab {lab}: restores this host's lab addresses, routes,\n\
         # marks and mounts at boot (run by {BOOT_UNIT}); `lvslab down` removes it.\nset -e\n{}\n",
        boot.join("\n")
    );
    out.push(file(
        BOOT_SCRIPT,
        script,
        "0755",
        "what the kernel forgets on a reboot (addresses, routes, marks, mounts), as one script",
    ));
    let unit = format!(
        "# Written by lvslab for lab {lab}; `lvslab down` removes it.\n[Unit]\n\
         Description=lvslab lab {lab}: addresses, routes, marks and mounts of this host\n\
         Wants=network-online.target\nAfter=network-online.target\nBefore=keepalived.service ipvsadm.service\n\n\
         [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={BOOT_SCRIPT}\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    out.push(file(
        &format!("/etc/systemd/system/{BOOT_UNIT}"),
        unit,
        "0644",
        "a oneshot unit that runs the boot script once the network is up, before keepalived and ipvsadm",
    ));
    out.push(enable(BOOT_UNIT, "run the boot script at every boot".into()));
}

/// The planned IPVS table saved where the host family's ipvsadm service
/// restores it at boot (and that restore switched on), pushed to `out`;
/// nothing when the host plans no table.
fn ipvs_table_steps(host: &Host, header: &str, planned: &[&Step], out: &mut Vec<Step>) {
    let table: Vec<&ipvs::IpvsService> = planned
        .iter()
        .flat_map(|s| match &s.resource {
            Resource::IpvsTable { services, .. } => services.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    if table.is_empty() {
        return;
    }
    let owned: Vec<ipvs::IpvsService> = table.into_iter().cloned().collect();
    let rules = format!("{}\n", ipvs::save_lines(&owned).join("\n"));
    match host.os_family() {
        OsFamily::Debian => {
            out.push(file(
                "/etc/ipvsadm.rules",
                rules,
                "0644",
                "the IPVS table in `ipvsadm -S` form, where Debian's ipvsadm service restores it at boot",
            ));
            out.push(file(
                "/etc/default/ipvsadm",
                format!("{header}AUTO=\"true\"\nDAEMON=\"none\"\n"),
                "0644",
                "tells Debian's ipvsadm service to restore /etc/ipvsadm.rules at boot (the file it replaces is put back by down)",
            ));
        }
        OsFamily::Rhel => {
            out.push(file(
                "/etc/sysconfig/ipvsadm",
                rules,
                "0600",
                "the IPVS table in `ipvsadm -S` form, where ipvsadm.service restores it at boot",
            ));
            out.push(enable("ipvsadm.service", "restore the IPVS table at every boot".into()));
        }
    }
}

/// An enabling step for each systemd unit the host's services run (each
/// once, in order of first appearance), pushed to `out`.
fn unit_enables(planned: &[&Step], out: &mut Vec<Step>) {
    let mut units: Vec<&str> = planned
        .iter()
        .filter_map(|s| match &s.resource {
            Resource::Service {
                manager: ServiceManager::Systemd { unit },
                ..
            } => Some(unit.as_str()),
            _ => None,
        })
        .collect();
    units.dedup();
    let mut seen = std::collections::BTreeSet::new();
    for u in units.into_iter().filter(|u| seen.insert(*u)) {
        out.push(enable(
            u,
            format!("start {u} at every boot, as the lab needs it running"),
        ));
    }
}

/// Add the `persist` phase for every host that wants it.
pub fn add(topo: &Topology, mut plan: Plan) -> Plan {
    let mut hosts = Vec::new();
    for h in topo.hosts.iter().filter(|h| h.persist) {
        let planned: Vec<&Step> = plan
            .phases
            .iter()
            .flat_map(|p| &p.hosts)
            .filter(|hp| hp.host == h.name)
            .flat_map(|hp| &hp.steps)
            .collect();
        let steps = host_steps(topo, h, &planned);
        if !steps.is_empty() {
            hosts.push(HostPlan {
                host: h.name.clone(),
                steps,
            });
        }
    }
    if !hosts.is_empty() {
        plan.phases.push(Phase {
            name: PHASE.into(),
            hosts,
        });
    }
    plan
}
