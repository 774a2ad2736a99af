//! `verify`: prove that a lab behaves like LVS, with real traffic.
//!
//! Two halves with a serializable boundary between them:
//! [`gather`] reads hosts (a few batched round trips) and sends the client's
//! requests, producing [`Evidence`]; [`decide`] turns a topology, its plan and
//! that evidence into [`Check`]s, with no I/O. Evidence recorded on a real lab
//! (`lvslab verify --save-evidence FILE`) can therefore be replayed in tests.

pub mod decide;
pub mod failover;
pub mod gather;
pub mod parse;
pub mod probe;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use decide::decide;
pub use gather::gather;

pub const SCHEMA: &str = "lvslab.verify/v1";

/// What a probe printed (stdout and stderr together) and its exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Out {
    pub out: String,
    pub rc: i32,
}

/// The client's requests to one service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub url: String,
    pub sent: u32,
    /// Response body (trimmed) → how many requests got it (HTTP 200).
    pub answers: BTreeMap<String, u32>,
    /// What went wrong (`curl exit 7 (…)`, `HTTP 503`) → how many times.
    pub failures: BTreeMap<String, u32>,
}

/// One run of a topology check, with its last result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserCheckRun {
    pub name: String,
    pub host: String,
    pub tries: u32,
    pub last: Option<Out>,
    pub seconds: f64,
    /// The host could not be reached.
    pub error: Option<String>,
}

/// Everything verify read from the lab. Probe outputs are kept as the tools
/// printed them, keyed by host and probe name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Evidence {
    pub lab: String,
    pub requests: u32,
    /// Hosts that could not be reached, and why.
    pub unreachable: BTreeMap<String, String>,
    pub before: BTreeMap<String, BTreeMap<String, Out>>,
    pub traffic: BTreeMap<String, Traffic>,
    pub after: BTreeMap<String, BTreeMap<String, Out>>,
    pub custom: Vec<UserCheckRun>,
    pub seconds: f64,
    /// HA labs: how long verify waited for every VRRP instance to have one
    /// holder before looking (keepalived needs a few adverts after a start).
    #[serde(default)]
    pub vrrp_wait: Option<f64>,
    /// How many times the directors' IPVS counters were read again after the
    /// traffic because they still fell short of the answers (the kernel folds
    /// them in every 2 s, later on a loaded machine).
    #[serde(default)]
    pub stats_rereads: u32,
}

impl Evidence {
    /// Replace every occurrence of a secret in what was read with `********`,
    /// so that neither reports nor saved evidence ever hold one.
    pub fn mask(&mut self, secrets: &[&str]) {
        let mask = |text: &mut String| {
            for s in secrets.iter().filter(|s| !s.is_empty()) {
                if text.contains(s) {
                    *text = text.replace(s, "********");
                }
            }
        };
        for round in [&mut self.before, &mut self.after] {
            for out in round.values_mut().flat_map(|m| m.values_mut()) {
                mask(&mut out.out);
            }
        }
        for r in &mut self.custom {
            if let Some(o) = r.last.as_mut() {
                mask(&mut o.out);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// Not checked, with the reason in the message. Never counted as passed.
    Skip,
}

/// One real server's part of a service's traffic (for the bar chart).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    pub host: String,
    pub weight: u32,
    pub answered: u32,
    /// The expected fraction of answered requests, when the scheduler fixes one.
    pub expected: Option<f64>,
    /// New connections IPVS gave it during the run (all directors together).
    pub ipvs_conns: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable id: `distribution/http`, `audit/web1`, `ipvs/director`, `check/<name>`.
    pub id: String,
    /// The kind: distribution, stickiness, path, arp, audit, ipvs, health, check.
    pub kind: &'static str,
    pub title: String,
    /// One line: what passing this check proves.
    pub proves: String,
    pub verdict: Verdict,
    /// One line: the result, and on failure what is wrong.
    pub message: String,
    /// The values seen.
    pub evidence: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<Share>,
}

impl Check {
    /// A check that passes until settled otherwise.
    pub fn new(id: String, kind: &'static str, title: String, proves: &str) -> Check {
        Check {
            id,
            kind,
            title,
            proves: proves.to_string(),
            verdict: Verdict::Pass,
            message: String::new(),
            evidence: Vec::new(),
            shares: Vec::new(),
        }
    }

    /// Settle the verdict: failed if there are problems (the message lists
    /// them), else passed with `ok`.
    pub fn settle(mut self, problems: Vec<String>, ok: String) -> Check {
        if problems.is_empty() {
            self.verdict = Verdict::Pass;
            self.message = ok;
        } else {
            self.verdict = Verdict::Fail;
            self.message = problems.join("; ");
        }
        self
    }

    /// Not checked, and why.
    pub fn skip(mut self, why: impl Into<String>) -> Check {
        self.verdict = Verdict::Skip;
        self.message = why.into();
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub lab: String,
    pub requests: u32,
    pub tolerance: f64,
    pub client: Option<String>,
    pub passed: bool,
    pub counts: Counts,
    pub seconds: f64,
    pub checks: Vec<Check>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Report {
    pub fn new(t: &crate::model::Topology, ev: &Evidence, checks: Vec<Check>) -> Report {
        let mut counts = Counts::default();
        for c in &checks {
            match c.verdict {
                Verdict::Pass => counts.passed += 1,
                Verdict::Fail => counts.failed += 1,
                Verdict::Skip => counts.skipped += 1,
            }
        }
        Report {
            schema: SCHEMA,
            lab: t.lab.clone(),
            requests: ev.requests,
            tolerance: t.verify.tolerance,
            client: t.verify.client.map(|c| t.host(c).name.clone()),
            passed: counts.failed == 0,
            counts,
            seconds: ev.seconds,
            checks,
        }
    }
}
