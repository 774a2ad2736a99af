//! The runner: applies a plan to hosts, phase by phase.
//!
//! Per host and phase, round trips do not grow with the number of steps:
//! 1. one round trip observes every step of the phase (a batched script whose
//!    output is split by markers),
//! 2. the difference is computed here, locally,
//! 3. one round trip applies only the steps that differ (in plan order,
//!    stopping at the first failure),
//! 4. one round trip observes the applied steps again: a step is reported
//!    `changed` only if it was observed to hold afterwards.
//!
//! Phases are barriers: every host finishes a phase before the next starts.
//! A host that fails stops; the others finish the phase; no later phase
//! starts. Before a step is first changed, its original state is recorded in
//! the lab state (saved before the apply round trip), so `down` can restore it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Semaphore;

use super::batch::{Bulk, Look, apply_batch, nonce, observe_batch, parse_bulk, parse_looks};
pub use super::batch::{batch, parse_batch};
use super::connect::{init_refusal, needs_systemd};
pub use super::transport::HostConn;
use super::transport::{FACTS_SCRIPT, Transport, parse_facts};
use crate::plan::assess::{Assessment, Observed, Original, line_edit, parse_file_state, sha256_hex};
use crate::plan::{PHASES, Plan, Resource, Step};
use crate::state::{Change, LabState};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Already in the desired state.
    Ok,
    /// Applied, and observed to hold afterwards.
    Changed,
    Failed,
    /// Not attempted (an earlier step or phase failed).
    Skipped,
    /// `--check`: would be changed.
    WouldChange,
    /// `--check`: cannot be judged before an earlier change is applied.
    Conditional,
    /// `down`: put back as it was, and observed so.
    Reverted,
    /// `up`: no longer in the topology, so put back as it was before lvslab
    /// (or removed with its host), and observed so.
    Removed,
    /// `up --check`: would be removed (no longer in the topology).
    WouldRemove,
    /// `down`: left as it is, on purpose, with the reason (a kernel module
    /// still in use, or one this host cannot unload); forgotten like a revert.
    Kept,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub host: String,
    pub phase: String,
    pub id: String,
    pub summary: String,
    pub status: Status,
    /// What differed, or why it failed.
    pub details: Vec<String>,
    /// `--check` on a file: unified diff, secrets masked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HostRecap {
    pub host: String,
    pub ok: usize,
    pub changed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub seconds: f64,
    /// A host-level failure (cannot connect, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunOutcome {
    pub results: Vec<StepResult>,
    pub recap: Vec<HostRecap>,
    pub failed: bool,
}

impl RunOutcome {
    /// Both runs' results as one: results in order, recaps added per host.
    pub fn merge(mut self, other: RunOutcome) -> RunOutcome {
        self.results.extend(other.results);
        for r in other.recap {
            match self.recap.iter_mut().find(|c| c.host == r.host) {
                Some(c) => {
                    c.ok += r.ok;
                    c.changed += r.changed;
                    c.failed += r.failed;
                    c.skipped += r.skipped;
                    c.seconds += r.seconds;
                    if c.error.is_none() {
                        c.error = r.error;
                    }
                }
                None => self.recap.push(r),
            }
        }
        self.recap.sort_by(|a, b| a.host.cmp(&b.host));
        self.failed |= other.failed;
        self
    }
}

/// Progress as it happens. The CLI shows it; tests and libraries may ignore it.
pub trait Reporter: Send + Sync {
    fn phase(&self, _name: &str) {}
    fn activity(&self, _host: &str, _what: &str) {}
    fn step(&self, _result: &StepResult) {}
    fn host_done(&self, _host: &str, _failed: bool) {}
}

pub struct Silent;
impl Reporter for Silent {}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub check: bool,
    pub forks: usize,
}

/// Persist the lab state; called before each apply round trip.
pub type SaveFn = Arc<dyn Fn(&LabState) -> Result<(), crate::state::StateError> + Send + Sync>;

struct Shared {
    plan: Arc<Plan>,
    state: Mutex<LabState>,
    save: SaveFn,
    reporter: Arc<dyn Reporter>,
    opts: Options,
    /// Observations read ahead, by host and phase index: still true while
    /// nothing has been applied on that host since they were read.
    ahead: Mutex<BTreeMap<(String, usize), Vec<Observed>>>,
    /// Hosts observed at least once in this run (the first observation
    /// also reads the facts a host's services need).
    seen: Mutex<BTreeSet<String>>,
}

/// Bring the hosts to the plan.
pub async fn up(
    plan: Arc<Plan>,
    hosts: Vec<HostConn>,
    state: LabState,
    save: SaveFn,
    opts: Options,
    reporter: Arc<dyn Reporter>,
) -> (RunOutcome, LabState) {
    let shared = Arc::new(Shared {
        plan: Arc::clone(&plan),
        state: Mutex::new(state),
        save,
        reporter,
        opts,
        ahead: Mutex::new(BTreeMap::new()),
        seen: Mutex::new(BTreeSet::new()),
    });
    let mut recap: BTreeMap<String, HostRecap> = BTreeMap::new();
    let mut results = Vec::new();
    let mut down_hosts: BTreeMap<String, String> = BTreeMap::new();
    let mut started: BTreeMap<String, Instant> = BTreeMap::new();
    let conns: BTreeMap<String, Result<Arc<dyn Transport>, String>> =
        hosts.into_iter().map(|h| (h.host, h.transport)).collect();
    for (h, t) in &conns {
        recap.insert(
            h.clone(),
            HostRecap {
                host: h.clone(),
                ..HostRecap::default()
            },
        );
        if let Err(e) = t {
            down_hosts.insert(h.clone(), e.clone());
        }
        started.insert(h.clone(), Instant::now());
    }
    // Remember whether a host already has a pending (would-be) change, for --check.
    let pending: Arc<Mutex<BTreeMap<String, bool>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let sem = Arc::new(Semaphore::new(opts.forks.max(1)));
    let mut stop = !down_hosts.is_empty();

    for (pi, phase) in plan.phases.iter().enumerate() {
        let mut tasks = Vec::new();
        for hp in phase.hosts.iter().filter(|hp| conns.contains_key(&hp.host)) {
            if stop || down_hosts.contains_key(&hp.host) {
                let why = down_hosts
                    .get(&hp.host)
                    .cloned()
                    .unwrap_or_else(|| "an earlier phase failed".into());
                results.extend(
                    hp.steps
                        .iter()
                        .map(|s| result(&hp.host, &phase.name, s, Status::Skipped, vec![why.clone()])),
                );
                continue;
            }
            let Some(Ok(transport)) = conns.get(&hp.host).cloned() else {
                continue;
            };
            let shared = Arc::clone(&shared);
            let sem = Arc::clone(&sem);
            let pending = Arc::clone(&pending);
            let host = hp.host.clone();
            let phase_name = phase.name.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                shared.reporter.phase(&phase_name);
                host_phase(&shared, pi, &host, transport.as_ref(), &pending).await
            }));
        }
        let mut phase_failed = false;
        for t in tasks {
            let rs = t.await.unwrap_or_else(|e| {
                vec![StepResult {
                    host: "?".into(),
                    phase: phase.name.clone(),
                    id: String::new(),
                    summary: "internal error".into(),
                    status: Status::Failed,
                    details: vec![e.to_string()],
                    diff: None,
                }]
            });
            for r in &rs {
                if r.status == Status::Failed {
                    phase_failed = true;
                    down_hosts.entry(r.host.clone()).or_insert_with(|| "failed".into());
                }
            }
            results.extend(rs);
        }
        stop |= phase_failed;
    }

    tally(&results, &mut recap);
    for (h, c) in recap.iter_mut() {
        c.seconds = started.get(h).map_or(0.0, |s| s.elapsed().as_secs_f64());
        if let Some(Err(e)) = conns.get(h) {
            c.error = Some(e.clone());
            c.failed = c.failed.max(1);
        }
        shared.reporter.host_done(h, c.failed > 0);
    }
    let failed = recap.values().any(|c| c.failed > 0);
    let state = shared.state.lock().map(|s| s.clone()).unwrap_or_default();
    (
        RunOutcome {
            results,
            recap: recap.into_values().collect(),
            failed,
        },
        state,
    )
}

/// Count each host's results into its recap line.
fn tally(results: &[StepResult], recap: &mut BTreeMap<String, HostRecap>) {
    for r in results {
        if let Some(c) = recap.get_mut(&r.host) {
            match r.status {
                Status::Ok | Status::Kept => c.ok += 1,
                Status::Changed
                | Status::WouldChange
                | Status::Conditional
                | Status::Reverted
                | Status::Removed
                | Status::WouldRemove => c.changed += 1,
                Status::Failed => c.failed += 1,
                Status::Skipped => c.skipped += 1,
            }
        }
    }
}

/// Assess each step (secrets resolved) against its observation. A service
/// whose own state holds still differs when a file it runs with is about to be
/// rewritten (the file's apply deletes the service's recorded hash: see
/// `invalidations`), as `restart: FILE changes`. The same steps may span phases.
pub fn assess_all(desired: &[Resource], obs: &[Observed]) -> Vec<Assessment> {
    let mut assessed: Vec<Assessment> = desired.iter().zip(obs).map(|(r, o)| r.assess(o)).collect();
    let rewritten: Vec<&str> = desired
        .iter()
        .zip(&assessed)
        .filter(|(_, a)| !a.is_ok())
        .filter_map(|(r, _)| match r {
            Resource::File { path, .. } | Resource::Line { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    for (r, a) in desired.iter().zip(assessed.iter_mut()) {
        if let (Resource::Service { restart_on, .. }, Assessment::Ok) = (r, &a)
            && let Some(p) = restart_on.iter().find(|p| rewritten.contains(&p.as_str()))
        {
            *a = Assessment::Differs(vec![format!("{RESTART_PREFIX}{p} changes")]);
        }
    }
    assessed
}

/// How [`assess_all`] marks a service that restarts because a file changes.
pub const RESTART_PREFIX: &str = "restart: ";

fn result(host: &str, phase: &str, s: &Step, status: Status, details: Vec<String>) -> StepResult {
    StepResult {
        host: host.to_string(),
        phase: phase.to_string(),
        id: s.id.clone(),
        summary: s.summary.clone(),
        status,
        details,
        diff: None,
    }
}

/// A copy of the resource with secrets filled in (never printed, never saved).
pub fn resolved(plan: &Plan, r: &Resource) -> Resource {
    match r {
        Resource::File {
            path,
            content,
            mode,
            validate,
            ..
        } => {
            let content = plan.resolve_secrets(content);
            Resource::File {
                sha256: sha256_hex(content.as_bytes()),
                path: path.clone(),
                content,
                mode: mode.clone(),
                validate: validate.clone(),
            }
        }
        other => other.clone(),
    }
}

fn mask(text: &str, plan: &Plan) -> String {
    let mut out = text.to_string();
    for secret in plan.secrets.values() {
        if !secret.expose().is_empty() {
            out = out.replace(secret.expose(), "********");
        }
    }
    out
}

/// On a host, the lines of a file where the plan puts a secret may hold an
/// *earlier* secret (the password before it was changed): masked by where
/// the planned content has its placeholder (`  auth_pass @@…@@` masks any
/// line starting `  auth_pass `), whatever value they hold.
fn mask_secret_lines(current: &str, plan: &Plan, path: &str) -> Option<String> {
    let prefixes: Vec<&str> = plan
        .phases
        .iter()
        .flat_map(|p| &p.hosts)
        .flat_map(|h| &h.steps)
        .filter_map(|s| match &s.resource {
            Resource::File { path: p, content, .. } if p == path => Some(content),
            _ => None,
        })
        .flat_map(|c| {
            c.lines()
                .filter_map(|l| l.find(crate::plan::SECRET_PLACEHOLDER_PREFIX).map(|i| &l[..i]))
        })
        .collect();
    // A secret that starts its line cannot be told from the text around
    // it: the whole file is not shown.
    if prefixes.iter().any(|p| p.trim().is_empty()) {
        return None;
    }
    if prefixes.is_empty() {
        return Some(current.to_string());
    }
    Some(
        current
            .split_inclusive('\n')
            .map(|l| match prefixes.iter().find(|p| l.starts_with(**p)) {
                Some(p) => format!("{p}********{}", if l.ends_with('\n') { "\n" } else { "" }),
                None => l.to_string(),
            })
            .collect(),
    )
}

/// A file step's or line step's unified diff, now → planned, secrets masked.
pub fn file_diff(plan: &Plan, desired: &Resource, obs: &Observed) -> Option<String> {
    let (path, current, wanted) = match desired {
        Resource::File { path, content, .. } => {
            let current = parse_file_state(obs)
                .and_then(|f| f.content)
                .map(|c| String::from_utf8_lossy(&c).into_owned());
            (path, current.unwrap_or_default(), content.clone())
        }
        Resource::Line { path, line, regexp, .. } => {
            let (now, then) = line_edit(obs, line, regexp.as_deref()).ok()?;
            (path, now, then)
        }
        _ => return None,
    };
    let differs = current != wanted;
    let Some(current) = mask_secret_lines(&current, plan, path) else {
        return Some(format!(
            "{path}: it holds a secret on a line of its own (the diff is not shown)\n"
        ));
    };
    let current = mask(&current, plan);
    let wanted = mask(&wanted, plan);
    let diff = similar::TextDiff::from_lines(&current, &wanted);
    let text = diff
        .unified_diff()
        .context_radius(2)
        .header(&format!("{path} (now)"), &format!("{path} (planned)"))
        .to_string();
    Some(if text.is_empty() && differs {
        format!("{path}: it differs only on lines that hold a secret (not shown)\n")
    } else {
        text
    })
}

async fn host_phase(
    shared: &Shared,
    pi: usize,
    host: &str,
    t: &dyn Transport,
    pending: &Mutex<BTreeMap<String, bool>>,
) -> Vec<StepResult> {
    let plan = &shared.plan;
    let phase = &plan.phases[pi];
    let Some(hp) = phase.hosts.iter().find(|h| h.host == host) else {
        return Vec::new();
    };
    let run = PhaseRun {
        shared,
        pi,
        host,
        t,
        phase: &phase.name,
        steps: &hp.steps,
        desired: hp.steps.iter().map(|s| resolved(plan, &s.resource)).collect(),
    };
    let rs = run.steps_of(pending).await;
    for r in &rs {
        shared.reporter.step(r);
    }
    rs
}

/// One host's part of one phase: its steps, as resolved against the plan.
struct PhaseRun<'a> {
    shared: &'a Shared,
    pi: usize,
    host: &'a str,
    t: &'a dyn Transport,
    phase: &'a str,
    steps: &'a [Step],
    desired: Vec<Resource>,
}

impl PhaseRun<'_> {
    fn result(&self, i: usize, status: Status, details: Vec<String>) -> StepResult {
        result(self.host, self.phase, &self.steps[i], status, details)
    }

    fn fail_all(&self, msg: String) -> Vec<StepResult> {
        (0..self.steps.len())
            .map(|i| self.result(i, Status::Failed, vec![msg.clone()]))
            .collect()
    }

    /// Observe (or take what was read ahead), compare locally, then (unless
    /// `--check`) record the originals and apply what differs, reading it
    /// back in the same round trip.
    async fn steps_of(&self, pending: &Mutex<BTreeMap<String, bool>>) -> Vec<StepResult> {
        // 1. What is there: read ahead by an earlier round trip on this
        //    host, or read now (with every later phase's steps).
        let obs: Vec<Observed> = match self.take_ahead() {
            Some(o) => o,
            None => {
                self.shared.reporter.activity(
                    self.host,
                    &format!("{}: observing {} steps", self.phase, self.steps.len()),
                );
                match self.observe().await {
                    Ok(o) => o,
                    Err(rs) => return rs,
                }
            }
        };
        // 2. Compare locally.
        let assessed = assess_all(&self.desired, &obs);
        if self.shared.opts.check {
            return self.check_results(&assessed, &obs, pending);
        }
        self.settle_files_as_planned(&assessed);
        let todo: Vec<usize> = (0..self.steps.len()).filter(|i| !assessed[*i].is_ok()).collect();
        let mut rs: Vec<Option<StepResult>> = (0..self.steps.len())
            .map(|i| assessed[i].is_ok().then(|| self.result(i, Status::Ok, Vec::new())))
            .collect();
        if todo.is_empty() {
            return rs.into_iter().flatten().collect();
        }
        // Steps on one file edit, in order, what the one before leaves.
        let (obs, done_before) = self.chained(&todo, obs);
        let new_records = match self.record_originals(&todo, &obs, &done_before) {
            Ok(n) => n,
            Err(msg) => return self.fail_all(msg),
        };
        // 3. Apply what differs, in order, and read it back (and the later
        //    phases' steps), in one round trip.
        let Some((ran_ok, mut notes, again)) = self.apply(&todo, &obs, &done_before, &mut rs).await else {
            return rs.into_iter().flatten().collect();
        };
        self.forget_untouched(&new_records, &rs, &again);
        // 4. Nothing is `changed` that was not observed to hold.
        self.confirm(&ran_ok, &assessed, &mut notes, &again, &mut rs);
        rs.into_iter().flatten().collect()
    }

    /// Each step's observation as its apply will find it: a file or line
    /// step after another on the same file sees the content that one
    /// leaves. Also the steps an earlier one on their file already
    /// satisfies: they record nothing and run nothing (the earlier one's
    /// revert covers them).
    fn chained(&self, todo: &[usize], mut obs: Vec<Observed>) -> (Vec<Observed>, BTreeSet<usize>) {
        let mut files: BTreeMap<String, Observed> = BTreeMap::new();
        let mut done_before = BTreeSet::new();
        for &i in todo {
            let r = &self.desired[i];
            let Some(path) = file_path(r) else { continue };
            if let Some(seen) = files.get(&path) {
                obs[i] = seen.clone();
                if r.assess(seen).is_ok() {
                    done_before.insert(i);
                }
            }
            if let Some(after) = r.observed_after(&obs[i]) {
                files.insert(path, after);
            }
        }
        (obs, done_before)
    }

    /// This host's steps in the phases after this one, resolved, by phase index.
    fn later(&self) -> Vec<(usize, Vec<Resource>)> {
        let plan = &self.shared.plan;
        plan.phases
            .iter()
            .enumerate()
            .skip(self.pi + 1)
            .filter_map(|(j, p)| {
                let hp = p.hosts.iter().find(|h| h.host == self.host)?;
                Some((j, hp.steps.iter().map(|s| resolved(plan, &s.resource)).collect()))
            })
            .collect()
    }

    fn later_looks(later: &[(usize, Vec<Resource>)]) -> Vec<Look> {
        later.iter().flat_map(|(_, rs)| rs.iter().map(Look::of)).collect()
    }

    /// Keep the later phases' observations (`obs`, in `later`'s order) for
    /// when their phases come; a phase not wholly observed is read again then.
    fn keep_ahead(&self, later: &[(usize, Vec<Resource>)], mut obs: impl Iterator<Item = Option<Observed>>) {
        let Ok(mut ahead) = self.shared.ahead.lock() else {
            return;
        };
        for (j, rs) in later {
            let got: Option<Vec<Observed>> = obs.by_ref().take(rs.len()).collect();
            match got {
                Some(o) if o.len() == rs.len() => {
                    ahead.insert((self.host.to_string(), *j), o);
                }
                _ => {
                    ahead.remove(&(self.host.to_string(), *j));
                }
            }
        }
    }

    fn take_ahead(&self) -> Option<Vec<Observed>> {
        let o = self
            .shared
            .ahead
            .lock()
            .ok()?
            .remove(&(self.host.to_string(), self.pi))?;
        (o.len() == self.steps.len()).then_some(o)
    }

    /// Every step of this phase and of the later ones in one round trip (on
    /// the host's first, its facts too when its services need systemd); on
    /// failure, every step of this phase failed.
    async fn observe(&self) -> Result<Vec<Observed>, Vec<StepResult>> {
        let first = self
            .shared
            .seen
            .lock()
            .is_ok_and(|mut s| s.insert(self.host.to_string()));
        let facts = first && needs_systemd(&self.shared.plan, self.host);
        let later = self.later();
        // The facts first: nothing before them can crowd them out of the
        // captured output.
        let mut looks: Vec<Look> = Vec::new();
        if facts {
            looks.push(Look {
                cmd: FACTS_SCRIPT.to_string(),
                own_shell: true,
            });
        }
        looks.extend(self.desired.iter().map(Look::of));
        looks.extend(Self::later_looks(&later));
        let marker = nonce();
        let out = match self.t.run(&observe_batch(&looks, &marker)).await {
            Ok(o) => o,
            Err(e) => return Err(self.fail_all(e.to_string())),
        };
        let mut parsed = parse_looks(&out.stdout, &marker, &looks);
        if facts {
            let Some(f) = parsed.remove(0) else {
                return Err(self.fail_all(format!("reading its facts failed (exit {})", out.status)));
            };
            if let Some(why) = init_refusal(self.host, &parse_facts(&f.output)) {
                return Err(self.fail_all(why));
            }
        }
        let rest = parsed.split_off(self.steps.len());
        let now = parsed
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| self.fail_all(format!("observing failed (exit {}): {}", out.status, out.stderr.trim())))?;
        self.keep_ahead(&later, rest.into_iter());
        Ok(now)
    }

    /// `--check`: what would change, and what depends on an earlier change
    /// that --check does not apply (conditional, not an error).
    fn check_results(
        &self,
        assessed: &[Assessment],
        obs: &[Observed],
        pending: &Mutex<BTreeMap<String, bool>>,
    ) -> Vec<StepResult> {
        let mut rs = Vec::new();
        let mut pend = pending
            .lock()
            .map(|p| p.get(self.host).copied().unwrap_or(false))
            .unwrap_or(false);
        for (i, a) in assessed.iter().enumerate() {
            let r = match a {
                Assessment::Ok => self.result(i, Status::Ok, Vec::new()),
                Assessment::Differs(d) => {
                    let cannot_observe = obs[i].rc != 0 || d.iter().any(|x| x.contains("(yet)"));
                    let status = if pend && cannot_observe {
                        Status::Conditional
                    } else {
                        Status::WouldChange
                    };
                    let mut details = d.clone();
                    if status == Status::Conditional {
                        details.push("depends on an earlier change that --check does not apply".into());
                    }
                    pend = true;
                    let mut r = self.result(i, status, details);
                    r.diff = file_diff(&self.shared.plan, &self.desired[i], &obs[i]);
                    r
                }
            };
            rs.push(r);
        }
        if let Ok(mut p) = pending.lock() {
            p.insert(self.host.to_string(), pend);
        }
        rs
    }

    /// Record what was there before the first change, and save it before
    /// touching anything.
    fn record_originals(
        &self,
        todo: &[usize],
        obs: &[Observed],
        done_before: &BTreeSet<usize>,
    ) -> Result<BTreeMap<usize, Original>, String> {
        let Ok(mut state) = self.shared.state.lock() else {
            return Err("lab state poisoned".into());
        };
        let mut new = BTreeMap::new();
        for &i in todo.iter().filter(|i| !done_before.contains(i)) {
            let known = state
                .hosts
                .get(self.host)
                .is_some_and(|h| h.changes.iter().any(|c| c.id == self.steps[i].id));
            if !known {
                new.insert(i, self.desired[i].original(&obs[i]));
            }
            state.record(
                self.host,
                Change {
                    phase: self.phase.to_string(),
                    order: (PHASES.iter().position(|p| *p == self.phase).unwrap_or(self.pi), i),
                    id: self.steps[i].id.clone(),
                    summary: self.steps[i].summary.clone(),
                    resource: recorded_form(&self.steps[i].resource, false),
                    original: self.desired[i].original(&obs[i]),
                    made_dirs: crate::plan::assess::missing_dirs(&obs[i]),
                },
            );
        }
        (self.shared.save)(&state).map_err(|e| format!("cannot save the lab state: {}", crate::diag::chain(&e)))?;
        Ok(new)
    }

    /// A file found as planned holds lvslab's content, whatever the record
    /// says it last wrote (a write whose confirmation was lost: the
    /// connection ended after its `mv`): the record follows, so `down`
    /// still knows the file as lvslab's.
    fn settle_files_as_planned(&self, assessed: &[Assessment]) {
        let Ok(mut state) = self.shared.state.lock() else {
            return;
        };
        let mut moved = false;
        for (i, a) in assessed.iter().enumerate() {
            let Resource::File { content, .. } = &self.steps[i].resource else {
                continue;
            };
            if !a.is_ok() {
                continue;
            }
            let stale = state.hosts.get(self.host).is_some_and(|h| {
                h.changes.iter().any(|c| {
                    c.id == self.steps[i].id && matches!(&c.resource, Resource::File { content: r, .. } if r != content)
                })
            });
            if stale {
                state.settle(
                    self.host,
                    &self.steps[i].id,
                    recorded_form(&self.steps[i].resource, true),
                );
                moved = true;
            }
        }
        if moved {
            let _ = (self.shared.save)(&state);
        }
    }

    /// Forget what this run recorded for steps that changed nothing: those
    /// that did not run (an earlier step failed), and file, line and
    /// directory steps that failed with their path as it was (a refusal, a
    /// guard). `down` must not "put back" what lvslab never touched — a
    /// directory made later by hand, say.
    fn forget_untouched(
        &self,
        new: &BTreeMap<usize, Original>,
        rs: &[Option<StepResult>],
        after: &BTreeMap<usize, Option<Observed>>,
    ) {
        // A file or line step that failed after its `mkdir -p` (its
        // `validate` refused the content, say) keeps its record: `down`
        // removes the directories it made (its file, absent, stays absent).
        let made_dirs: BTreeSet<String> = self
            .shared
            .state
            .lock()
            .ok()
            .and_then(|s| {
                s.hosts.get(self.host).map(|h| {
                    h.changes
                        .iter()
                        .filter(|c| c.made_dirs.is_some())
                        .map(|c| c.id.clone())
                        .collect()
                })
            })
            .unwrap_or_default();
        let untouched: Vec<&str> = new
            .iter()
            .filter(|(i, original)| match rs[**i].as_ref().map(|r| r.status) {
                Some(Status::Skipped) => true,
                Some(Status::Failed) => {
                    let made = matches!(self.desired[**i], Resource::File { .. } | Resource::Line { .. })
                        && made_dirs.contains(&self.steps[**i].id);
                    !made
                        && matches!(
                            self.desired[**i],
                            Resource::File { .. } | Resource::Line { .. } | Resource::Directory { .. }
                        )
                        && after
                            .get(*i)
                            .and_then(Option::as_ref)
                            .is_some_and(|seen| self.desired[**i].original(seen) == **original)
                }
                _ => false,
            })
            .map(|(i, _)| self.steps[*i].id.as_str())
            .collect();
        if untouched.is_empty() {
            return;
        }
        if let Ok(mut state) = self.shared.state.lock() {
            if let Some(h) = state.hosts.get_mut(self.host) {
                h.changes.retain(|c| !untouched.contains(&c.id.as_str()));
            }
            state.hosts.retain(|_, h| !h.changes.is_empty());
            let _ = (self.shared.save)(&state);
        }
    }

    /// Apply the steps that differ (stopping at the first failure) and read
    /// them back, with the later phases' steps, in one round trip. Returns
    /// the steps that ran, what they noted, and their observations after (by
    /// step), or `None` when the host could not be reached (their results
    /// are in `rs`).
    async fn apply(
        &self,
        todo: &[usize],
        obs: &[Observed],
        done_before: &BTreeSet<usize>,
        rs: &mut [Option<StepResult>],
    ) -> Option<Applied> {
        self.shared.reporter.activity(
            self.host,
            &format!("{}: applying {} of {} steps", self.phase, todo.len(), self.steps.len()),
        );
        let plan = &self.shared.plan;
        // Of the line steps on one file, only the last one writes it (with
        // every edit in it); a file step writes its own (its validation runs).
        let last_write: BTreeMap<String, usize> = todo
            .iter()
            .filter(|i| !done_before.contains(i))
            .filter_map(|&i| file_path(&self.desired[i]).map(|p| (p, i)))
            .collect();
        let cmds: Vec<Vec<String>> = todo
            .iter()
            .map(|&i| {
                let r = &self.desired[i];
                let mut c = invalidations(plan, self.host, r);
                let written_later =
                    matches!(r, Resource::Line { .. }) && file_path(r).is_some_and(|p| last_write.get(&p) != Some(&i));
                if !written_later && !done_before.contains(&i) {
                    c.extend(r.apply_for(&obs[i]));
                }
                c
            })
            .collect();
        // Files and directories are read back together (mode and hash);
        // the rest each by its own observation.
        let (bulk_steps, look_steps): (Vec<usize>, Vec<usize>) =
            todo.iter().partition(|&&i| Bulk::of(&self.desired[i]).is_some());
        let bulk: Vec<Bulk> = bulk_steps.iter().filter_map(|&i| Bulk::of(&self.desired[i])).collect();
        let confirm: Vec<Look> = look_steps.iter().map(|&i| Look::of(&self.desired[i])).collect();
        let later = self.later();
        let later_looks = Self::later_looks(&later);
        let (ma, mo) = (nonce(), format!("{}-o", nonce()));
        let script = apply_batch(&cmds, &ma, true, &bulk, &confirm, &later_looks, &mo);
        let all: Vec<Look> = confirm.iter().chain(&later_looks).cloned().collect();
        let (applied, mut looks) = match self.t.run(&script).await {
            Ok(o) => {
                let mut read: BTreeMap<usize, Observed> = bulk_steps
                    .iter()
                    .copied()
                    .zip(parse_bulk(&o.stdout, &format!("{mo}b"), &bulk))
                    .filter_map(|(i, o)| Some((i, o?)))
                    .collect();
                let mut looks = parse_looks(&o.stdout, &mo, &all);
                let rest = looks.split_off(confirm.len());
                // Back in `todo` order, then the later phases'.
                let mut by_step: Vec<Option<Observed>> = todo
                    .iter()
                    .map(|i| {
                        read.remove(i)
                            .or_else(|| look_steps.iter().position(|j| j == i).and_then(|k| looks[k].take()))
                    })
                    .collect();
                by_step.extend(rest);
                (parse_batch(&o.stdout, &ma, todo.len()), by_step)
            }
            Err(e) => {
                for &i in todo {
                    rs[i] = Some(self.result(i, Status::Failed, vec![e.to_string()]));
                }
                return None;
            }
        };
        let rest = looks.split_off(todo.len());
        let (ran_ok, notes, again, failed) = self.judge_applied(todo, &applied, looks, rs);
        if !failed {
            self.keep_ahead(&later, rest.into_iter());
        }
        Some((ran_ok, notes, again))
    }

    /// Each applied item's result from its exit status: the steps that ran
    /// (with their notes and read-backs) and whether one failed.
    fn judge_applied(
        &self,
        todo: &[usize],
        applied: &[Option<Observed>],
        mut looks: Vec<Option<Observed>>,
        rs: &mut [Option<StepResult>],
    ) -> Judged {
        let plan = &self.shared.plan;
        let mut ran_ok = Vec::new();
        // What the apply said worth keeping (a drained real server, say).
        let mut notes: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut again: BTreeMap<usize, Option<Observed>> = BTreeMap::new();
        let mut failed = false;
        let mut lost = false;
        for (k, &i) in todo.iter().enumerate() {
            rs[i] = Some(match (&applied[k], failed) {
                // After a lost status, the later items' markers may be lost
                // too (captured output cut short): unknown, not skipped.
                (None, true) if lost => self.result(
                    i,
                    Status::Failed,
                    vec!["no exit status came back after an earlier one was lost: it may have run".into()],
                ),
                (_, true) => self.result(i, Status::Skipped, vec!["an earlier step failed".into()]),
                // Started, perhaps, but its end was never reported (the
                // connection ended): what it did is unknown, its record stays.
                (None, false) => {
                    failed = true;
                    lost = true;
                    self.result(
                        i,
                        Status::Failed,
                        vec!["no exit status came back (the connection ended?): it may have run".into()],
                    )
                }
                (Some(o), false) if o.rc != 0 => {
                    failed = true;
                    // Read back too: whether it changed anything.
                    again.insert(i, looks[k].take());
                    let mut details = vec![format!("exit status {}", o.rc)];
                    details.extend(mask(o.output.trim(), plan).lines().map(String::from));
                    self.result(i, Status::Failed, details)
                }
                (Some(o), false) => {
                    ran_ok.push(i);
                    let n: Vec<String> = o
                        .output
                        .lines()
                        .filter_map(|l| l.strip_prefix("note: "))
                        .map(String::from)
                        .collect();
                    notes.insert(i, n);
                    again.insert(i, looks[k].take());
                    continue;
                }
            });
        }
        (ran_ok, notes, again, failed)
    }

    /// Judge the applied steps as read back: `changed` only when they hold.
    fn confirm(
        &self,
        ran_ok: &[usize],
        assessed: &[Assessment],
        notes: &mut BTreeMap<usize, Vec<String>>,
        again: &BTreeMap<usize, Option<Observed>>,
        rs: &mut [Option<StepResult>],
    ) {
        for &i in ran_ok {
            let a = again
                .get(&i)
                .and_then(Option::as_ref)
                .map(|o| self.desired[i].assess(o));
            rs[i] = Some(match a {
                Some(Assessment::Ok) => {
                    // Observed to hold: the record now says exactly what is there.
                    if let Ok(mut state) = self.shared.state.lock() {
                        state.settle(
                            self.host,
                            &self.steps[i].id,
                            recorded_form(&self.steps[i].resource, true),
                        );
                    }
                    let mut details = assessed[i].details();
                    details.extend(notes.remove(&i).unwrap_or_default());
                    self.result(i, Status::Changed, details)
                }
                Some(Assessment::Differs(d)) => {
                    let mut details = vec!["applied, but still:".to_string()];
                    details.extend(d);
                    self.result(i, Status::Failed, details)
                }
                // Its read-back never came back (the output was cut short).
                None => self.result(
                    i,
                    Status::Failed,
                    vec!["applied, but it could not be observed again (the connection ended?): unknown".into()],
                ),
            });
        }
    }
}

/// The file a file or line step writes.
fn file_path(r: &Resource) -> Option<String> {
    match r {
        Resource::File { path, .. } | Resource::Line { path, .. } => Some(path.clone()),
        _ => None,
    }
}

/// What one apply round trip gave: the steps that ran, what they noted, and
/// each one's observation afterwards.
type Judged = (
    Vec<usize>,
    BTreeMap<usize, Vec<String>>,
    BTreeMap<usize, Option<Observed>>,
    bool,
);

type Applied = (
    Vec<usize>,
    BTreeMap<usize, Vec<String>>,
    BTreeMap<usize, Option<Observed>>,
);

/// A resource as the lab's record keeps it. An IPVS table records every
/// service lvslab may have in it: until a run is observed to have applied
/// the table (`confirmed`), the services it is deleting stay in the record,
/// so an interrupted run never forgets what it made.
fn recorded_form(r: &Resource, confirmed: bool) -> Resource {
    match r {
        Resource::IpvsTable { services, previous } => {
            let mut services = services.clone();
            if !confirmed {
                for p in previous {
                    if !services.iter().any(|s| s.target() == p.target()) {
                        services.push(p.clone());
                    }
                }
            }
            Resource::IpvsTable {
                services,
                previous: Vec::new(),
            }
        }
        other => other.clone(),
    }
}

/// Before a file is rewritten, forget the configuration hash of every service
/// of this host that runs with it: even if the run stops right after, the next
/// run sees the service as needing a restart. (State, not a one-shot event.)
fn invalidations(plan: &Plan, host: &str, r: &Resource) -> Vec<String> {
    let (Resource::File { path, .. } | Resource::Line { path, .. }) = r else {
        return Vec::new();
    };
    plan.phases
        .iter()
        .flat_map(|p| &p.hosts)
        .filter(|h| h.host == host)
        .flat_map(|h| &h.steps)
        .filter_map(|s| match &s.resource {
            Resource::Service {
                name,
                state_dir,
                restart_on,
                ..
            } if restart_on.contains(path) => Some(format!(
                "rm -f {}",
                crate::shell::quote(&format!("{state_dir}/{name}.hash"))
            )),
            _ => None,
        })
        .collect()
}

impl Assessment {
    pub fn details(&self) -> Vec<String> {
        match self {
            Assessment::Ok => Vec::new(),
            Assessment::Differs(d) => d.clone(),
        }
    }
}

/// Undo what `state` records, phase by phase in reverse, each host's changes
/// in reverse order; each revert is confirmed by observing again. Returns the
/// outcome and the state that is left (what could not be reverted).
pub async fn down(
    plan_secrets: Arc<Plan>,
    hosts: Vec<HostConn>,
    state: LabState,
    opts: Options,
    reporter: Arc<dyn Reporter>,
) -> (RunOutcome, LabState) {
    revert_all(plan_secrets, hosts, state, opts, reporter, Status::Reverted).await
}

/// [`down`] for what the topology no longer declares (`state` holds just
/// those changes): each is reported `removed`.
pub async fn remove(
    plan_secrets: Arc<Plan>,
    hosts: Vec<HostConn>,
    state: LabState,
    opts: Options,
    reporter: Arc<dyn Reporter>,
) -> (RunOutcome, LabState) {
    revert_all(plan_secrets, hosts, state, opts, reporter, Status::Removed).await
}

async fn revert_all(
    plan_secrets: Arc<Plan>,
    hosts: Vec<HostConn>,
    mut state: LabState,
    opts: Options,
    reporter: Arc<dyn Reporter>,
    done: Status,
) -> (RunOutcome, LabState) {
    let sem = Arc::new(Semaphore::new(opts.forks.max(1)));
    let mut results = Vec::new();
    let mut recap: BTreeMap<String, HostRecap> = BTreeMap::new();
    let started = Instant::now();
    let conns: BTreeMap<String, Result<Arc<dyn Transport>, String>> =
        hosts.into_iter().map(|h| (h.host, h.transport)).collect();
    for h in state.hosts.keys() {
        recap.insert(
            h.clone(),
            HostRecap {
                host: h.clone(),
                ..HostRecap::default()
            },
        );
    }
    for (pi, phase) in PHASES.iter().enumerate().rev() {
        let mut tasks = Vec::new();
        for (host, hs) in &state.hosts {
            let mut changes: Vec<Change> = hs.changes.iter().filter(|c| c.phase == *phase).cloned().collect();
            if changes.is_empty() {
                continue;
            }
            // The directories the later phases' steps (reverted already)
            // made are tried again after this phase's: one of them may hold
            // a directory this phase's steps made.
            let made_later: Vec<Change> = hs
                .changes
                .iter()
                .filter(|c| c.made_dirs.is_some() && PHASES[pi + 1..].contains(&c.phase.as_str()))
                .cloned()
                .collect();
            changes.sort_by_key(|c| std::cmp::Reverse(c.order));
            let t = match conns.get(host) {
                Some(Ok(t)) => Arc::clone(t),
                other => {
                    let why = match other {
                        Some(Err(e)) => e.clone(),
                        _ => "no way to reach it".into(),
                    };
                    for c in &changes {
                        results.push(StepResult {
                            host: host.clone(),
                            phase: phase.to_string(),
                            id: c.id.clone(),
                            summary: c.summary.clone(),
                            status: Status::Failed,
                            details: vec![why.clone()],
                            diff: None,
                        });
                    }
                    continue;
                }
            };
            let sem = Arc::clone(&sem);
            let host = host.clone();
            let plan = Arc::clone(&plan_secrets);
            let reporter = Arc::clone(&reporter);
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                reporter.activity(&host, &format!("{phase}: reverting {} changes", changes.len()));
                let rs = revert_host(&plan, phase, &host, t.as_ref(), &changes, &made_later, done).await;
                for r in &rs {
                    reporter.step(r);
                }
                rs
            }));
        }
        for t in tasks {
            if let Ok(rs) = t.await {
                results.extend(rs);
            }
        }
    }
    // Forget what was reverted; keep what was not, so a later `down` retries it.
    for r in results.iter().filter(|r| r.status == done || r.status == Status::Kept) {
        if let Some(h) = state.hosts.get_mut(&r.host) {
            h.changes.retain(|c| c.id != r.id);
        }
    }
    state.hosts.retain(|_, h| !h.changes.is_empty());
    for r in &results {
        if let Some(c) = recap.get_mut(&r.host) {
            match r.status {
                Status::Reverted | Status::Removed => c.changed += 1,
                Status::Failed => c.failed += 1,
                Status::Kept => c.ok += 1,
                _ => c.skipped += 1,
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    for c in recap.values_mut() {
        c.seconds = secs;
        reporter.host_done(&c.host, c.failed > 0);
    }
    let failed = recap.values().any(|c| c.failed > 0);
    (
        RunOutcome {
            results,
            recap: recap.into_values().collect(),
            failed,
        },
        state,
    )
}

async fn revert_host(
    plan: &Plan,
    phase: &str,
    host: &str,
    t: &dyn Transport,
    changes: &[Change],
    made_later: &[Change],
    done: Status,
) -> Vec<StepResult> {
    let res = |c: &Change, status: Status, details: Vec<String>| StepResult {
        host: host.to_string(),
        phase: phase.to_string(),
        id: c.id.clone(),
        summary: c.summary.clone(),
        status,
        details,
        diff: None,
    };
    let mut out = Vec::new();
    let mut runnable = Vec::new();
    let mut cmds = Vec::new();
    for c in changes {
        // A command without a revert cannot be undone: what it did stays,
        // as the step said (not a failure of down).
        if let Resource::Command { revert: None, name, .. } = &c.resource {
            out.push(res(
                c,
                Status::Kept,
                vec![format!("command {name} has no `revert`: what it did stays")],
            ));
            continue;
        }
        match c.resource.revert_for(&c.original) {
            Ok(v) => {
                runnable.push(c);
                cmds.push(v);
            }
            Err(e) => out.push(res(c, Status::Failed, vec![e])),
        }
    }
    if runnable.is_empty() {
        return out;
    }
    // Revert every change (then remove the directories they made), then
    // observe each again, in one round trip.
    let made: Vec<&Change> = runnable.iter().copied().chain(made_later).collect();
    cmds.extend(made_dirs_revert(&made).map(|c| vec![c]));
    let (marker, marker2) = (nonce(), format!("{}-o", nonce()));
    let observe: Vec<Look> = runnable
        .iter()
        .map(|c| Look::of(&resolved(plan, &c.resource)))
        .collect();
    let (ran, again) = match t
        .run(&apply_batch(&cmds, &marker, false, &[], &observe, &[], &marker2))
        .await
    {
        Ok(o) => (
            parse_batch(&o.stdout, &marker, runnable.len()),
            parse_looks(&o.stdout, &marker2, &observe),
        ),
        Err(e) => {
            out.extend(runnable.iter().map(|c| res(c, Status::Failed, vec![e.to_string()])));
            return out;
        }
    };
    for (k, c) in runnable.iter().enumerate() {
        let r = match (&ran[k], &again[k]) {
            (Some(o), _) if o.rc != 0 => {
                let mut d = vec![format!("exit status {}", o.rc)];
                d.extend(mask(o.output.trim(), plan).lines().map(String::from));
                res(c, Status::Failed, d)
            }
            (Some(_), Some(seen))
                if matches!(c.resource, Resource::KernelModule { .. }) && seen.output.trim() == "loaded" =>
            {
                res(
                    c,
                    Status::Kept,
                    vec!["still loaded: in use, built into the kernel, or this host may not unload modules (a container); left as it is".into()],
                )
            }
            (Some(o), _) if matches!(c.resource, Resource::Line { .. }) && o.output.contains(crate::plan::line::TAKEN) => {
                res(c, Status::Kept, vec![LINE_TAKEN.into()])
            }
            (Some(o), _) if o.output.contains(crate::plan::assess::DIR_LINK) => res(
                c,
                Status::Kept,
                vec!["a symbolic link was put in its place since: left as it is".into()],
            ),
            (Some(o), _) if o.output.contains(crate::plan::assess::DIR_NOT_EMPTY) => res(
                c,
                Status::Kept,
                vec!["it holds what lvslab did not put there: left as it is".into()],
            ),
            (Some(_), Some(seen)) if restored(&c.resource, &c.original, seen) => res(c, done, Vec::new()),
            (Some(_), Some(seen)) if file_not_lvslabs(&c.resource, &c.original, seen) => res(
                c,
                Status::Kept,
                vec!["no longer what lvslab wrote (made or changed by hand since): left as it is".into()],
            ),

            (Some(_), Some(seen)) if line_taken_by_hand(&c.resource, seen) => res(c, Status::Kept, vec![LINE_TAKEN.into()]),
            (Some(_), Some(seen)) => res(
                c,
                Status::Failed,
                vec![format!("reverted, but observed: {}", observed_text(seen, plan))],
            ),
            _ => res(c, Status::Failed, vec!["did not run".into()]),
        };
        out.push(r);
    }
    out
}

/// After the reverts: the directories the reverted steps' `mkdir -p` made,
/// removed while empty, deepest first (see [`crate::plan::assess::remove_made_dirs`]).
fn made_dirs_revert(changes: &[&Change]) -> Option<String> {
    let steps: Vec<(&str, &crate::plan::assess::MadeDirs)> = changes
        .iter()
        .filter_map(|c| {
            let path = match &c.resource {
                Resource::File { path, .. } | Resource::Line { path, .. } | Resource::Directory { path, .. } => path,
                _ => return None,
            };
            Some((crate::plan::assess::parent_dir(path), c.made_dirs.as_ref()?))
        })
        .collect();
    crate::plan::assess::remove_made_dirs(&steps)
}

const LINE_TAKEN: &str = "changed by hand after lvslab set it: the line is theirs, left as it is";

/// A line step's line is no longer in its file: someone changed it by hand
/// after lvslab set it, and its revert (which touches only lvslab's own
/// copy) rightly left the file alone.
fn line_taken_by_hand(r: &Resource, seen: &Observed) -> bool {
    let Resource::Line { line, .. } = r else {
        return false;
    };
    parse_file_state(seen)
        .and_then(|f| f.content)
        .is_some_and(|c| !crate::plan::line::lines_of(&String::from_utf8_lossy(&c)).contains(&line.as_str()))
}

/// A file lvslab made is still there after its revert because it no
/// longer holds what lvslab wrote (the revert removes only lvslab's content).
fn file_not_lvslabs(r: &Resource, orig: &Original, seen: &Observed) -> bool {
    let Resource::File { content, .. } = r else {
        return false;
    };
    *orig == Original::Absent
        && !content.contains(crate::plan::SECRET_PLACEHOLDER_PREFIX)
        && parse_file_state(seen).is_some_and(|f| f.sha256 != sha256_hex(content.as_bytes()))
}

/// An observation as a person reads it: a file's mode and size rather than
/// its content in base64.
fn observed_text(seen: &Observed, plan: &Plan) -> String {
    match parse_file_state(seen) {
        Some(f) => match &f.content {
            Some(c) => format!("mode {}, {} bytes (sha256 {:.12}…)", f.mode, c.len(), f.sha256),
            None => format!("mode {} (sha256 {:.12}…)", f.mode, f.sha256),
        },
        None if seen.output.lines().next().map(str::trim) == Some("absent") => "absent".into(),
        None => mask(seen.output.trim(), plan),
    }
}

/// Does the observed state match the recorded original?
fn restored(r: &Resource, orig: &Original, seen: &Observed) -> bool {
    match (r, orig) {
        (Resource::IpvsTable { .. }, _) => seen.rc == 0,
        (Resource::Command { .. }, _) => true,
        // The replaced line is back; a line lvslab made a file for is gone
        // (or the file with it); an appended one was removed by a revert
        // that succeeded (copies that were there before stay).
        (Resource::Line { line, .. }, Original::Value { value }) => {
            let text = parse_file_state(seen)
                .and_then(|f| f.content)
                .map(|c| String::from_utf8_lossy(&c).into_owned());
            match value.strip_prefix(crate::plan::line::REPLACED) {
                Some(old) => text.is_some_and(|t| crate::plan::line::lines_of(&t).contains(&old)),
                None if value == crate::plan::line::CREATED => {
                    text.is_none_or(|t| !crate::plan::line::lines_of(&t).contains(&line.as_str()))
                }
                None => true,
            }
        }
        (Resource::KernelModule { .. }, _) => true,
        (Resource::Package { .. }, _) => true,
        (Resource::Route { .. }, Original::Value { value }) => {
            seen.output
                .lines()
                .next()
                .map(str::split_whitespace)
                .map(Iterator::collect::<Vec<_>>)
                == Some(value.split_whitespace().collect())
        }
        (Resource::Service { .. }, Original::Value { value }) if value == "active" => true,
        (Resource::Service { .. }, _) => seen.output.lines().next().map(str::trim) != Some("active"),
        _ => r.original(seen) == *orig,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run a batch of command lists through `sh` and split its output.
    fn run_batch(items: &[&str], stop_on_failure: bool) -> Vec<Option<Observed>> {
        let items: Vec<Vec<String>> = items.iter().map(|c| vec![c.to_string()]).collect();
        let script = batch(&items, "@@m", stop_on_failure);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        parse_batch(&String::from_utf8_lossy(&out.stdout), "@@m", items.len())
    }

    fn seen(output: &str, rc: i32) -> Option<Observed> {
        Some(Observed {
            output: output.into(),
            rc,
        })
    }

    #[test]
    fn batches_split_by_marker() {
        let obs = run_batch(&["echo a; echo b", "printf x", "false"], false);
        assert_eq!(obs[0], seen("a\nb\n", 0));
        assert_eq!(obs[1], seen("x", 0));
        assert_eq!(obs[2].as_ref().unwrap().rc, 1);
    }

    /// Files and directories read back in bulk look as their own observe
    /// commands would show them (judged the same way); repeated
    /// observations run once; an item with nothing to run needs no subshell.
    #[test]
    fn apply_batches_read_back_in_bulk() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let file = Resource::File {
            path: format!("{d}/f"),
            content: "hi\n".into(),
            mode: "0640".into(),
            validate: None,
            sha256: String::new(),
        };
        let sub = Resource::Directory {
            path: format!("{d}/sub"),
            mode: "0750".into(),
            purge: false,
        };
        let missing = Resource::File {
            path: format!("{d}/nope"),
            content: String::new(),
            mode: "0644".into(),
            validate: None,
            sha256: String::new(),
        };
        let absent = Observed {
            output: "absent".into(),
            rc: 0,
        };
        let apply = vec![
            file.apply_for(&absent),
            Vec::new(),
            sub.apply_for(&Observed {
                output: String::new(),
                rc: 1,
            }),
        ];
        let bulk: Vec<Bulk> = [&file, &sub, &missing].iter().filter_map(|r| Bulk::of(r)).collect();
        let look = Look {
            cmd: "echo once >> count; cat count".into(),
            own_shell: false,
        };
        let script = apply_batch(&apply, "@@a", true, &bulk, &[look.clone(), look.clone()], &[], "@@o");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout);
        let ran = parse_batch(&out, "@@a", 3);
        assert!(ran.iter().all(|o| o.as_ref().is_some_and(|o| o.rc == 0)), "{out}");
        let read: Vec<Observed> = parse_bulk(&out, "@@ob", &bulk).into_iter().flatten().collect();
        assert!(file.assess(&read[0]).is_ok(), "{:?}", read[0]);
        assert!(sub.assess(&read[1]).is_ok(), "{:?}", read[1]);
        assert_eq!(missing.assess(&read[2]), Assessment::Differs(vec!["absent".into()]));
        assert_eq!(
            parse_bulk("cut short", "@@ob", &bulk),
            vec![None, None, None],
            "lost, not absent"
        );
        let looks = parse_looks(&out, "@@o", &[look.clone(), look]);
        assert_eq!(looks[0], seen("once\n", 0));
        assert_eq!(looks[1], looks[0], "run once, shared");
    }

    #[test]
    fn apply_batches_stop_at_the_first_failure() {
        let obs = run_batch(&["true", "echo boom; exit 4", "echo never"], true);
        assert_eq!(obs[1], seen("boom\n", 4));
        assert_eq!(obs[2], None);
    }
}
