//! Judging observed state against a step, pure and testable without hosts.
//!
//! The executor runs each step's `observe` command (all of a phase's steps in
//! one batched round trip), then asks [`Resource::assess`] whether the step
//! already holds, [`Resource::apply_for`] what to run when it does not (the
//! difference only: an IPVS table gets `-a/-e/-d`, never a flush), and
//! [`Resource::original`] what to record so `down` can put things back.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Resource, ServiceManager, ipvs, line, route_del};
use crate::shell::quote;

/// What an observe command printed, and its exit status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    pub output: String,
    pub rc: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    Ok,
    /// What differs, one line each (e.g. `= 0 (want 1)`).
    Differs(Vec<String>),
}

impl Assessment {
    pub fn is_ok(&self) -> bool {
        matches!(self, Assessment::Ok)
    }
}

/// The state a resource had before lvslab first changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Original {
    /// It did not exist (or was not in the wanted state at all): revert removes it.
    Absent,
    /// A value to put back (sysctl value, route, mode, IPVS lines…).
    Value { value: String },
    /// A file's mode and content (base64).
    File { mode: String, content_base64: String },
}

/// How an observation names the directories missing above a path: the
/// topmost of them, then ` under ` and where the directory above it really
/// is (symbolic links resolved).
const MISSING_FROM: &str = "directories absent from ";
const UNDER: &str = " under ";

/// The directories a step's `mkdir -p` made: `top` (as spelt in the step's
/// path) and those below it on the way to the step's path; `under`, where
/// the directory holding `top` really was when `up` looked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MadeDirs {
    pub top: String,
    pub under: String,
}

/// What a directory's revert says when it leaves the directory: a link
/// put in its place, or it holds what lvslab did not put there.
pub const DIR_LINK: &str = "lvslab: a symbolic link is in place of the directory";
pub const DIR_NOT_EMPTY: &str = "lvslab: the directory is not empty";

/// A directory's path without a final `/` (records made before such paths
/// were refused): `[ -L p/ ]` would not see a link.
fn dir_path(path: &str) -> &str {
    match path.trim_end_matches('/') {
        "" => "/",
        p => p,
    }
}

/// The directory a file (or directory) at `path` is in.
pub fn parent_dir(path: &str) -> &str {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((d, _)) => d,
    }
}

/// Shell lines printing, when `dir` does not exist, [`MISSING_FROM`], the
/// topmost directory above it that does not, and where the one above that
/// really is (shell builtins only: no process; the working directory is
/// put back).
pub(crate) fn missing_from(dir: &str) -> String {
    format!(
        "lvslab_d={}; lvslab_m=; while [ -n \"$lvslab_d\" ] && [ ! -e \"$lvslab_d\" ] && [ ! -L \"$lvslab_d\" ]; \
         do lvslab_m=$lvslab_d; lvslab_d=${{lvslab_d%/*}}; done; \
         if [ -n \"$lvslab_m\" ]; then lvslab_o=$PWD; \
         ! cd -P -- \"${{lvslab_d:-/}}\" 2>/dev/null || printf '%s\\n' \"{MISSING_FROM}$lvslab_m{UNDER}$PWD\"; \
         cd -- \"$lvslab_o\" 2>/dev/null || :; fi",
        quote(dir)
    )
}

/// The directories a step's `mkdir -p` would make, as its observation saw
/// them missing (none when its directory exists).
pub fn missing_dirs(obs: &Observed) -> Option<MadeDirs> {
    let rest = obs.output.lines().find_map(|l| l.strip_prefix(MISSING_FROM))?;
    let (top, under) = rest.split_once(UNDER)?;
    (top.starts_with('/') && under.starts_with('/')).then(|| MadeDirs {
        top: top.to_string(),
        under: under.trim_end().to_string(),
    })
}

/// The directories from `dir` up to `top`, deepest first (none when `dir`
/// is not `top` or below it).
fn levels<'a>(dir: &'a str, top: &str) -> Vec<&'a str> {
    let below = dir == top || dir.strip_prefix(top).is_some_and(|rest| rest.starts_with('/'));
    if !below || top == "/" || top.is_empty() {
        return Vec::new();
    }
    let mut out = vec![dir];
    let mut d = dir;
    while d != top {
        match d.rsplit_once('/') {
            Some((up, _)) if !up.is_empty() => {
                d = up;
                out.push(d);
            }
            _ => return Vec::new(),
        }
    }
    out
}

/// One script removing the directories `mkdir -p` made for several steps
/// (each `(dir, made)`: the directory of the step's path, and what it
/// made), deepest first across all of them, each only while empty. A step's
/// directories are left alone when one of them is a symbolic link now, or
/// the directory above them is no longer where it was: removing through a
/// link put there since would remove someone else's directories.
pub fn remove_made_dirs(steps: &[(&str, &MadeDirs)]) -> Option<String> {
    let mut s = String::new();
    let mut all: Vec<(&str, usize)> = Vec::new();
    for (k, (dir, made)) in steps.iter().enumerate() {
        let lv = levels(dir, &made.top);
        if lv.is_empty() {
            continue;
        }
        let links: Vec<String> = lv.iter().map(|l| format!("[ ! -L {} ]", quote(l))).collect();
        s.push_str(&format!(
            "lvslab_k{k}=0; if cd -P -- {} 2>/dev/null && [ \"$PWD\" = {} ] && {}; then lvslab_k{k}=1; fi\n",
            quote(parent_dir(&made.top)),
            quote(&made.under),
            links.join(" && ")
        ));
        all.extend(lv.into_iter().map(|l| (l, k)));
    }
    if all.is_empty() {
        return None;
    }
    let depth = |p: &str| p.split('/').filter(|c| !c.is_empty()).count();
    let mut order: Vec<&str> = all.iter().map(|(l, _)| *l).collect();
    order.sort_by(|a, b| depth(b).cmp(&depth(a)).then(a.cmp(b)));
    order.dedup();
    for l in order {
        let guards: Vec<String> = all
            .iter()
            .filter(|(x, _)| *x == l)
            .map(|(_, k)| format!("[ \"$lvslab_k{k}\" = 1 ]"))
            .collect();
        s.push_str(&format!(
            "if {}; then [ -L {p} ] || [ ! -d {p} ] || rmdir -- {p} 2>/dev/null || :; fi\n",
            guards.join(" || "),
            p = quote(l)
        ));
    }
    Some(s)
}

/// Files up to this size are read back whole (for diffs and for `down`).
pub const FILE_READ_LIMIT: u64 = 1 << 20;

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn octal(mode: &str) -> Option<u32> {
    u32::from_str_radix(mode.trim(), 8).ok()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A file as its observe command reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub mode: String,
    pub sha256: String,
    /// The content, when it was small enough to be read.
    pub content: Option<Vec<u8>>,
}

pub fn parse_file_state(obs: &Observed) -> Option<FileState> {
    let mut lines = obs.output.lines();
    let mode = lines.next()?.trim().to_string();
    if mode == "absent" || octal(&mode).is_none() {
        return None;
    }
    let hashed = lines.next()?.split_whitespace().next().unwrap_or("").to_string();
    // Read content follows `-` (empty for an empty file); after a hash (a
    // file too large to read) the line is empty and there is none.
    let content = lines
        .next()
        .map(str::trim)
        .filter(|b| hashed == "-" || !b.is_empty())
        .and_then(decode_base64);
    // `-`: the content was read, and hashed here.
    let sha256 = match (&content, hashed.as_str()) {
        (Some(c), "-") => sha256_hex(c),
        _ => hashed,
    };
    Some(FileState { mode, sha256, content })
}

impl Resource {
    /// The observe command the executor runs. For files it reads mode, hash
    /// and (when small) the content, so a diff can be shown and the original
    /// restored.
    pub fn observe_command(&self) -> String {
        match self {
            // Two programs for a file up to the read limit (its hash is
            // computed here from the content); a larger one is hashed there.
            // An absent file's missing directories are noted too: `down`
            // removes those `mkdir -p` made (see [`missing_dirs`]).
            Resource::File { path, .. } | Resource::Line { path, .. } => {
                let p = quote(path);
                format!(
                    "if [ -f {p} ]; then set -- $(stat -L -c '%a %s' {p}); echo \"$1\"; \
                     if [ \"$2\" -le {FILE_READ_LIMIT} ]; then echo -; base64 -w0 {p}; \
                     else sha256sum < {p}; fi; echo; else echo absent; {}; fi",
                    missing_from(parent_dir(path))
                )
            }
            _ => self.observe(),
        }
    }

    /// Does the observed state satisfy the step? `self` must have its secrets resolved.
    pub fn assess(&self, obs: &Observed) -> Assessment {
        let differs = |s: String| Assessment::Differs(vec![s]);
        let out = obs.output.trim();
        match self {
            Resource::Sysctl { value, .. } => {
                if obs.rc != 0 {
                    differs("does not exist (yet)".into())
                } else if words(out) == words(value) {
                    Assessment::Ok
                } else {
                    differs(format!("= {} (want {value})", words(out)))
                }
            }
            Resource::KernelModule { .. } => match out {
                "loaded" => Assessment::Ok,
                _ => differs("not loaded".into()),
            },
            Resource::Address { address, dev } => {
                let has = out.lines().any(|l| {
                    let t: Vec<&str> = l.split_whitespace().collect();
                    t.windows(2).any(|w| w[0] == "inet" && w[1] == address)
                });
                if has {
                    Assessment::Ok
                } else if obs.rc != 0 {
                    differs(format!("device {dev} does not exist (yet)"))
                } else {
                    differs(format!("{address} missing on {dev}"))
                }
            }
            Resource::Route { via, dev, .. } => assess_route(out, via, dev.as_deref()),
            Resource::Link { name, up } => assess_link(out, name, *up),
            Resource::Directory { mode, .. } => {
                if obs.rc != 0 {
                    differs("absent".into())
                } else if octal(out) == octal(mode) {
                    Assessment::Ok
                } else {
                    differs(format!("mode {out} (want {mode})"))
                }
            }
            Resource::File { content, mode, .. } => assess_file(obs, content, mode),
            Resource::Line { line, regexp, .. } => match line_edit(obs, line, regexp.as_deref()) {
                Err(why) => differs(why),
                Ok((now, then)) if now == then => Assessment::Ok,
                Ok((now, _)) => {
                    let re = regexp.as_deref().and_then(line::regex);
                    match re.and_then(|re| {
                        line::lines_of(&now)
                            .into_iter()
                            .rfind(|l| re.is_match(l))
                            .map(str::to_string)
                    }) {
                        Some(old) => differs(format!("is `{old}` (want `{line}`)")),
                        None => differs(format!("missing: `{line}`")),
                    }
                }
            },
            Resource::Service { config_hash, .. } => {
                let mut lines = out.lines();
                let state = lines.next().unwrap_or("").trim();
                let hash = lines.next().unwrap_or("").trim();
                if state != "active" {
                    differs("not running".into())
                } else if hash != config_hash {
                    differs("running with another configuration (restart needed)".into())
                } else {
                    Assessment::Ok
                }
            }
            Resource::Package { packages, .. } => {
                let missing = missing_packages(packages, out);
                if missing.is_empty() {
                    Assessment::Ok
                } else {
                    differs(format!("not installed: {}", missing.join(" ")))
                }
            }
            Resource::IpvsTable { services, previous } => assess_ipvs(obs, services, previous),
            Resource::Mount { source, .. } => assess_mount(out, source),
            Resource::Command { .. } => {
                if obs.rc == 0 {
                    Assessment::Ok
                } else {
                    differs(format!("check exited {}", obs.rc))
                }
            }
        }
    }

    /// The commands that bring the observed state to the wanted one (only the
    /// difference where the resource allows it). `self` must have its secrets resolved.
    pub fn apply_for(&self, obs: &Observed) -> Vec<String> {
        match self {
            Resource::IpvsTable { services, previous } => match ipvs::parse_save(&obs.output) {
                Ok(live) => ipvs::diff(services, previous, &live)
                    .iter()
                    .flat_map(ipvs::IpvsChange::commands)
                    .collect(),
                // Never a guess: the step fails with the reason.
                Err(e) => vec![format!(
                    "echo {} >&2; exit 1",
                    quote(&format!("cannot read the IPVS table: {e}"))
                )],
            },
            // A file too large to keep cannot be put back by down: refused,
            // never overwritten silently.
            Resource::File { path, .. } if matches!(parse_file_state(obs), Some(FileState { content: None, .. })) => {
                vec![format!(
                    "echo {} >&2; exit 1",
                    quote(&format!(
                        "{path}: the file there is larger than {FILE_READ_LIMIT} bytes, too large for lvslab \
                         to keep and put back at down: move it away first"
                    ))
                )]
            }
            Resource::File {
                path,
                content,
                mode,
                validate,
                ..
            } => write_file(path, content.as_bytes(), mode, validate.as_deref()),
            // Made with its mode, or its mode changed.
            // (Made meanwhile by another step's `mkdir -p`, another host's on
            // a shared file system: only its mode is set.)
            Resource::Directory { path, mode, .. } if obs.rc != 0 => vec![format!(
                "if [ -d {p} ] && [ ! -L {p} ]; then chmod {m} {p}; elif [ -e {p} ] || [ -L {p} ]; then echo {} >&2; exit 1; \
                 else mkdir -p -m {m} {p}; fi",
                quote(&format!("{path} exists and is not a directory")),
                p = quote(path),
                m = quote(mode)
            )],
            Resource::Directory { path, mode, .. } => vec![format!("chmod {} {}", quote(mode), quote(path))],
            Resource::Line {
                path,
                mode,
                line,
                regexp,
            } => match (line_edit(obs, line, regexp.as_deref()), parse_file_state(obs)) {
                (Ok((_, then)), f) => {
                    let mode = f.map_or(mode.clone(), |f| f.mode);
                    write_file(path, then.as_bytes(), &mode, None)
                }
                (Err(why), _) => vec![format!("echo {} >&2; exit 1", quote(&format!("{path}: {why}")))],
            },
            _ => self.apply(),
        }
    }

    /// A file step's or line step's observation as it will be once its apply
    /// has run: the next line step on the same file in the same round trip
    /// edits from there.
    pub fn observed_after(&self, obs: &Observed) -> Option<Observed> {
        let (path_mode, content) = match self {
            Resource::File { mode, content, .. } => (mode.clone(), content.clone()),
            Resource::Line { mode, line, regexp, .. } => {
                let (_, then) = line_edit(obs, line, regexp.as_deref()).ok()?;
                (parse_file_state(obs).map_or(mode.clone(), |f| f.mode), then)
            }
            _ => return None,
        };
        Some(Observed {
            output: format!("{path_mode}\n-\n{}\n", encode_base64(content.as_bytes())),
            rc: 0,
        })
    }

    /// What to record before the first change, from the observed state.
    pub fn original(&self, obs: &Observed) -> Original {
        let out = obs.output.trim();
        let value = |v: &str| Original::Value { value: v.to_string() };
        match self {
            Resource::Sysctl { .. } if obs.rc == 0 => value(&words(out)),
            Resource::Route { .. } => match out.lines().next() {
                Some(l) if !l.trim().is_empty() => value(l.trim()),
                _ => Original::Absent,
            },
            Resource::Link { .. } if out.contains('<') => {
                value(if self.assess(obs).is_ok() { "same" } else { "other" })
            }
            Resource::Directory { .. } if obs.rc == 0 => value(out),
            Resource::File { .. } => match parse_file_state(obs) {
                Some(FileState {
                    mode, content: Some(c), ..
                }) => Original::File {
                    mode,
                    content_base64: encode_base64(&c),
                },
                // Too large to keep: recorded as a value so down refuses to guess.
                Some(f) => value(&format!(
                    "unreadable ({} bytes limit), mode {}",
                    FILE_READ_LIMIT, f.mode
                )),
                None => Original::Absent,
            },
            Resource::Line { regexp, .. } => {
                let now =
                    parse_file_state(obs).map(|f| String::from_utf8_lossy(&f.content.unwrap_or_default()).into_owned());
                value(&line::original(now.as_deref(), regexp.as_deref()))
            }
            Resource::Service { .. } => value(out.lines().next().unwrap_or("inactive").trim()),
            Resource::IpvsTable { .. } if obs.rc == 0 => value(&obs.output),
            // Whether the mount point existed: down removes it only if lvslab made it.
            Resource::Mount { .. } if out != super::NO_MOUNT_POINT => value("mount point existed"),
            // What was missing is what lvslab installs, and all that down removes.
            Resource::Package { packages, .. } => {
                value(&format!("missing: {}", missing_packages(packages, out).join(" ")))
            }
            _ => Original::Absent,
        }
    }

    /// The commands that put back the recorded original state.
    pub fn revert_for(&self, orig: &Original) -> Result<Vec<String>, String> {
        Ok(match (self, orig) {
            (Resource::Sysctl { key, .. }, Original::Value { value }) => {
                vec![format!("sysctl -qw {}", quote(&format!("{key}={value}")))]
            }
            (Resource::Route { to, via, .. }, Original::Absent) => vec![route_del(to, via)],
            (Resource::Route { .. }, Original::Value { value }) => {
                let args: Vec<String> = value.split_whitespace().map(quote).collect();
                vec![format!("ip route replace {}", args.join(" "))]
            }
            (Resource::Link { .. }, Original::Value { value }) if value == "same" => Vec::new(),
            (Resource::Mount { target, .. }, Original::Absent) => vec![format!(
                "! mountpoint -q {t} || umount {t}; [ ! -d {t} ] || rmdir {t}",
                t = quote(target)
            )],
            // A symbolic link put in its place since is not lvslab's (and
            // `rm -rf` must not go through it), nor is a file system mounted
            // in it (`purge` refuses: unmount it first); a directory holding
            // what lvslab did not put there stays. Both say so (`kept`).
            (Resource::Directory { path, purge: true, .. }, Original::Absent) => {
                let p = quote(dir_path(path));
                vec![
                    format!("if [ -L {p} ]; then echo '{DIR_LINK}'; exit 0; fi"),
                    format!(
                        "! awk -v d={p} '$2 == d || index($2, d \"/\") == 1 {{ f = 1 }} END {{ exit !f }}' /proc/self/mounts \
                         || {{ echo {p}': a file system is mounted in it: unmount it, then run down again' >&2; exit 1; }}"
                    ),
                    format!("rm -rf -- {p}"),
                ]
            }
            (Resource::Directory { path, .. }, Original::Absent) => {
                let p = quote(dir_path(path));
                vec![format!(
                    "if [ -L {p} ]; then echo '{DIR_LINK}'; elif [ -d {p} ] && ! rmdir -- {p} 2>/dev/null; then \
                     if [ -n \"$(ls -A -- {p})\" ]; then echo '{DIR_NOT_EMPTY}'; else rmdir -- {p}; fi; fi"
                )]
            }
            (Resource::Directory { path, .. }, Original::Value { value }) => {
                vec![format!("chmod {} {}", quote(value), quote(path))]
            }
            // Made by lvslab: removed only while it holds what lvslab wrote
            // (a file made or changed by hand since stays), through a
            // symbolic link as it was written. A file with secrets filled in
            // on the host cannot be compared here: removed.
            (Resource::File { path, content, .. }, Original::Absent) => {
                let p = quote(path);
                let follow = format!(
                    "{F}={p}; [ ! -L \"${F}\" ] || {F}=$(readlink -f -- \"${F}\") || {F}={p}",
                    F = TARGET_VAR
                );
                if content.contains(super::SECRET_PLACEHOLDER_PREFIX) {
                    vec![follow, format!("rm -f \"${TARGET_VAR}\"")]
                } else {
                    vec![
                        follow,
                        format!(
                            "[ ! -f \"${F}\" ] || [ \"$(sha256sum < \"${F}\" | cut -d' ' -f1)\" != {} ] || rm -f \"${F}\"",
                            sha256_hex(content.as_bytes()),
                            F = TARGET_VAR
                        ),
                    ]
                }
            }
            (Resource::Line { path, line, .. }, Original::Value { value }) => line::revert(path, line, value),
            (Resource::File { path, .. }, Original::File { mode, content_base64 }) => {
                let content = decode_base64(content_base64).ok_or("recorded content is not base64")?;
                write_file(path, &content, mode, None)
            }
            (Resource::File { path, .. }, Original::Value { value }) => {
                return Err(format!(
                    "{path} was {value} before lvslab replaced it: restore it by hand"
                ));
            }
            (Resource::Service { manager, .. }, Original::Value { value }) if value == "active" => match manager {
                // It ran before us (or its package's install started it):
                // restart it so it picks up the restored configuration, and
                // forget the configuration hash lvslab kept for it.
                ServiceManager::Systemd { unit } => {
                    let mut cmds = vec![format!("systemctl restart {}", quote(unit))];
                    cmds.extend(self.revert().into_iter().skip(1));
                    cmds
                }
                ServiceManager::Daemon { .. } => self.revert(),
            },
            (Resource::IpvsTable { services, .. }, orig) => {
                let mut cmds = self.revert();
                if let Original::Value { value } = orig {
                    // Put back what our services looked like before, if they existed.
                    let ours: Vec<String> = services.iter().map(|s| s.target()).collect();
                    for line in value.lines() {
                        let t: Vec<&str> = line.split_whitespace().collect();
                        let target = t.get(1..3).map(|x| x.join(" ")).unwrap_or_default();
                        if ours.contains(&target) {
                            let args: Vec<String> = t.iter().map(|x| quote(x)).collect();
                            cmds.push(format!("ipvsadm {}", args.join(" ")));
                        }
                    }
                }
                cmds
            }
            (Resource::Package { manager, packages }, Original::Value { value }) => {
                let ours: Vec<&str> = value
                    .strip_prefix("missing:")
                    .unwrap_or("")
                    .split_whitespace()
                    .collect();
                super::package_remove(*manager, packages, &ours)
            }
            (Resource::Command { revert, name, .. }, _) => match revert {
                Some(r) => vec![r.clone()],
                None => return Err(format!("command {name} has no revert command")),
            },
            _ => self.revert(),
        })
    }
}

/// Write a file atomically: the content to a temporary file next to it,
/// mode, optional validation, then rename. Text is written by the shell's
/// own `printf` (no program runs for it); content with NUL bytes or that is
/// not UTF-8 goes through `base64 -d`.
pub fn write_file(path: &str, content: &[u8], mode: &str, validate: Option<&str>) -> Vec<String> {
    let dir = path
        .rsplit_once('/')
        .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d });
    // The temporary file, next to the file written (the rename stays on its
    // file system: atomic), named by a variable of lvslab's own that a
    // `validate` command's `%s` reads (exported: `sh -c '… %s'` sees it).
    let t = format!("\"${NEW_VAR}\"");
    let write = match std::str::from_utf8(content) {
        Ok(text) if !text.contains('\0') => format!("printf '%s' {} > {t}", quote(text)),
        _ => format!("printf '%s' {} | base64 -d > {t}", quote(&encode_base64(content))),
    };
    let mut cmds = vec![
        // Through a symbolic link to the file it names (the link stays,
        // as `/etc/resolv.conf`'s does), never into a directory.
        format!(
            "{F}={p}; [ ! -L \"${F}\" ] || {F}=$(readlink -f -- \"${F}\") || {{ echo {why} >&2; exit 1; }}",
            F = TARGET_VAR,
            p = quote(path),
            why = quote(&format!("{path}: cannot follow its symbolic link"))
        ),
        format!("[ ! -d \"${TARGET_VAR}\" ] || {{ echo \"${TARGET_VAR} is a directory\" >&2; exit 1; }}"),
        format!("[ -d {d} ] || mkdir -p {d}", d = quote(dir)),
        format!("{NEW_VAR}=\"${TARGET_VAR}.lvslab-new\"; export {NEW_VAR}"),
    ];
    match octal(mode) {
        // Made with its mode by the shell's umask (a leftover temporary
        // file is removed first: it would keep its own mode).
        Some(m) if m & !0o666 == 0 => {
            cmds.push(format!(
                "umask {:03o}; [ ! -e {t} ] && [ ! -L {t} ] || rm -f {t}",
                0o777 & !m
            ));
            cmds.push(write);
        }
        _ => cmds.push(write),
    }
    // The file keeps its owner and group (a service's own file stays
    // readable by it), as far as the login may (a user not root keeps the
    // file as theirs); before any chmod, which chown would undo for setuid
    // and setgid bits. The shell's own tests spare the two programs when the
    // login owns it already and no setgid directory gave the new file
    // another group.
    cmds.push(format!(
        "[ ! -e \"${F}\" ] || {{ [ -O \"${F}\" ] && [ -G \"${F}\" ] && [ ! -g \"${{{F}%/*}}/\" ]; }} || chown \"$(stat -c %u:%g -- \"${F}\")\" {t} 2>/dev/null || :",
        F = TARGET_VAR
    ));
    if octal(mode).is_none_or(|m| m & !0o666 != 0) {
        cmds.push(format!("chmod {} {t}", quote(mode)));
    }
    if let Some(v) = validate {
        cmds.push(format!(
            "( {} ) || {{ echo {} >&2; rm -f {t}; exit 1; }}",
            v.replace("%s", &t),
            quote(&format!(
                "{path}: its validate command failed: the file is left as it was"
            ))
        ));
    }
    cmds.push(format!("mv -- {t} \"${TARGET_VAR}\""));
    cmds
}

/// The shell variable holding the temporary file a write makes.
const NEW_VAR: &str = "lvslab_new";

/// The shell variable holding the file a write or revert acts on (a
/// symbolic link's target).
const TARGET_VAR: &str = "lvslab_target";

/// Standard base64 (what coreutils' `base64` writes), decoding with or
/// without padding.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

pub fn encode_base64(data: &[u8]) -> String {
    base64::Engine::encode(&BASE64, data)
}

pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    base64::Engine::decode(&BASE64, s).ok()
}

/// The entries of a package step that the observed `dpkg-query`/`rpm -q`
/// output shows as not installed (an entry `a|b` needs either; its first
/// name is reported).
fn missing_packages<'a>(packages: &'a [String], out: &str) -> Vec<&'a str> {
    let installed = |p: &str| {
        out.lines().any(|l| {
            let l = l.trim();
            (l.starts_with(&format!("{p} ")) && l.ends_with("install ok installed")) || l.starts_with(&format!("{p}-"))
        })
    };
    packages
        .iter()
        .filter(|p| !p.split('|').any(installed))
        .map(|p| p.split('|').next().unwrap_or(p))
        .collect()
}

/// A route's first line names the wanted next hop (and device, if given).
fn assess_route(out: &str, via: &str, dev: Option<&str>) -> Assessment {
    let first = out.lines().next().unwrap_or("");
    let t: Vec<&str> = first.split_whitespace().collect();
    let via_ok = t.windows(2).any(|w| w[0] == "via" && w[1] == via);
    let dev_ok = dev.is_none_or(|d| t.windows(2).any(|w| w[0] == "dev" && w[1] == d));
    if via_ok && dev_ok {
        Assessment::Ok
    } else if first.is_empty() {
        Assessment::Differs(vec![format!("missing (want via {via})")])
    } else {
        Assessment::Differs(vec![format!("is `{first}` (want via {via})")])
    }
}

/// A link exists and is up (or down) as wanted, from `ip link show`'s flags.
fn assess_link(out: &str, name: &str, up: bool) -> Assessment {
    let flags = out.split_once('<').and_then(|(_, r)| r.split_once('>')).map(|(f, _)| f);
    match flags {
        None => Assessment::Differs(vec![format!("{name} does not exist (yet)")]),
        Some(f) => {
            let is_up = f.split(',').any(|x| x == "UP");
            if is_up == up {
                Assessment::Ok
            } else {
                Assessment::Differs(vec![format!("{name} is {}", if is_up { "up" } else { "down" })])
            }
        }
    }
}

/// A line step's file content now and after its edit, from the observation
/// (an absent file is empty); an error when the content was too large to read.
pub fn line_edit(obs: &Observed, line: &str, regexp: Option<&str>) -> Result<(String, String), String> {
    let now = match parse_file_state(obs) {
        None => String::new(),
        Some(FileState { content: None, .. }) => {
            return Err(format!(
                "larger than {FILE_READ_LIMIT} bytes: lvslab edits lines only in smaller files"
            ));
        }
        Some(FileState { content: Some(c), .. }) => String::from_utf8(c).map_err(|_| "not text (UTF-8)".to_string())?,
    };
    let then = line::edit(&now, line, regexp);
    Ok((now, then))
}

/// A file's content (by hash) and mode.
fn assess_file(obs: &Observed, content: &str, mode: &str) -> Assessment {
    match parse_file_state(obs) {
        None => Assessment::Differs(vec!["absent".into()]),
        Some(f) => {
            let mut d = Vec::new();
            if f.sha256 != sha256_hex(content.as_bytes()) {
                d.push("content differs".to_string());
            }
            if octal(&f.mode) != octal(mode) {
                d.push(format!("mode {} (want {mode})", f.mode));
            }
            if d.is_empty() {
                Assessment::Ok
            } else {
                Assessment::Differs(d)
            }
        }
    }
}

/// The live IPVS table against the wanted services (and those lvslab made earlier).
fn assess_ipvs(obs: &Observed, services: &[ipvs::IpvsService], previous: &[ipvs::IpvsService]) -> Assessment {
    if obs.rc != 0 {
        return Assessment::Differs(vec![format!(
            "cannot read the IPVS table: {}",
            obs.output.trim().lines().last().unwrap_or("")
        )]);
    }
    match ipvs::parse_save(&obs.output) {
        Err(e) => Assessment::Differs(vec![e.to_string()]),
        Ok(live) => {
            let changes = ipvs::diff(services, previous, &live);
            if changes.is_empty() {
                Assessment::Ok
            } else {
                Assessment::Differs(changes.into_iter().map(|c| c.description).collect())
            }
        }
    }
}

/// A mount point's source is the wanted one.
fn assess_mount(out: &str, source: &str) -> Assessment {
    let found = out.split_whitespace().next();
    if found == Some(source) {
        Assessment::Ok
    } else if out.is_empty() || out == super::NO_MOUNT_POINT {
        Assessment::Differs(vec!["not mounted".into()])
    } else {
        Assessment::Differs(vec![format!("mounted from {} (want {source})", found.unwrap_or(""))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The directories `mkdir -p` would make are found with builtins (the
    /// working directory kept), and removed deepest first across steps while
    /// empty, never above the topmost one that was missing, never through
    /// a symbolic link put in their place, nor when the directory above
    /// them moved (doubled slashes as written).
    #[test]
    fn missing_directories_are_noted_and_removed_while_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().display().to_string();
        let sh = |script: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("cd /usr\n{script}\necho \"cwd $PWD\""))
                .output()
                .unwrap();
            assert!(out.status.success(), "{script}");
            let output = String::from_utf8_lossy(&out.stdout).into_owned();
            Observed { output, rc: 0 }
        };
        let look = |dir: &str| {
            let seen = sh(&missing_from(dir));
            assert!(
                seen.output.ends_with("cwd /usr\n"),
                "the working directory kept: {seen:?}"
            );
            missing_dirs(&seen)
        };
        let exists = |p: &str| std::path::Path::new(p).exists();
        for (dir, top) in [
            (format!("{t}/a/b/c"), format!("{t}/a")),
            (format!("{t}//x//y"), format!("{t}//x")),
        ] {
            let made = look(&dir).unwrap();
            assert_eq!(made.top, top, "{dir}");
            assert_eq!(std::path::Path::new(&made.under), std::fs::canonicalize(&t).unwrap());
            std::fs::create_dir_all(&dir).unwrap();
            assert_eq!(look(&dir), None, "{dir} exists");
            std::fs::write(format!("{top}/mine"), "").unwrap();
            sh(&remove_made_dirs(&[(&dir, &made)]).unwrap());
            assert!(exists(&top) && !exists(&dir), "{top} holds the user's file: stays");
            std::fs::remove_file(format!("{top}/mine")).unwrap();
            sh(&remove_made_dirs(&[(&dir, &made)]).unwrap());
            assert!(!exists(&top), "{top}: empty, removed");
            assert!(tmp.path().is_dir(), "what was there before stays");
        }
        // Two steps: deepest first across both (`a` goes once `b` and `c` did).
        let (d1, d2) = (format!("{t}/a/b"), format!("{t}/a/c"));
        let m1 = look(&d1).unwrap();
        std::fs::create_dir_all(&d1).unwrap();
        let m2 = look(&d2).unwrap();
        assert_eq!(m2.top, d2);
        std::fs::create_dir_all(&d2).unwrap();
        sh(&remove_made_dirs(&[(&d1, &m1), (&d2, &m2)]).unwrap());
        assert!(!exists(&format!("{t}/a")));
        // A link put in place of a made directory: nothing goes through it.
        let (d, precious) = (format!("{t}/app/conf/x"), format!("{t}/precious"));
        let made = look(&d).unwrap();
        std::fs::create_dir_all(format!("{precious}/conf/x")).unwrap();
        std::os::unix::fs::symlink(&precious, format!("{t}/app")).unwrap();
        sh(&remove_made_dirs(&[(&d, &made)]).unwrap());
        assert!(exists(&format!("{precious}/conf/x")), "not removed through the link");
        // The directory above them replaced by a link: nothing either.
        std::fs::remove_file(format!("{t}/app")).unwrap();
        let (base, moved) = (format!("{t}/base"), format!("{t}/moved"));
        std::fs::create_dir(&base).unwrap();
        let d = format!("{base}/n/m");
        let made = look(&d).unwrap();
        std::fs::remove_dir(&base).unwrap();
        std::fs::create_dir_all(format!("{moved}/n/m")).unwrap();
        std::os::unix::fs::symlink(&moved, &base).unwrap();
        sh(&remove_made_dirs(&[(&d, &made)]).unwrap());
        assert!(exists(&format!("{moved}/n/m")), "the directory above moved: left alone");
        assert_eq!(look("/"), None);
        let m = MadeDirs {
            top: "/z".into(),
            under: "/".into(),
        };
        assert_eq!(remove_made_dirs(&[("/x/y", &m)]), None, "not under it");
        let m = MadeDirs {
            top: "/x".into(),
            under: "/".into(),
        };
        assert_eq!(remove_made_dirs(&[("/xy", &m)]), None, "not under it");
        let m = MadeDirs {
            top: "/".into(),
            under: "/".into(),
        };
        assert_eq!(remove_made_dirs(&[("/x", &m)]), None, "never the root");
        assert_eq!(parent_dir("/x.conf"), "/");
        assert_eq!(parent_dir("/etc/x.conf"), "/etc");
    }

    fn obs(output: &str, rc: i32) -> Observed {
        Observed {
            output: output.into(),
            rc,
        }
    }

    #[test]
    fn base64_round_trips() {
        for s in ["", "a", "ab", "abc", "abcd", "hello\nworld\u{0}\u{ff}"] {
            let e = encode_base64(s.as_bytes());
            assert_eq!(decode_base64(&e).unwrap(), s.as_bytes(), "{s:?} -> {e}");
        }
        assert_eq!(encode_base64(b"Man"), "TWFu");
        assert_eq!(encode_base64(b"Ma"), "TWE=");
    }

    #[test]
    fn sysctl() {
        let r = Resource::Sysctl {
            key: "net.ipv4.conf.all.arp_ignore".into(),
            value: "1".into(),
        };
        assert!(r.assess(&obs("1\n", 0)).is_ok());
        assert_eq!(
            r.assess(&obs("0\n", 0)),
            Assessment::Differs(vec!["= 0 (want 1)".into()])
        );
        assert!(!r.assess(&obs("", 1)).is_ok());
        assert_eq!(r.original(&obs("0\n", 0)), Original::Value { value: "0".into() });
        assert_eq!(
            r.revert_for(&Original::Value { value: "0".into() }).unwrap(),
            ["sysctl -qw net.ipv4.conf.all.arp_ignore=0"]
        );
    }

    #[test]
    fn address_route_link() {
        let a = Resource::Address {
            address: "192.168.4.253/32".into(),
            dev: "lo".into(),
        };
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n1: lo    inet 192.168.4.253/32 scope global lo\\ valid_lft forever\n";
        assert!(a.assess(&obs(out, 0)).is_ok());
        assert!(!a.assess(&obs("1: lo    inet 127.0.0.1/8 scope host lo\n", 0)).is_ok());

        let r = Resource::Route {
            to: "default".into(),
            via: "192.168.2.5".into(),
            dev: None,
        };
        assert!(r.assess(&obs("default via 192.168.2.5 dev eth0\n", 0)).is_ok());
        assert_eq!(
            r.assess(&obs("default via 10.0.2.2 dev eth0 proto dhcp\n", 0)),
            Assessment::Differs(vec![
                "is `default via 10.0.2.2 dev eth0 proto dhcp` (want via 192.168.2.5)".into()
            ])
        );
        let orig = r.original(&obs("default via 10.0.2.2 dev eth0 proto dhcp\n", 0));
        assert_eq!(
            r.revert_for(&orig).unwrap(),
            ["ip route replace default via 10.0.2.2 dev eth0 proto dhcp"]
        );
        assert_eq!(
            r.revert_for(&Original::Absent).unwrap(),
            ["if ip route show default | grep -qF 'via 192.168.2.5 '; then ip route del default via 192.168.2.5; fi"]
        );

        let l = Resource::Link {
            name: "tunl0".into(),
            up: true,
        };
        assert!(l.assess(&obs("5: tunl0@NONE: <NOARP,UP,LOWER_UP> mtu 1480", 0)).is_ok());
        assert!(!l.assess(&obs("5: tunl0@NONE: <NOARP> mtu 1480", 0)).is_ok());
        assert!(!l.assess(&obs("Device \"tunl0\" does not exist.", 1)).is_ok());
    }

    #[test]
    fn files_compare_hash_and_mode_and_keep_the_original() {
        let f = Resource::File {
            path: "/etc/x.conf".into(),
            content: "new\n".into(),
            mode: "0644".into(),
            validate: None,
            sha256: String::new(),
        };
        let live = |content: &str, mode: &str| {
            obs(
                &format!(
                    "{mode}\n{}\n{}\n",
                    sha256_hex(content.as_bytes()),
                    encode_base64(content.as_bytes())
                ),
                0,
            )
        };
        assert!(f.assess(&live("new\n", "644")).is_ok());
        assert_eq!(
            f.assess(&live("old\n", "600")),
            Assessment::Differs(vec!["content differs".into(), "mode 600 (want 0644)".into()])
        );
        assert_eq!(
            f.assess(&obs("absent\n", 0)),
            Assessment::Differs(vec!["absent".into()])
        );
        let orig = f.original(&live("old\n", "600"));
        assert_eq!(
            orig,
            Original::File {
                mode: "600".into(),
                content_base64: encode_base64(b"old\n")
            }
        );
        let cmds = f.revert_for(&orig).unwrap().join("\n");
        // Mode 600 is made by the umask (no chmod runs for it).
        assert!(cmds.contains("umask 177;"), "{cmds}");
        // Made by lvslab: removed only while it holds lvslab's content.
        let rm = f.revert_for(&Original::Absent).unwrap().join("\n");
        assert!(
            rm.contains(&sha256_hex(b"new\n")) && rm.contains("rm -f \"$lvslab_target\""),
            "{rm}"
        );
    }

    /// The write as sh runs it: content byte for byte, the mode asked for
    /// (by the umask, or by chmod for modes a umask cannot give), a
    /// leftover temporary file not in the way.
    #[test]
    fn writes_give_content_and_mode_in_sh() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for (mode, content) in [
            ("0600", "a 'quoted' $HOME `x` \\n\n"),
            ("0755", "#!/bin/sh\n"),
            ("0644", ""),
        ] {
            let p = dir.path().join(format!("sub/f{mode}"));
            let path = p.display().to_string();
            std::fs::create_dir_all(dir.path().join("sub")).unwrap();
            std::fs::write(format!("{path}.lvslab-new"), "leftover").unwrap();
            std::fs::set_permissions(format!("{path}.lvslab-new"), std::fs::Permissions::from_mode(0o777)).unwrap();
            let script = format!(
                "set -e\n( set -e\n{}\n)",
                write_file(&path, content.as_bytes(), mode, None).join("\n")
            );
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(std::fs::read_to_string(&p).unwrap(), content);
            let got = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
            assert_eq!(format!("{got:04o}"), mode);
        }
    }

    #[test]
    fn service_restarts_on_state() {
        let s = Resource::Service {
            name: "web".into(),
            manager: ServiceManager::Systemd { unit: "apache2".into() },
            config_hash: "abc".into(),
            state_dir: "/run/lvslab".into(),
            restart_on: vec![],
        };
        assert!(s.assess(&obs("active\nabc\n", 0)).is_ok());
        assert!(!s.assess(&obs("active\nold\n", 0)).is_ok());
        assert!(!s.assess(&obs("inactive\n", 0)).is_ok());
    }

    #[test]
    fn ipvs_applies_only_the_difference() {
        use crate::model::{Mode, ServiceKey};
        use std::net::Ipv4Addr;
        let t = Resource::IpvsTable {
            services: vec![super::super::IpvsService {
                key: ServiceKey::Tcp(80),
                vip: Ipv4Addr::new(10, 0, 0, 1),
                scheduler: "rr".into(),
                flags: vec![],
                persistence: None,
                netmask: None,
                one_packet: false,
                real_servers: vec![super::super::IpvsDest {
                    address: Ipv4Addr::new(10, 0, 0, 2),
                    port: 80,
                    method: Mode::Dr,
                    weight: 1,
                }],
            }],
            previous: vec![],
        };
        let live = obs("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 3\n", 0);
        assert_eq!(t.apply_for(&live), ["ipvsadm -e -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1"]);
        assert!(
            t.assess(&obs(
                "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1\n",
                0
            ))
            .is_ok()
        );
        let orig = t.original(&live);
        assert_eq!(
            t.revert_for(&orig).unwrap(),
            [
                "! ipvsadm -Ln -t 10.0.0.1:80 >/dev/null 2>&1 || ipvsadm -D -t 10.0.0.1:80",
                "ipvsadm -A -t 10.0.0.1:80 -s rr",
                "ipvsadm -a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 3"
            ]
        );
    }

    #[test]
    fn reverts_of_objects_already_gone_succeed() {
        // Really run: none of these exist here, so each revert must do nothing and exit 0.
        let gone = [
            Resource::Route {
                to: "203.0.113.0/24".into(),
                via: "192.0.2.1".into(),
                dev: None,
            },
            Resource::Address {
                address: "203.0.113.77/32".into(),
                dev: "lo".into(),
            },
            Resource::Directory {
                path: "/nonexistent/lvslab-test-dir".into(),
                mode: "0755".into(),
                purge: false,
            },
            Resource::Mount {
                source: "192.0.2.1:/srv".into(),
                target: "/nonexistent/lvslab-test-mnt".into(),
                fstype: "nfs".into(),
                options: "vers=3".into(),
            },
        ];
        for r in gone {
            let script = r.revert_for(&Original::Absent).unwrap().join("\n");
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
