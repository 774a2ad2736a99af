//! The local record of a lab: what lvslab changed on each host and what was
//! there before, so `down` reverts exactly that (and only that), even after an
//! interrupted `up`. One directory per lab; a lock file keeps two lvslab
//! processes from changing one lab at the same time.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod records;

pub use records::{Infra, PRIVATE_DIRS, Reach, VmRecord, is_private};

use crate::plan::Resource;
use crate::plan::assess::Original;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("lab {lab} is being changed by another lvslab process ({holder}); wait for it to finish")]
    Locked { lab: String, holder: String },
    /// The cause is the error's source (printed after it).
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unreadable lab state: {message}")]
    Corrupt { path: String, message: String },
}

/// Where lab state lives: `$LVSLAB_STATE_DIR`, else `/var/lib/lvslab` for
/// root, else `$XDG_STATE_HOME/lvslab` or `~/.local/state/lvslab`.
pub fn state_root() -> PathBuf {
    if let Some(d) = std::env::var_os("LVSLAB_STATE_DIR") {
        return PathBuf::from(d);
    }
    if is_root() {
        return PathBuf::from("/var/lib/lvslab");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("lvslab");
    }
    std::env::home_dir()
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join(".local/state/lvslab")
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The names of the labs recorded under the state root.
pub fn list_labs() -> Result<Vec<String>, StateError> {
    let root = state_root();
    let mut labs = Vec::new();
    match fs::read_dir(&root) {
        Ok(entries) => {
            for e in entries.flatten() {
                if e.path().join("state.json").exists() {
                    labs.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&root)(e)),
    }
    labs.sort();
    Ok(labs)
}

/// The version of the record's layout this lvslab writes. A record without
/// one is from before versions (read as 1); a newer one is refused.
pub const SCHEMA: u32 = 2;

fn legacy_schema() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    #[serde(default = "legacy_schema")]
    pub schema: u32,
    pub lab: String,
    /// The topology file it was brought up from.
    pub topology: Option<String>,
    /// Unix time of the first change.
    pub since: u64,
    /// `ssh`, `netns` or `vm`.
    #[serde(default)]
    pub provider: Option<crate::spec::Provider>,
    /// How each host was reached, so `down LAB` works without the topology.
    #[serde(default)]
    pub reach: BTreeMap<String, Reach>,
    /// Objects a provider created on this machine, in creation order.
    #[serde(default)]
    pub infra: Vec<Infra>,
    /// The vm provider's VM, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmRecord>,
    /// The topology's hosts as the last `up` brought them up (a host missing
    /// from the file since is one `up` removes and `drift` reports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lab_hosts: Vec<String>,
    pub hosts: BTreeMap<String, HostState>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostState {
    pub changes: Vec<Change>,
}

/// One resource lvslab changed, with what was there before.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub phase: String,
    /// (phase index, step index) in the plan: reverts run in reverse order.
    pub order: (usize, usize),
    pub id: String,
    pub summary: String,
    /// As planned (secrets as placeholders), so `down` works without the topology.
    pub resource: Resource,
    pub original: Original,
    /// The topmost directory that did not exist when the step (a file, line
    /// or directory) was first observed: its `mkdir -p` made it and those
    /// below, which `down` removes while they are empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made_dirs: Option<crate::plan::assess::MadeDirs>,
}

impl Default for LabState {
    fn default() -> Self {
        LabState {
            schema: SCHEMA,
            lab: String::new(),
            topology: None,
            since: 0,
            provider: None,
            reach: BTreeMap::new(),
            infra: Vec::new(),
            vm: None,
            lab_hosts: Vec::new(),
            hosts: BTreeMap::new(),
        }
    }
}

impl LabState {
    /// Check a record read from disk before anything acts on it: a record is
    /// input, not trusted. Every name must pass the grammar it passed when it
    /// was created (lab and host names, namespace and link names lvslab
    /// makes), every path must be one lvslab makes (the VM's directory is the
    /// lab directory's `vm`), and every recorded change must be a resource
    /// lvslab plans ([`Resource::check_recorded`]).
    pub fn check(&self, dir: &LabDir) -> Result<(), String> {
        use crate::model::names::is_simple_name;
        if self.schema > SCHEMA {
            return Err(format!(
                "written by a newer lvslab (record version {}, this one reads up to {SCHEMA})",
                self.schema
            ));
        }
        if self.lab != dir.lab || !is_simple_name(&self.lab) {
            return Err(format!(
                "it names lab {:?}, in the directory of lab {:?}",
                self.lab, dir.lab
            ));
        }
        for h in self.lab_hosts.iter().chain(self.hosts.keys()).chain(self.reach.keys()) {
            check_host(h)?;
        }
        for i in &self.infra {
            check_infra(i, &self.lab)?;
        }
        if let Some(vm) = &self.vm
            && vm.dir != dir.path.join("vm")
        {
            return Err(format!(
                "the VM's directory {} is not {}",
                vm.dir.display(),
                dir.path.join("vm").display()
            ));
        }
        if self
            .topology
            .as_deref()
            .is_some_and(|t| t.chars().any(char::is_control))
        {
            return Err("the topology's path holds control characters".into());
        }
        for (h, hs) in &self.hosts {
            for c in &hs.changes {
                check_change(h, c)?;
            }
        }
        for (h, r) in &self.reach {
            let user_ok = !r.user.is_empty()
                && r.user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            let addr_ok = !r.address.is_empty()
                && r.address
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
            if !user_ok || !addr_ok {
                return Err(format!(
                    "{h}: recorded address {:?} or user {:?} is not valid",
                    r.address, r.user
                ));
            }
        }
        Ok(())
    }

    pub fn is_recorded(&self, host: &str, id: &str) -> bool {
        self.hosts
            .get(host)
            .is_some_and(|h| h.changes.iter().any(|c| c.id == id))
    }

    /// Record a change. The first original wins (it is what was there before
    /// lvslab); the resource is updated to the latest applied, so `down`
    /// reverts what is really there.
    pub fn record(&mut self, host: &str, change: Change) {
        let h = self.hosts.entry(host.to_string()).or_default();
        match h.changes.iter_mut().find(|c| c.id == change.id) {
            Some(c) => {
                // A file's recorded content is what lvslab last *wrote* (down
                // removes a file it made only while it holds that): it moves
                // on when a write is confirmed (`settle`), not before.
                if !matches!(c.resource, Resource::File { .. }) {
                    c.resource = change.resource;
                }
                c.summary = change.summary;
                c.order = change.order;
            }
            None => h.changes.push(change),
        }
    }

    /// A recorded change was observed to hold: keep `resource` as what it is
    /// (its original stays).
    pub fn settle(&mut self, host: &str, id: &str, resource: Resource) {
        if let Some(c) = self
            .hosts
            .get_mut(host)
            .and_then(|h| h.changes.iter_mut().find(|c| c.id == id))
        {
            c.resource = resource;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.values().all(|h| h.changes.is_empty()) && self.infra.is_empty() && self.vm.is_none()
    }

    /// Every host the running lab has, whichever record names it: the hosts
    /// the last `up` brought up, hosts with recorded changes, the netns
    /// provider's namespaces and the hosts it knows how to reach.
    pub fn known_hosts(&self) -> Vec<String> {
        let mut out: Vec<String> = self.lab_hosts.clone();
        let holders = self.infra.iter().filter_map(|i| match i {
            Infra::Holder { host, .. } => Some(host.clone()),
            _ => None,
        });
        for h in self
            .hosts
            .iter()
            .filter(|(_, s)| !s.changes.is_empty())
            .map(|(h, _)| h.clone())
            .chain(holders)
            .chain(self.reach.keys().cloned())
        {
            if !out.contains(&h) {
                out.push(h);
            }
        }
        out.sort();
        out
    }
}

/// A lab's directory under the state root.
pub struct LabDir {
    pub lab: String,
    pub path: PathBuf,
}

/// Held while a process changes a lab; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl LabDir {
    pub fn new(lab: &str) -> Self {
        Self::under(&state_root(), lab)
    }

    pub fn under(root: &Path, lab: &str) -> Self {
        LabDir {
            lab: lab.to_string(),
            path: root.join(lab),
        }
    }

    fn state_file(&self) -> PathBuf {
        self.path.join("state.json")
    }

    /// Whether anything of the lab is recorded here (its directory exists).
    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Take the lab's lock when the lab has a directory; `None` (creating
    /// nothing) when it has none: for verbs that only act on a lab that exists.
    pub fn lock_existing(&self) -> Result<Option<Lock>, StateError> {
        if !self.exists() {
            return Ok(None);
        }
        self.lock().map(Some)
    }

    /// Take the lab's lock, or fail at once if another process holds it.
    pub fn lock(&self) -> Result<Lock, StateError> {
        create_private_dir(&self.path)?;
        let path = self.path.join("lock");
        use std::os::unix::fs::OpenOptionsExt;
        // Never through a symlink (O_NOFOLLOW), and only a regular file is
        // ever truncated.
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32 | rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(&path)
            .map_err(io(&path))?;
        if !file.metadata().map_err(io(&path))?.is_file() {
            return Err(io(&path)(std::io::Error::other("the lock is not a regular file")));
        }
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0).map_err(io(&path))?;
                writeln!(file, "pid {}", std::process::id()).map_err(io(&path))?;
                Ok(Lock { _file: file })
            }
            Err(fs::TryLockError::WouldBlock) => Err(StateError::Locked {
                lab: self.lab.clone(),
                holder: fs::read_to_string(&path).unwrap_or_default().trim().to_string(),
            }),
            Err(fs::TryLockError::Error(e)) => Err(io(&path)(e)),
        }
    }

    /// The lab's record, checked ([`LabState::check`]) before anything may act on it.
    pub fn load(&self) -> Result<Option<LabState>, StateError> {
        let path = self.state_file();
        let corrupt = |message: String| StateError::Corrupt {
            path: path.display().to_string(),
            message,
        };
        let text = match read_regular(&path, MAX_STATE_BYTES) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let state: LabState = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        state.check(self).map_err(corrupt)?;
        Ok(Some(state))
    }

    /// The lab's state, or a new one (first seen now) when there is none.
    pub fn load_or_new(&self, now: u64) -> Result<LabState, StateError> {
        Ok(self.load()?.unwrap_or_else(|| LabState {
            lab: self.lab.clone(),
            since: now,
            ..LabState::default()
        }))
    }

    /// Write atomically (temporary file + rename): a crash never leaves half a record.
    pub fn save(&self, state: &LabState) -> Result<(), StateError> {
        create_private_dir(&self.path)?;
        let path = self.state_file();
        let tmp = self.path.join("state.json.new");
        let text = serde_json::to_string_pretty(state).map_err(|e| StateError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        write_private(&tmp, text.as_bytes()).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.path))
    }

    /// Remove the lab's whole directory (its state, lock, keys, and the vm
    /// provider's VM files): after a complete `down`, nothing of the lab is left.
    pub fn remove_all(&self) -> Result<(), StateError> {
        match fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&self.path)(e)),
            _ => Ok(()),
        }
    }
}

/// The largest lab record read (a big lab's is some hundred kilobytes).
const MAX_STATE_BYTES: u64 = 64 << 20;

/// Read a regular file (not following a symlink at its last component), at
/// most `limit` bytes.
fn read_regular(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32 | rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(limit + 1).read_to_string(&mut text)?;
    if text.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(text)
}

/// Write a new file, mode 0600, never through a symlink or into an existing
/// file (one left by a crash is removed first), and flush it to disk.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn create_private_dir(path: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io(path))?;
    // A lab directory is a directory of its own, never a link to elsewhere.
    if fs::symlink_metadata(path).map_err(io(path))?.file_type().is_symlink() {
        return Err(io(path)(std::io::Error::other(
            "a symbolic link, not the lab's directory",
        )));
    }
    Ok(())
}

fn check_host(h: &str) -> Result<(), String> {
    if crate::model::names::is_simple_name(h) {
        Ok(())
    } else {
        Err(format!("{h:?} is not a host name"))
    }
}

/// The netns provider's hashed link names: `lv` + a letter + 8 hex digits.
fn check_link(n: &str) -> Result<(), String> {
    let ok = n.len() == 11
        && n.starts_with("lv")
        && n[2..3].chars().all(|c| c.is_ascii_lowercase())
        && n[3..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
    if ok {
        Ok(())
    } else {
        Err(format!("{n:?} is not a link lvslab makes"))
    }
}

/// One object the netns provider recorded: only what it makes, named as it names it.
fn check_infra(i: &Infra, lab: &str) -> Result<(), String> {
    match i {
        Infra::Holder { host: h, pid, .. } => {
            check_host(h)?;
            if *pid < 2 {
                return Err(format!("process {pid} is not one lvslab starts"));
            }
        }
        Infra::Netns { name } => {
            let ok = name
                .strip_prefix(&format!("lvslab-{lab}-"))
                .is_some_and(crate::model::names::is_simple_name);
            if !ok {
                return Err(format!("{name:?} is not a namespace of lab {lab}"));
            }
        }
        Infra::Bridge { name } => check_link(name)?,
        Infra::Veth { name, host: h } => {
            check_link(name)?;
            if let Some(h) = h {
                check_host(h)?;
            }
        }
        Infra::Dir { path } => {
            // Only the mount points the netns provider makes.
            if !PRIVATE_DIRS.contains(&path.as_str()) {
                return Err(format!("{path:?} is not a directory lvslab makes"));
            }
        }
    }
    Ok(())
}

/// One recorded change: a resource lvslab plans, and an original that is
/// safe where it reaches a command line.
fn check_change(h: &str, c: &Change) -> Result<(), String> {
    c.resource.check_recorded().map_err(|e| format!("{h}: {e}"))?;
    // What `down` puts back is checked too where it reaches a command line.
    if let (Resource::Package { .. }, Original::Value { value }) = (&c.resource, &c.original) {
        let names = value.strip_prefix("missing:").unwrap_or(value);
        if let Some(bad) = names.split_whitespace().find(|n| {
            n.starts_with('-')
                || !n
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '+' | '-' | ':'))
        }) {
            return Err(format!("{h}: recorded package {bad:?} is not a package name"));
        }
    }
    if let (Resource::Directory { .. }, Original::Value { value }) = (&c.resource, &c.original)
        && u32::from_str_radix(value.trim(), 8).map_or(true, |m| m > 0o7777)
    {
        return Err(format!("{h}: recorded mode {value:?} is not a directory's mode"));
    }
    // The directories a step made: lvslab's path grammar, and an absolute
    // physical location on one line (it is quoted where it is used).
    if let Some(m) = &c.made_dirs
        && (!crate::model::is_safe_path(&m.top) || !m.under.starts_with('/') || m.under.contains(['\n', '\0']))
    {
        return Err(format!(
            "{h}: recorded directories {:?} under {:?} are not paths",
            m.top, m.under
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let dir = LabDir::under(root.path(), "nat");
        let held = dir.lock().unwrap();
        let again = LabDir::under(root.path(), "nat").lock().unwrap_err();
        assert!(
            again
                .to_string()
                .contains("lab nat is being changed by another lvslab process (pid"),
            "{again}"
        );
        drop(held);
        dir.lock().unwrap();
    }

    #[test]
    fn state_round_trips_and_records_once() {
        let root = tempfile::tempdir().unwrap();
        let dir = LabDir::under(root.path(), "nat");
        assert!(dir.load().unwrap().is_none());
        let mut s = LabState {
            lab: "nat".into(),
            ..LabState::default()
        };
        let change = |v: &str| Change {
            phase: "network".into(),
            order: (1, 0),
            id: "sysctl:net.ipv4.ip_forward".into(),
            summary: String::new(),
            resource: Resource::Sysctl {
                key: "net.ipv4.ip_forward".into(),
                value: "1".into(),
            },
            original: Original::Value { value: v.into() },
            made_dirs: None,
        };
        s.record("director", change("0"));
        let mut later = change("1");
        later.resource = Resource::Sysctl {
            key: "net.ipv4.ip_forward".into(),
            value: "2".into(),
        };
        s.record("director", later.clone());
        assert_eq!(s.hosts["director"].changes.len(), 1, "the first original wins");
        assert_eq!(
            s.hosts["director"].changes[0].resource, later.resource,
            "the latest resource is kept"
        );
        dir.save(&s).unwrap();
        let back = dir.load().unwrap().unwrap();
        assert_eq!(
            back.hosts["director"].changes[0].original,
            Original::Value { value: "0".into() }
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path.join("state.json")), 0o600, "a record is private");
        assert_eq!(mode(&dir.path), 0o700);
        dir.remove_all().unwrap();
        assert!(dir.load().unwrap().is_none());
        assert!(!dir.exists(), "nothing of the lab is left");
        assert!(
            dir.lock_existing().unwrap().is_none(),
            "no lock for a lab that is not up"
        );
        assert!(!dir.exists(), "and asking created nothing");
    }
}
