//! `plan`: what the compiler produces. Ordered phases; per host an ordered list
//! of typed steps. Each step is a resource that knows the exact shell commands
//! to observe, apply (from nothing) and revert it. `up`, `drift` and `down`
//! all work from this one model.
//!
//! The JSON form (`lvslab plan --format json`) is a stable interface: see
//! `docs/plan-schema.md`. Secrets never appear in it: file contents hold
//! placeholders that only the executor resolves.

pub mod assess;
pub mod ipvs;
pub mod line;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::{Mode, Secret};
use crate::shell::{heredoc_delimiter, heredoc_safe, quote};

pub use ipvs::{IpvsDest, IpvsService};

pub const SCHEMA: &str = "lvslab.plan/v1";

pub use crate::model::PHASES;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub schema: &'static str,
    pub lab: String,
    /// `None` for a lab with no LVS services.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    pub phases: Vec<Phase>,
    /// What the reader should know about how the plan was made (e.g. an OS
    /// family assumed for a host that declares none).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub notes: Vec<String>,
    /// What the running lab has and the topology no longer declares, one
    /// line each (`host: what`): filled in by `lvslab plan` from the lab's
    /// record, never by the compiler. `up` removes them.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub removals: Vec<String>,
    /// Secret values by name; file contents refer to them as `@@lvslab-secret:NAME@@`.
    #[serde(skip)]
    pub secrets: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub hosts: Vec<HostPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostPlan {
    pub host: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Stable identity of the resource on its host (e.g. `sysctl:net.ipv4.ip_forward`).
    pub id: String,
    pub summary: String,
    pub why: String,
    pub resource: Resource,
    pub observe: String,
    pub apply: Vec<String>,
    pub revert: Vec<String>,
}

impl Step {
    pub fn new(resource: Resource, why: String) -> Self {
        Step {
            id: resource.id(),
            summary: resource.summary(),
            observe: resource.observe(),
            apply: resource.apply(),
            revert: resource.revert(),
            why,
            resource,
        }
    }
}

impl Plan {
    /// A plan of no steps, for reverts that need none (they carry their
    /// resources): `down` without the topology, a removed host.
    pub fn empty(lab: &str) -> Plan {
        Plan {
            schema: SCHEMA,
            lab: lab.to_string(),
            mode: None,
            notes: Vec::new(),
            removals: Vec::new(),
            phases: Vec::new(),
            secrets: Default::default(),
        }
    }
}

pub fn secret_placeholder(name: &str) -> String {
    format!("{SECRET_PLACEHOLDER_PREFIX}{name}@@")
}

/// How every secret placeholder starts.
pub const SECRET_PLACEHOLDER_PREFIX: &str = "@@lvslab-secret:";

/// The one file secrets are filled into.
pub const KEEPALIVED_CONF: &str = "/etc/keepalived/keepalived.conf";

/// The environment variable a generated shell script reads a secret from.
pub fn secret_env(name: &str) -> String {
    let mut s = String::from("LVSLAB_SECRET_");
    s.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    s
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Apt,
    Dnf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServiceManager {
    Systemd {
        unit: String,
    },
    /// A foreground command run in the background with a pid file (no init system).
    Daemon {
        command: String,
        pidfile: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    Sysctl {
        key: String,
        value: String,
    },
    KernelModule {
        name: String,
    },
    Address {
        address: String,
        dev: String,
    },
    Route {
        /// `default` or a network.
        to: String,
        via: String,
        dev: Option<String>,
    },
    Link {
        name: String,
        up: bool,
    },
    Directory {
        path: String,
        mode: String,
        /// Lab data (a shared directory users write into): when lvslab
        /// created it, down removes it with its contents.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        purge: bool,
    },
    File {
        path: String,
        content: String,
        mode: String,
        /// A command that checks the new content before it replaces the file; `%s` is its path.
        validate: Option<String>,
        sha256: String,
    },
    /// A line in a file: `line` replaces the last line `regexp` matches, or
    /// is appended when none does and it is not there already; a missing
    /// file is made (with `mode`). The edit is computed by lvslab from the
    /// content it observed, so `drift` and `--check` show it as a diff.
    Line {
        path: String,
        line: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        regexp: Option<String>,
        /// The mode of the file when lvslab makes it.
        mode: String,
    },
    Service {
        name: String,
        manager: ServiceManager,
        /// Hash of the configuration the running service must have been (re)started with.
        config_hash: String,
        /// Holds `NAME.hash` (and `NAME.pid` for daemons).
        state_dir: String,
        /// Files whose content the service runs with: rewriting one invalidates `NAME.hash`.
        #[serde(default)]
        restart_on: Vec<String>,
    },
    Package {
        manager: PackageManager,
        packages: Vec<String>,
    },
    IpvsTable {
        services: Vec<IpvsService>,
        /// What lvslab's earlier runs put in this table (from the lab's
        /// record, filled in by `up` and `drift`, never by the compiler):
        /// those services no longer in `services` are deleted, and their
        /// real servers no longer declared are drained.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        previous: Vec<IpvsService>,
    },
    Mount {
        source: String,
        target: String,
        fstype: String,
        options: String,
    },
    Command {
        name: String,
        /// Exit status 0 means the desired state holds.
        check: String,
        run: String,
        revert: Option<String>,
    },
}

/// Directories `down` may never remove with their contents, whatever a
/// record says.
const NEVER_PURGED: [&str; 16] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root", "/run", "/sbin", "/srv",
    "/usr", "/var",
];

impl Resource {
    /// Check a resource read back from a lab's record (which is input, not
    /// trusted): every name and path must pass the grammar it passed when it
    /// was planned, so a crafted record cannot name `/`, a path with `..`,
    /// or a value that reads as more than one word. Free shell text
    /// (`command` steps, `validate`) is the user's own, recorded as planned.
    pub fn check_recorded(&self) -> Result<(), String> {
        use crate::model::names::{is_interface_name, is_safe_path};
        let bad = |what: &str, v: &str| Err(format!("recorded {what} {v:?} is not one lvslab plans"));
        let word = |v: &str| {
            !v.is_empty()
                && v.len() <= 255
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '+' | '@'))
        };
        let mode = |m: &str| m.len() <= 4 && !m.is_empty() && m.chars().all(|c| ('0'..='7').contains(&c));
        match self {
            Resource::Sysctl { key, value } => {
                if !word(key) || key.contains(':') {
                    return bad("sysctl", key);
                }
                if value.contains(['\n', '\0']) {
                    return bad("sysctl value", value);
                }
            }
            Resource::KernelModule { name } if !word(name) || name.contains('/') => return bad("module", name),
            Resource::Address { address, dev } => {
                if address.parse::<ipnetwork::IpNetwork>().is_err() {
                    return bad("address", address);
                }
                if !is_interface_name(dev) {
                    return bad("interface", dev);
                }
            }
            Resource::Route { to, via, dev } => {
                if to != "default" && to.parse::<ipnetwork::IpNetwork>().is_err() {
                    return bad("route", to);
                }
                if via.parse::<std::net::IpAddr>().is_err() {
                    return bad("gateway", via);
                }
                if let Some(d) = dev.as_deref().filter(|d| !is_interface_name(d)) {
                    return bad("interface", d);
                }
            }
            Resource::Link { name, .. } if !is_interface_name(name) => return bad("interface", name),
            Resource::Directory { path, mode: m, purge } => {
                if !is_safe_path(path) || !mode(m) {
                    return bad("directory", path);
                }
                let trimmed = path.trim_end_matches('/');
                let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
                if *purge && (NEVER_PURGED.contains(&trimmed) || trimmed.matches('/').count() < 2) {
                    return bad("directory to purge", path);
                }
            }
            Resource::File { path, mode: m, .. } | Resource::Line { path, mode: m, .. }
                if !is_safe_path(path) || !mode(m) =>
            {
                return bad("file", path);
            }
            Resource::Line { path, line, regexp, .. }
                if line.contains('\n') || regexp.as_deref().is_some_and(|r| line::regex(r).is_none()) =>
            {
                return bad("line", path);
            }
            Resource::Service {
                name,
                manager,
                state_dir,
                restart_on,
                ..
            } => {
                if !word(name) || name.contains('/') {
                    return bad("service", name);
                }
                if !is_safe_path(state_dir) {
                    return bad("state directory", state_dir);
                }
                if let Some(p) = restart_on.iter().find(|p| !is_safe_path(p)) {
                    return bad("file", p);
                }
                match manager {
                    ServiceManager::Systemd { unit } if !word(unit) || unit.contains('/') => return bad("unit", unit),
                    ServiceManager::Daemon { pidfile, .. } if !is_safe_path(pidfile) => {
                        return bad("pid file", pidfile);
                    }
                    _ => {}
                }
            }
            Resource::Package { packages, .. } => {
                if let Some(p) = packages.iter().find(|p| !word(p) || p.contains('/')) {
                    return bad("package", p);
                }
            }
            Resource::IpvsTable { services, previous } => {
                for s in services.iter().chain(previous) {
                    if !word(&s.scheduler) || s.scheduler.contains('/') {
                        return bad("scheduler", &s.scheduler);
                    }
                    if let Some(f) = s.flags.iter().find(|f| !word(f) || f.contains('/')) {
                        return bad("scheduler flag", f);
                    }
                }
            }
            Resource::Mount {
                source,
                target,
                fstype,
                options,
            } => {
                if !is_safe_path(target) {
                    return bad("mount point", target);
                }
                if !word(fstype) || fstype.contains('/') {
                    return bad("file system type", fstype);
                }
                if source.contains(char::is_whitespace) || options.contains(char::is_whitespace) {
                    return bad("mount", source);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// What a mount's observe prints when its mount point does not exist (yet).
pub const NO_MOUNT_POINT: &str = "(no mount point)";

/// A shell test that is true when the pid file names a live process (not a
/// zombie: `kill -0` would say yes to one).
fn alive(pidfile: &str) -> String {
    format!(
        "{{ p=$(cat {} 2>/dev/null) && [ -n \"$p\" ] && s=$(sed 's/.*) //' /proc/$p/stat 2>/dev/null) && [ \"${{s%% *}}\" != Z ]; }}",
        quote(pidfile)
    )
}

fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

impl Resource {
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Sysctl { .. } => "sysctl",
            Resource::KernelModule { .. } => "kernel_module",
            Resource::Address { .. } => "address",
            Resource::Route { .. } => "route",
            Resource::Link { .. } => "link",
            Resource::Directory { .. } => "directory",
            Resource::File { .. } => "file",
            Resource::Line { .. } => "line",
            Resource::Service { .. } => "service",
            Resource::Package { .. } => "package",
            Resource::IpvsTable { .. } => "ipvs_table",
            Resource::Mount { .. } => "mount",
            Resource::Command { .. } => "command",
        }
    }

    pub fn id(&self) -> String {
        match self {
            Resource::Sysctl { key, .. } => format!("sysctl:{key}"),
            Resource::KernelModule { name } => format!("kernel_module:{name}"),
            Resource::Address { address, dev } => format!("address:{dev}:{address}"),
            Resource::Route { to, .. } => format!("route:{to}"),
            Resource::Link { name, .. } => format!("link:{name}"),
            Resource::Directory { path, .. } => format!("directory:{path}"),
            Resource::File { path, .. } => format!("file:{path}"),
            Resource::Line { path, line, regexp, .. } => format!("line:{path}:{}", regexp.as_deref().unwrap_or(line)),
            Resource::Service { name, .. } => format!("service:{name}"),
            Resource::Package { packages, .. } => format!("package:{}", packages.join(",")),
            Resource::IpvsTable { .. } => "ipvs_table".into(),
            Resource::Mount { target, .. } => format!("mount:{target}"),
            Resource::Command { name, .. } => format!("command:{name}"),
        }
    }

    pub fn summary(&self) -> String {
        match self {
            Resource::Sysctl { key, value } => format!("sysctl {key} = {value}"),
            Resource::KernelModule { name } => format!("kernel module {name} loaded"),
            Resource::Address { address, dev } => format!("address {address} on {dev}"),
            Resource::Route { to, via, dev } => match dev {
                Some(d) => format!("route {to} via {via} dev {d}"),
                None => format!("route {to} via {via}"),
            },
            Resource::Link { name, up } => format!("link {name} {}", if *up { "up" } else { "down" }),
            Resource::Directory { path, mode, purge } => format!(
                "directory {path} (mode {mode}{})",
                if *purge {
                    ", lab data: down removes its contents"
                } else {
                    ""
                }
            ),
            Resource::File {
                path, content, mode, ..
            } => format!("file {path} (mode {mode}, {} bytes)", content.len()),
            Resource::Line { path, line, .. } => format!("line in {path}: {line}"),
            Resource::Service { name, manager, .. } => match manager {
                ServiceManager::Systemd { unit } => format!("service {name} running (systemd unit {unit})"),
                ServiceManager::Daemon { .. } => format!("service {name} running (daemon)"),
            },
            Resource::Package { packages, .. } => format!("packages installed: {}", packages.join(" ")),
            Resource::IpvsTable { services, .. } => {
                let n: usize = services.iter().map(|s| s.real_servers.len()).sum();
                format!(
                    "ipvs table: {} service{}, {n} real server{}",
                    services.len(),
                    if services.len() == 1 { "" } else { "s" },
                    if n == 1 { "" } else { "s" }
                )
            }
            Resource::Mount {
                source, target, fstype, ..
            } => format!("mount {source} on {target} ({fstype})"),
            Resource::Command { name, .. } => format!("command: {name}"),
        }
    }

    /// One shell command whose output describes the live state of the resource.
    pub fn observe(&self) -> String {
        match self {
            Resource::Sysctl { key, .. } => format!("cat {}", quote(&sysctl_path(key))),
            // /sys/module lists built-in modules too, but some containers
            // hide it; /proc/modules is the other witness.
            Resource::KernelModule { name } => format!(
                "if [ -d /sys/module/{m} ] || grep -q '^{m} ' /proc/modules 2>/dev/null; then echo loaded; else echo absent; fi",
                m = quote(name)
            ),
            Resource::Address { dev, .. } => format!("ip -o -4 addr show dev {}", quote(dev)),
            Resource::Route { to, .. } => format!("ip -4 route show {}", quote(to)),
            Resource::Link { name, .. } => format!("ip -o link show dev {}", quote(name)),
            // Absent unless a directory (a file there is not one; a link to one is).
            // (When absent, the directories missing above it are noted too.)
            Resource::Directory { path, .. } => format!(
                "if [ -d {p} ]; then stat -L -c %a {p}; else {}; false; fi",
                assess::missing_from(assess::parent_dir(path)),
                p = quote(path)
            ),
            Resource::File { path, .. } => format!("sha256sum {}", quote(path)),
            Resource::Line { path, line, .. } => format!("grep -xF -- {} {}", quote(line), quote(path)),
            Resource::Service {
                name,
                manager,
                state_dir,
                ..
            } => {
                let state = format!("cat {} 2>/dev/null", quote(&format!("{state_dir}/{name}.hash")));
                match manager {
                    ServiceManager::Systemd { unit } => format!("systemctl is-active {}; {state}", quote(unit)),
                    ServiceManager::Daemon { pidfile, .. } => {
                        format!("{} && echo active || echo inactive; {state}", alive(pidfile))
                    }
                }
            }
            Resource::Package { manager, packages } => {
                // Every alternative of every entry (`a|b`).
                let pkgs: Vec<String> = packages.iter().flat_map(|p| p.split('|')).map(quote).collect();
                match manager {
                    PackageManager::Apt => format!("dpkg-query -W -f '${{Package}} ${{Status}}\\n' {}", pkgs.join(" ")),
                    PackageManager::Dnf => format!("rpm -q {}", pkgs.join(" ")),
                }
            }
            Resource::IpvsTable { .. } => "ipvsadm -Sn".into(),
            Resource::Mount { target, .. } => format!(
                "findmnt -rn -o SOURCE,FSTYPE,OPTIONS --mountpoint {t} || [ -d {t} ] || echo '{NO_MOUNT_POINT}'",
                t = quote(target)
            ),
            Resource::Command { check, .. } => check.clone(),
        }
    }

    /// The commands that create the resource from nothing, in order. (At run time
    /// only the difference is applied: e.g. an IPVS table gets `-a/-e/-d` for
    /// what differs, never a flush.)
    pub fn apply(&self) -> Vec<String> {
        match self {
            Resource::Sysctl { key, value } => vec![format!("sysctl -qw {}", quote(&format!("{key}={value}")))],
            Resource::KernelModule { name } => vec![format!("modprobe {}", quote(name))],
            Resource::Address { address, dev } => vec![format!("ip addr add {} dev {}", quote(address), quote(dev))],
            Resource::Route { to, via, dev } => {
                let mut c = format!("ip route replace {} via {}", quote(to), quote(via));
                if let Some(d) = dev {
                    c.push_str(&format!(" dev {}", quote(d)));
                }
                if to == "default" {
                    vec![default_route_guard(via), c]
                } else {
                    vec![c]
                }
            }
            Resource::Link { name, up } => vec![format!(
                "ip link show dev {n} >/dev/null 2>&1 || {{ echo 'no interface {n} on this host: name each interface as the host calls it (`name:` under interfaces)' >&2; exit 1; }}; ip link set dev {n} {}",
                if *up { "up" } else { "down" },
                n = quote(name),
            )],
            Resource::Directory { path, mode, .. } => {
                vec![format!("mkdir -p {p} && chmod {} {p}", quote(mode), p = quote(path))]
            }
            Resource::File {
                path,
                content,
                mode,
                validate,
                ..
            } => file_apply(path, content, mode, validate.as_deref(), None),
            Resource::Line {
                path,
                line,
                regexp,
                mode,
            } => line::script(path, line, regexp.as_deref(), mode),
            Resource::Service {
                name,
                manager,
                config_hash,
                state_dir,
                ..
            } => {
                let mut cmds = match manager {
                    // A unit file lvslab just wrote must be read first.
                    ServiceManager::Systemd { unit } => {
                        vec![format!("systemctl daemon-reload && systemctl restart {}", quote(unit))]
                    }
                    ServiceManager::Daemon { command, pidfile } => vec![
                        format!(
                            "if [ -f {p} ]; then kill \"$(cat {p})\" 2>/dev/null || true; rm -f {p}; fi",
                            p = quote(pidfile)
                        ),
                        format!("mkdir -p {}", quote(pidfile.rsplit_once('/').map_or("/", |(d, _)| d))),
                        format!(
                            "setsid sh -c {} </dev/null >/dev/null 2>&1 &",
                            quote(&format!("echo $$ > {}; exec {command}", quote(pidfile)))
                        ),
                        // Wait for the pid file, then make sure the daemon did not exit at once.
                        format!(
                            "i=0; while [ ! -s {p} ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; sleep 0.3; \
                             {} || {{ echo '{name} exited at once' >&2; exit 1; }}",
                            alive(pidfile),
                            p = quote(pidfile)
                        ),
                    ],
                };
                cmds.push(format!(
                    "mkdir -p {d} && echo {config_hash} > {}",
                    quote(&format!("{state_dir}/{name}.hash")),
                    d = quote(state_dir)
                ));
                cmds
            }
            Resource::Package { manager, packages } => package_install(*manager, packages),
            Resource::IpvsTable { services, .. } => ipvs::save_lines(services)
                .into_iter()
                .map(|l| format!("ipvsadm {l}"))
                .collect(),
            Resource::Mount {
                source,
                target,
                fstype,
                options,
            } => {
                let mount = format!(
                    "mount -t {} -o {} {} {}",
                    quote(fstype),
                    quote(options),
                    quote(source),
                    quote(target)
                );
                // Hosts run a phase side by side: a network file system's
                // server may still be starting, so try for up to 30 s.
                let mount = if fstype.starts_with("nfs") {
                    format!(
                        "(i=0; until {mount}; do i=$((i+1)); [ $i -lt 30 ] || exit 1; \
                         echo 'mount: the server is not ready yet, retrying' >&2; sleep 1; done)"
                    )
                } else {
                    mount
                };
                vec![format!("mkdir -p {}", quote(target)), mount]
            }
            Resource::Command { run, .. } => vec![run.clone()],
        }
    }

    /// The commands that undo the resource. `"$LVSLAB_ORIG"` stands for the value
    /// recorded before lvslab first changed it.
    pub fn revert(&self) -> Vec<String> {
        match self {
            Resource::Sysctl { key, .. } => vec![format!("sysctl -qw {}=\"$LVSLAB_ORIG\"", quote(key))],
            // Shared by every namespace and lab: unloading is best effort.
            Resource::KernelModule { name } => vec![format!("modprobe -r {} 2>/dev/null || true", quote(name))],
            // Each revert is a no-op when its object is already gone (removed by hand, say).
            Resource::Address { address, dev } => vec![format!(
                "if ip -o addr show dev {d} 2>/dev/null | grep -qF {needle}; then ip addr del {a} dev {d}; fi",
                d = quote(dev),
                a = quote(address),
                needle = quote(&format!("inet {address} "))
            )],
            Resource::Route { to, via, .. } => vec![
                route_del(to, via),
                "[ -z \"$LVSLAB_ORIG\" ] || ip route add $LVSLAB_ORIG".into(),
            ],
            Resource::Link { name, up } => vec![format!(
                "ip link set dev {} {}",
                quote(name),
                if *up { "down" } else { "up" }
            )],
            Resource::Directory { path, purge: true, .. } => vec![format!("rm -rf {}", quote(path))],
            Resource::Directory { path, .. } => vec![format!("[ ! -d {p} ] || rmdir {p}", p = quote(path))],
            Resource::File { path, .. } => vec![format!(
                "if [ -n \"$LVSLAB_ORIG\" ]; then cp -p \"$LVSLAB_ORIG\" {p}; else rm -f {p}; fi",
                p = quote(path)
            )],
            Resource::Line { path, line, .. } => line::revert(path, line, line::APPENDED),
            Resource::Service {
                name,
                manager,
                state_dir,
                ..
            } => {
                let mut cmds = match manager {
                    ServiceManager::Systemd { unit } => vec![format!("systemctl stop {}", quote(unit))],
                    ServiceManager::Daemon { pidfile, .. } => {
                        vec![format!(
                            "if [ -f {p} ]; then kill \"$(cat {p})\" 2>/dev/null || true; rm -f {p}; fi",
                            p = quote(pidfile)
                        )]
                    }
                };
                cmds.push(format!("rm -f {}", quote(&format!("{state_dir}/{name}.hash"))));
                cmds.push(remove_if_empty(state_dir));
                cmds
            }
            // Without a record of what lvslab installed, nothing is removed
            // (see `revert_for`: the packages that were missing before).
            Resource::Package { .. } => Vec::new(),
            Resource::IpvsTable { services, .. } => services
                .iter()
                .map(|s| format!("! ipvsadm -Ln {t} >/dev/null 2>&1 || ipvsadm -D {t}", t = s.target()))
                .collect(),
            Resource::Mount { target, .. } => {
                vec![format!("! mountpoint -q {t} || umount {t}", t = quote(target))]
            }
            Resource::Command { revert, .. } => revert.iter().cloned().collect(),
        }
    }
}

/// Before a new default route: refuse if it would cut the SSH connection
/// that runs this script, i.e. when the SSH peer (`$SSH_CONNECTION`) is
/// reached only through the current default route (no connected network or
/// more specific route covers it). A NAT real server managed from outside its
/// private network is the case: its default route must go through the DIP.
/// Outside SSH (netns, the boot script) there is no peer and nothing to check.
pub fn default_route_guard(via: &str) -> String {
    format!(
        "lvslab_peer=${{SSH_CONNECTION%% *}}; if [ -n \"$lvslab_peer\" ] && ! ip -4 route show match \"$lvslab_peer\" 2>/dev/null | grep -qv '^default' \
         && ip -4 route get \"$lvslab_peer\" 2>/dev/null | grep -q ' via ' \
         && ! ip -4 route get \"$lvslab_peer\" 2>/dev/null | grep -qF ' via '{v}' '; then \
         echo \"a default route via {v} would cut this SSH connection: $lvslab_peer reaches this host only through its current default route. \
         Manage the host over a network it is directly on (a management network), or give it a route to $lvslab_peer (\\`routes:\\` in the topology)\" >&2; exit 1; fi",
        v = quote(via)
    )
}

/// Delete a route if it is there (`ip route show` matches the exact prefix).
pub fn route_del(to: &str, via: &str) -> String {
    format!(
        "if ip route show {t} | grep -qF {needle}; then ip route del {t} via {v}; fi",
        t = quote(to),
        v = quote(via),
        needle = quote(&format!("via {via} "))
    )
}

impl Plan {
    pub fn host_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for p in &self.phases {
            for h in &p.hosts {
                if !names.contains(&h.host.as_str()) {
                    names.push(&h.host);
                }
            }
        }
        names
    }

    pub fn step_count(&self) -> usize {
        self.phases.iter().flat_map(|p| &p.hosts).map(|h| h.steps.len()).sum()
    }

    /// Replace secret placeholders with their values (only the executor calls this).
    pub fn resolve_secrets(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (name, secret) in &self.secrets {
            out = out.replace(&secret_placeholder(name), secret.expose());
        }
        out
    }

    /// Keep only the given host's steps.
    pub fn only_host(mut self, host: &str) -> Self {
        for p in &mut self.phases {
            p.hosts.retain(|h| h.host == host);
        }
        self.phases.retain(|p| !p.hosts.is_empty());
        self
    }
}

/// Where a host keeps the names of the packages one package step installed
/// (the step's own and the dependencies that came with them), so that `down`
/// removes exactly those. On the host, because only the host knows which
/// dependencies an install pulled in; under /var/lib, because it must
/// survive a reboot.
pub const PACKAGES_RECORD_DIR: &str = "/var/lib/lvslab/packages";

/// The record file of one package step (named by a hash of its entries).
pub fn packages_record(packages: &[String]) -> String {
    let hex = assess::sha256_hex(packages.join(" ").as_bytes());
    format!("{PACKAGES_RECORD_DIR}/{}.installed", &hex[..16])
}

/// Every installed package's name, one per line, sorted.
fn installed_list(manager: PackageManager) -> &'static str {
    match manager {
        PackageManager::Apt => {
            "dpkg-query -W -f '${db:Status-Abbrev} ${Package}\\n' | awk '$1 ~ /^i/ {print $2}' | LC_ALL=C sort -u"
        }
        // gpg-pubkey: repository keys an install imports are not packages to remove.
        PackageManager::Dnf => "rpm -qa --qf '%{NAME}\\n' | grep -vx gpg-pubkey | LC_ALL=C sort -u",
    }
}

/// Install the entries of a package step that are missing now (an entry
/// `a|b` is satisfied by either; `a` is what gets installed). With apt, a
/// failed install is retried once after `apt-get update` (stale lists).
/// Every package the install added (dependencies too) is added to the
/// step's record on the host ([`packages_record`]).
fn package_install(manager: PackageManager, packages: &[String]) -> Vec<String> {
    let (installed, install) = match manager {
        PackageManager::Apt => (
            "dpkg-query -W -f '${Status}' \"$1\" 2>/dev/null | grep -q 'install ok installed'",
            "{ apt-get install -y -q --no-install-recommends $m || { apt-get update -q && apt-get install -y -q --no-install-recommends $m; }; }",
        ),
        PackageManager::Dnf => (
            "rpm -q \"$1\" >/dev/null 2>&1",
            // yum where dnf is absent (CentOS 7, the handouts' platform).
            "if command -v dnf >/dev/null; then dnf install -y $m; else yum install -y $m; fi",
        ),
    };
    let mut cmds = vec![format!("lvslab_installed() {{ {installed}; }}"), "m=''".to_string()];
    for p in packages {
        let alts: Vec<String> = p.split('|').map(|a| format!("lvslab_installed {}", quote(a))).collect();
        let first = p.split('|').next().unwrap_or(p);
        cmds.push(format!("{} || m=\"$m {}\"", alts.join(" || "), first));
    }
    let env = if manager == PackageManager::Apt {
        "export DEBIAN_FRONTEND=noninteractive; "
    } else {
        ""
    };
    let list = installed_list(manager);
    let rec = quote(&packages_record(packages));
    // What was installed before stays next to the record until the install
    // is recorded, so an install that fails or is killed half-way is still
    // recorded by the next run (or counted by `down`).
    cmds.push(format!(
        "[ -z \"$m\" ] || {{ {env}mkdir -p {dir} && {{ [ -f {rec}.before ] || {list} > {rec}.before; }} && \
         if {install}; then lvslab_rc=0; else lvslab_rc=$?; fi; \
         {{ cat {rec} 2>/dev/null; {list} | LC_ALL=C comm -13 {rec}.before -; }} \
         | LC_ALL=C sort -u > {rec}.new && mv {rec}.new {rec} && rm -f {rec}.before; [ $lvslab_rc -eq 0 ]; }}",
        dir = quote(PACKAGES_RECORD_DIR),
    ));
    cmds
}

/// Remove what one package step installed: the packages recorded missing
/// before it ran, and the dependencies its record on the host names (apt:
/// purged, so no configuration is left behind). Nothing else: if removing
/// them would take another package with them (one installed later that
/// needs them), nothing is removed and the step fails, naming it.
pub(crate) fn package_remove(manager: PackageManager, packages: &[String], installed_by_us: &[&str]) -> Vec<String> {
    if installed_by_us.is_empty() {
        return Vec::new();
    }
    let rec = quote(&packages_record(packages));
    let ours: Vec<String> = installed_by_us.iter().map(|p| quote(p)).collect();
    let still = match manager {
        PackageManager::Apt => "dpkg-query -W -f '${db:Status-Abbrev}' \"$x\" 2>/dev/null | grep -q '^[ir]'",
        PackageManager::Dnf => "rpm -q \"$x\" >/dev/null 2>&1",
    };
    let remove = match manager {
        PackageManager::Apt => {
            "export DEBIAN_FRONTEND=noninteractive; \
             for x in $(apt-get -s purge $p 2>/dev/null | awk '/^Purg /{print $2}'); do \
             case \" $p \" in *\" $x \"*) ;; *) echo \"removing$p would also remove $x, which lvslab did not install: all left installed\" >&2; exit 1;; esac; done; \
             apt-get purge -y -qq $p"
        }
        // rpm -e removes exactly these, and refuses if anything else needs them.
        PackageManager::Dnf => "rpm -e $p",
    };
    vec![
        // An install killed half-way left its "before" list: what came since is ours.
        format!(
            "p=''; for x in {} $(cat {rec} 2>/dev/null) $([ ! -f {rec}.before ] || {list} | LC_ALL=C comm -13 {rec}.before -); do if {still}; then p=\"$p $x\"; fi; done",
            ours.join(" "),
            list = installed_list(manager)
        ),
        format!("[ -z \"$p\" ] || {{ {remove}; }}"),
        format!("rm -f {rec} {rec}.before"),
        remove_if_empty(PACKAGES_RECORD_DIR),
    ]
}

/// Remove one of lvslab's own record directories once nothing is left in it,
/// and its parent too when that is lvslab's (`/var/lib/lvslab`): `down`
/// leaves no empty directory behind.
fn remove_if_empty(dir: &str) -> String {
    // Scripts run under `set -e`: a directory still in use is no failure.
    let mut cmd = format!("rmdir {} 2>/dev/null || true", quote(dir));
    if let Some((parent, _)) = dir.rsplit_once('/').filter(|(p, _)| p.ends_with("/lvslab")) {
        cmd.push_str(&format!("; rmdir {} 2>/dev/null || true", quote(parent)));
    }
    cmd
}

/// A `sed` command that fills secret placeholders in `path` from environment
/// variables (used by generated shell scripts, which must not contain secrets).
fn secret_fill_command(path: &str, content: &str, secrets: &BTreeMap<String, Secret>) -> Option<String> {
    let mut exprs = Vec::new();
    for name in secrets.keys() {
        let ph = secret_placeholder(name);
        if content.contains(&ph) {
            let env = secret_env(name);
            exprs.push(format!(
                "-e \"s|{ph}|$(printf '%s' \"${env}\" | sed 's/[|&\\\\]/\\\\&/g')|g\""
            ));
        }
    }
    (!exprs.is_empty()).then(|| format!("sed -i {} {}", exprs.join(" "), quote(path)))
}

fn file_apply(path: &str, content: &str, mode: &str, validate: Option<&str>, fill: Option<String>) -> Vec<String> {
    let tmp = format!("{path}.lvslab-new");
    let dir = path
        .rsplit_once('/')
        .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
    // Byte for byte what `up` writes: a here-document ends its text with a
    // newline, so content without a final one goes the other way.
    let body = content.to_string();
    // Made private (umask 077, after removing any file a killed run left) so a
    // secret filled in below is never readable at the umask's mode; the last
    // chmod sets the file's mode.
    let write = if heredoc_safe(&body) && (body.is_empty() || body.ends_with('\n')) {
        let delim = heredoc_delimiter(&body);
        format!(
            "rm -f {tmp} && (umask 077 && cat > {tmp}) <<'{delim}'\n{body}{delim}",
            tmp = quote(&tmp)
        )
    } else if !body.contains('\0') && !body.ends_with('\n') {
        // Text without a final newline (a web page, say): as it reads.
        format!(
            "rm -f {tmp} && (umask 077 && printf '%s' {text} > {tmp})",
            tmp = quote(&tmp),
            text = quote(&body)
        )
    } else {
        format!(
            "rm -f {tmp} && (umask 077 && printf '%s' {b64} | base64 -d > {tmp})",
            tmp = quote(&tmp),
            b64 = quote(&assess::encode_base64(body.as_bytes()))
        )
    };
    let mut cmds = vec![format!("mkdir -p {}", quote(dir)), write];
    cmds.extend(fill);
    cmds.push(format!("chmod {} {}", quote(mode), quote(&tmp)));
    if let Some(v) = validate {
        cmds.push(v.replace("%s", &quote(&tmp)));
    }
    cmds.push(format!("mv {} {}", quote(&tmp), quote(path)));
    cmds
}

impl Resource {
    /// `apply()` for a generated shell script: secrets are read from the
    /// environment (each checked with `${VAR:?}`) instead of being written out.
    pub fn apply_for_script(&self, secrets: &BTreeMap<String, Secret>) -> Vec<String> {
        match self {
            Resource::File {
                path,
                content,
                mode,
                validate,
                ..
            } => {
                let tmp = format!("{path}.lvslab-new");
                let Some(fill) = secret_fill_command(&tmp, content, secrets) else {
                    return self.apply();
                };
                let mut cmds: Vec<String> = secrets
                    .keys()
                    .filter(|n| content.contains(&secret_placeholder(n)))
                    .map(|n| {
                        format!(
                            ": \"${{{e}:?set {e} to the secret; lvslab never prints it}}\"",
                            e = secret_env(n)
                        )
                    })
                    .collect();
                cmds.extend(file_apply(path, content, mode, validate.as_deref(), Some(fill)));
                cmds
            }
            _ => self.apply(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An NFS mount whose server is still starting succeeds once it answers;
    /// one that never answers fails after its retries, with the step's status.
    #[test]
    fn nfs_mount_waits_for_a_starting_server() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // A fake `mount` that fails until it has been called `$OK_AFTER` times, and a `sleep` that does not wait.
        std::fs::write(
            bin.join("mount"),
            "#!/bin/sh\nn=$(cat \"$COUNT\" 2>/dev/null || echo 0); n=$((n+1)); echo $n > \"$COUNT\"\n[ $n -gt \"$OK_AFTER\" ]\n",
        )
        .unwrap();
        std::fs::write(bin.join("sleep"), "#!/bin/sh\n").unwrap();
        for f in ["mount", "sleep"] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(bin.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let target = dir.path().join("shared");
        let r = Resource::Mount {
            source: "192.0.2.1:/srv/share".into(),
            target: target.display().to_string(),
            fstype: "nfs".into(),
            options: "vers=3".into(),
        };
        let run = |ok_after: u32| {
            let count = dir.path().join(format!("count-{ok_after}"));
            let out = std::process::Command::new("sh")
                .arg("-ec")
                .arg(r.apply().join("\n"))
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .env("COUNT", &count)
                .env("OK_AFTER", ok_after.to_string())
                .output()
                .unwrap();
            let calls: u32 = std::fs::read_to_string(&count).unwrap().trim().parse().unwrap();
            (
                out.status.success(),
                calls,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ok, calls, err) = run(3);
        assert!(ok && calls == 4, "{calls} calls: {err}");
        assert!(err.contains("not ready yet, retrying"), "{err}");
        let (ok, calls, _) = run(1000);
        assert!(!ok && calls == 30, "{calls} calls");
        // Other file systems are mounted once: a failure is the answer.
        let once = Resource::Mount {
            source: "tmpfs".into(),
            target: "/mnt/x".into(),
            fstype: "tmpfs".into(),
            options: "size=1m".into(),
        };
        assert_eq!(once.apply().last().map(|c| c.starts_with("mount ")), Some(true));
    }

    /// A service's revert runs under `set -e` (as every batch does): it
    /// removes lvslab's record directory once empty, and a directory still
    /// in use is no failure.
    #[test]
    fn service_revert_removes_empty_record_dirs_under_set_e() {
        let tmp = tempfile::tempdir().unwrap();
        let lv = tmp.path().join("lvslab");
        let dir = lv.join("services");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(lv.join("packages")).unwrap();
        std::fs::write(dir.join("web.hash"), "x").unwrap();
        let svc = Resource::Service {
            name: "web".into(),
            manager: ServiceManager::Daemon {
                command: "true".into(),
                pidfile: dir.join("web.pid").display().to_string(),
            },
            config_hash: String::new(),
            state_dir: dir.display().to_string(),
            restart_on: Vec::new(),
        };
        let run = || {
            let script = format!("set -e\n{}\n", svc.revert().join("\n"));
            std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .status()
                .unwrap()
        };
        // The parent still holds another record: it stays, and that is fine.
        assert!(run().success());
        assert!(!dir.exists() && lv.join("packages").exists());
        std::fs::remove_dir(lv.join("packages")).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        assert!(run().success());
        assert!(!lv.exists());
    }

    #[test]
    fn package_commands_per_manager() {
        let apt = Resource::Package {
            manager: PackageManager::Apt,
            packages: vec!["ipvsadm".into(), "keepalived".into()],
        };
        assert_eq!(
            apt.observe(),
            "dpkg-query -W -f '${Package} ${Status}\\n' ipvsadm keepalived"
        );
        let apply = apt.apply();
        assert_eq!(
            apply[..4],
            [
                "lvslab_installed() { dpkg-query -W -f '${Status}' \"$1\" 2>/dev/null | grep -q 'install ok installed'; }",
                "m=''",
                "lvslab_installed ipvsadm || m=\"$m ipvsadm\"",
                "lvslab_installed keepalived || m=\"$m keepalived\"",
            ]
        );
        // The install (retried after an update) records every package it added.
        let rec = packages_record(&["ipvsadm".into(), "keepalived".into()]);
        assert!(
            rec.starts_with("/var/lib/lvslab/packages/") && rec.ends_with(".installed"),
            "{rec}"
        );
        assert!(
            apply[4].contains("apt-get update -q && apt-get install -y -q --no-install-recommends $m"),
            "{}",
            apply[4]
        );
        assert!(
            apply[4].contains(&format!("comm -13 {rec}.before -; }} | LC_ALL=C sort -u > {rec}.new")),
            "{}",
            apply[4]
        );
        let orig = crate::plan::assess::Original::Value {
            value: "missing: keepalived".into(),
        };
        let down = apt.revert_for(&orig).unwrap();
        assert!(down[0].starts_with("p=''; for x in keepalived $(cat "), "{}", down[0]);
        assert!(
            down[1].contains("apt-get purge -y -qq $p") && down[1].contains("would also remove $x"),
            "{}",
            down[1]
        );
        assert_eq!(down[2], format!("rm -f {rec} {rec}.before"));
        let dnf = Resource::Package {
            manager: PackageManager::Dnf,
            packages: vec!["httpd".into(), "busybox|busybox-static".into()],
        };
        assert_eq!(dnf.observe(), "rpm -q httpd busybox busybox-static");
        assert_eq!(
            dnf.apply()[3],
            "lvslab_installed busybox || lvslab_installed busybox-static || m=\"$m busybox\""
        );
        // Without a record of what was missing, down removes nothing.
        assert!(dnf.revert().is_empty());
        let orig = crate::plan::assess::Original::Value {
            value: "missing: busybox".into(),
        };
        let down = dnf.revert_for(&orig).unwrap();
        assert!(down[1].ends_with("{ rpm -e $p; }"), "{down:?}");
        let none = crate::plan::assess::Original::Value {
            value: "missing:".into(),
        };
        assert!(dnf.revert_for(&none).unwrap().is_empty());
    }

    #[test]
    fn file_with_secret_reads_it_from_the_environment_in_scripts() {
        let mut secrets = BTreeMap::new();
        secrets.insert("vrrp-VI_1".to_string(), Secret::new("s3cret".into()));
        let f = Resource::File {
            path: "/etc/keepalived/keepalived.conf".into(),
            content: format!("auth_pass {}\n", secret_placeholder("vrrp-VI_1")),
            mode: "0640".into(),
            validate: Some("keepalived -t -f %s".into()),
            sha256: String::new(),
        };
        let script = f.apply_for_script(&secrets).join("\n");
        assert!(!script.contains("s3cret"));
        assert!(script.starts_with(": \"${LVSLAB_SECRET_VRRP_VI_1:?"));
        // The placeholder is filled before the validation runs on the new file.
        let fill = script.find("sed -i").unwrap();
        let check = script.find("keepalived -t -f").unwrap();
        assert!(fill < check);
    }

    #[test]
    fn ids_are_stable_identities() {
        let a = Resource::Address {
            address: "192.168.4.253/32".into(),
            dev: "lo".into(),
        };
        assert_eq!(a.id(), "address:lo:192.168.4.253/32");
        assert_eq!(
            Resource::Sysctl {
                key: "net.ipv4.ip_forward".into(),
                value: "1".into()
            }
            .observe(),
            "cat /proc/sys/net/ipv4/ip_forward"
        );
    }
}
