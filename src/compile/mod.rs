//! `compile`: model + playbooks + templates → [`Plan`]. Pure: no I/O, no clock,
//! no randomness; the same topology always gives the same plan.
//!
//! Playbooks (`playbooks/*.yaml`, embedded at build time) are lists of plays:
//! a phase, the hosts it targets (by role), an optional `when` expression and
//! ordered steps. Each step names one resource kind with its parameters
//! (minijinja templates over the host's [`context::Context`]), a `why`, and
//! optional `when` / `loop` expressions. Parameters are rendered, then checked
//! against a strict grammar before they become a typed [`Resource`].

pub mod context;
pub mod persist;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::assets;
use crate::model::{Host, Init, Role, Topology, is_interface_name, is_safe_path, normal_path};
use crate::plan::{HostPlan, PHASES, Phase, Plan, Resource, SCHEMA, ServiceManager, Step, line};

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("{playbook}: cannot read playbook: {source}")]
    Playbook {
        playbook: String,
        source: serde_yaml::Error,
    },
    #[error("{playbook}: play `{play}`, step {step} on host {host}: {message}")]
    Step {
        playbook: String,
        play: String,
        step: usize,
        host: String,
        message: String,
    },
    #[error("{playbook}: play `{play}`: {message}")]
    Play {
        playbook: String,
        play: String,
        message: String,
    },
    /// A problem with a step written in the topology itself.
    #[error("{0}")]
    User(crate::diag::Diagnostic),
    /// Several such problems, each at its step (validation goes on past
    /// the first bad step).
    #[error("{0}")]
    Users(crate::diag::Diagnostics),
    #[error("templates/{template}: {message}")]
    Template { template: String, message: String },
    #[error("host {host}: service `{service}` restarts on {path}, which no file step of that host writes")]
    RestartOn {
        host: String,
        service: String,
        path: String,
    },
    #[error("host {host}: two steps want `{id}` in different states ({a} / {b})")]
    Conflict {
        host: String,
        id: String,
        a: String,
        b: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Play {
    name: String,
    phase: String,
    hosts: HostSelector,
    #[serde(default)]
    when: Option<String>,
    steps: Vec<serde_yaml::Mapping>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum HostSelector {
    All,
    Clients,
    Directors,
    RealServers,
    Storage,
    Routers,
}

impl HostSelector {
    fn matches(self, role: Role) -> bool {
        match self {
            HostSelector::All => true,
            HostSelector::Clients => role == Role::Client,
            HostSelector::Directors => role == Role::Director,
            HostSelector::RealServers => role == Role::RealServer,
            HostSelector::Storage => role == Role::Storage,
            HostSelector::Routers => role == Role::Router,
        }
    }
}

/// Step parameters as written in a playbook (after template rendering).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Params {
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
        to: String,
        via: String,
        #[serde(default)]
        dev: Option<String>,
    },
    Link {
        name: String,
        #[serde(default = "yes")]
        up: bool,
    },
    Directory {
        path: String,
        #[serde(default = "dir_mode")]
        mode: String,
        #[serde(default)]
        purge: bool,
    },
    File {
        path: String,
        #[serde(default)]
        content: Option<String>,
        #[serde(default)]
        template: Option<String>,
        #[serde(default = "file_mode")]
        mode: String,
        #[serde(default)]
        validate: Option<String>,
        /// `content` is taken as it is, never rendered (`src:` sets it;
        /// read by `render_params` before the parameters are typed).
        #[serde(default)]
        #[allow(dead_code)]
        raw: bool,
        /// The text of a user's template file (read by the model, named by `template`).
        #[serde(default)]
        template_source: Option<String>,
        /// A user's template: strip spaces before a block tag (as Ansible's
        /// `lstrip_blocks`, off by default; `trim_blocks` is always on).
        #[serde(default)]
        lstrip_blocks: bool,
    },
    /// A line in a file (`line`, or `key` and `value` joined by `separator`,
    /// replacing the key's line), as Ansible's `lineinfile`.
    Line {
        path: String,
        #[serde(default)]
        line: Option<String>,
        /// A Rust regular expression: the last line it matches is replaced.
        #[serde(default)]
        regexp: Option<String>,
        #[serde(default, deserialize_with = "scalar")]
        key: Option<String>,
        #[serde(default, deserialize_with = "scalar")]
        value: Option<String>,
        #[serde(default = "key_separator")]
        separator: String,
        #[serde(default = "file_mode")]
        mode: String,
    },
    Service {
        name: String,
        unit: String,
        command: String,
        #[serde(default)]
        restart_on: Vec<String>,
        /// Where the pid file (daemons) and the running configuration's hash
        /// live. Default: `/run/lvslab` for daemons (a pid dies with the boot),
        /// `/var/lib/lvslab/services` for systemd units (the unit comes back
        /// after a reboot with the same configuration, so its hash must too).
        #[serde(default)]
        state_dir: Option<String>,
    },
    Package {
        #[serde(default)]
        apt: Vec<String>,
        #[serde(default)]
        dnf: Vec<String>,
    },
    IpvsTable {},
    Mount {
        source: String,
        target: String,
        fstype: String,
        options: String,
    },
    Command {
        name: String,
        check: String,
        run: String,
        #[serde(default)]
        revert: Option<String>,
    },
}

fn yes() -> bool {
    true
}
/// Daemons' pid files and hashes: gone with the boot, as the daemon is.
pub const DAEMON_STATE_DIR: &str = "/run/lvslab";
/// Systemd units' hashes: the unit survives a reboot, so must its record.
pub const UNIT_STATE_DIR: &str = "/var/lib/lvslab/services";
fn dir_mode() -> String {
    "0755".into()
}
fn file_mode() -> String {
    "0644".into()
}
/// A string, number or boolean as the text YAML wrote (`value: 1024`).
fn scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    match serde_yaml::Value::deserialize(d)? {
        serde_yaml::Value::String(s) => Ok(Some(s)),
        serde_yaml::Value::Number(n) => Ok(Some(n.to_string())),
        serde_yaml::Value::Bool(b) => Ok(Some(b.to_string())),
        serde_yaml::Value::Null => Ok(None),
        other => Err(D::Error::custom(format!(
            "expected a string, number or boolean, found {other:?}"
        ))),
    }
}

fn key_separator() -> String {
    " = ".into()
}

const META_KEYS: [&str; 3] = ["why", "when", "loop"];

pub use crate::model::TEMPLATE_FUEL;

fn environment() -> Result<Environment<'static>, CompileError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    // A file's content keeps its final newline.
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .map_err(|e| CompileError::Template {
            template: "(syntax)".into(),
            message: e.to_string(),
        })?;
    env.set_syntax(syntax);
    // Nothing is HTML-escaped, whatever a template's name ends with (the
    // playbook strings are named by their text, `…/index.html` among them).
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("q", |s: String| crate::shell::quote(&s));
    for (name, src) in assets::TEMPLATES {
        env.add_template(name, src).map_err(|e| CompileError::Template {
            template: name.to_string(),
            message: format!("{e:#}"),
        })?;
    }
    // Every template string of the embedded playbooks, compiled once and
    // named by its own text (see `render`).
    for (_, plays) in playbooks()? {
        for play in plays {
            for step in &play.steps {
                let mut strings = Vec::new();
                collect_templates(&serde_yaml::Value::Mapping(step.clone()), &mut strings);
                for t in strings {
                    if env.get_template(&t).is_err() {
                        env.add_template_owned(t.clone(), t)
                            .map_err(|e| CompileError::Template {
                                template: "(a playbook string)".into(),
                                message: format!("{e:#}"),
                            })?;
                    }
                }
            }
        }
    }
    Ok(env)
}

/// The template environment, built once per process: the embedded templates
/// and playbook strings never change, so neither does it.
fn shared_environment() -> Result<&'static Environment<'static>, CompileError> {
    static ENV: std::sync::OnceLock<Result<Environment<'static>, String>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| environment().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|message| CompileError::Template {
            template: "(environment)".into(),
            message: message.clone(),
        })
}

/// The strings of a step that are templates.
fn collect_templates(v: &serde_yaml::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::String(s) if s.contains("{{") || s.contains("{%") => out.push(s.clone()),
        serde_yaml::Value::Sequence(items) => items.iter().for_each(|i| collect_templates(i, out)),
        serde_yaml::Value::Mapping(m) => m.values().for_each(|i| collect_templates(i, out)),
        _ => {}
    }
}

/// Each embedded playbook's name and plays.
type Playbooks = Vec<(&'static str, Vec<Play>)>;

/// The embedded playbooks, parsed once per process (they are compiled in,
/// so every parse gives the same plays).
fn playbooks() -> Result<&'static [(&'static str, Vec<Play>)], CompileError> {
    // On error: the playbook's name and serde's message.
    static PLAYS: std::sync::OnceLock<Result<Playbooks, (String, String)>> = std::sync::OnceLock::new();
    let parsed = PLAYS.get_or_init(|| {
        assets::PLAYBOOKS
            .iter()
            .map(|(name, src)| {
                serde_yaml::from_str::<Vec<Play>>(src)
                    .map(|plays| (*name, plays))
                    .map_err(|e| (name.to_string(), e.to_string()))
            })
            .collect()
    });
    parsed.as_deref().map_err(|(playbook, message)| CompileError::Play {
        playbook: playbook.clone(),
        play: "(the whole file)".into(),
        message: format!("cannot read playbook: {message}"),
    })
}

/// Compile a validated topology into a plan.
pub fn compile(topo: &Topology) -> Result<Plan, CompileError> {
    let env = shared_environment()?;
    let mut per_host: Vec<BTreeMap<&str, Vec<Step>>> = vec![BTreeMap::new(); topo.hosts.len()];
    // Each host's context, built once.
    let contexts: Vec<Value> = topo
        .hosts
        .iter()
        .map(|h| Value::from(minijinja::value::Serde(context::build(topo, h))))
        .collect();
    add_playbook_steps(env, topo, &contexts, &mut per_host)?;
    add_extra_steps(env, topo, &contexts, &mut per_host)?;
    let plan = Plan {
        schema: SCHEMA,
        lab: topo.lab.clone(),
        mode: topo.mode,
        phases: phases(topo, per_host)?,
        removals: Vec::new(),
        notes: notes(topo),
        secrets: context::secrets(topo),
    };
    check_secret_placeholders(&plan)?;
    Ok(persist::add(topo, bind_service_hashes(plan)?))
}

/// The steps of every embedded play, expanded for each host it targets (and
/// whose `when` holds), appended to that host's steps of the play's phase.
fn add_playbook_steps(
    env: &Environment,
    topo: &Topology,
    contexts: &[Value],
    per_host: &mut [BTreeMap<&str, Vec<Step>>],
) -> Result<(), CompileError> {
    for (playbook, plays) in playbooks()? {
        for play in plays {
            let phase = PHASES
                .iter()
                .find(|p| **p == play.phase)
                .ok_or_else(|| CompileError::Play {
                    playbook: playbook.to_string(),
                    play: play.name.clone(),
                    message: format!("unknown phase `{}` (phases: {})", play.phase, PHASES.join(", ")),
                })?;
            for host in topo.hosts.iter().filter(|h| play.hosts.matches(h.role)) {
                let ctx = &contexts[host.id.0];
                let fail = |step: usize, message: String| CompileError::Step {
                    playbook: playbook.to_string(),
                    play: play.name.clone(),
                    step,
                    host: host.name.clone(),
                    message,
                };
                if let Some(expr) = &play.when
                    && !eval_bool(env, expr, ctx).map_err(|m| fail(0, m))?
                {
                    continue;
                }
                for (i, raw) in play.steps.iter().enumerate() {
                    let steps = expand_step(env, topo, host, raw, ctx).map_err(|m| fail(i + 1, m))?;
                    per_host[host.id.0].entry(phase).or_default().extend(steps);
                }
            }
        }
    }
    Ok(())
}

/// The steps a topology declares for its hosts, expanded like a playbook's
/// and appended to the host's steps of their phase; a bad one is the user's error.
fn add_extra_steps(
    env: &Environment,
    topo: &Topology,
    contexts: &[Value],
    per_host: &mut [BTreeMap<&str, Vec<Step>>],
) -> Result<(), CompileError> {
    let mut problems = crate::diag::Diagnostics::default();
    for host in &topo.hosts {
        if host.extra_steps.is_empty() {
            continue;
        }
        let base = &contexts[host.id.0];
        // A variable may not hide a name of lvslab's context.
        if let Some(name) = host
            .vars
            .keys()
            .find(|k| base.get_attr(k).is_ok_and(|v| !v.is_undefined()))
        {
            return Err(CompileError::User(
                crate::diag::Diagnostic::error(format!(
                    "host `{}`: variable `{name}` has the name of one lvslab gives its templates",
                    host.name
                ))
                .at(
                    &topo.source,
                    host.extra_steps.first().map_or_else(Default::default, |e| e.span),
                )
                .hint(
                    "rename the variable (lvslab's context: lab, mode, host, web, …; see `lvslab plan --format json`)",
                ),
            ));
        }
        let ctx = &minijinja::context! { ..base.clone(), ..Value::from(minijinja::value::Serde(&host.vars)) };
        let mut on_files: Vec<(crate::diag::Span, Resource)> = Vec::new();
        for extra in &host.extra_steps {
            let steps = match expand_step(env, topo, host, &extra.step, ctx) {
                Ok(steps) => steps,
                Err(m) => {
                    problems.push(
                        crate::diag::Diagnostic::error(format!("step for host `{}`: {m}", host.name))
                            .at(&topo.source, extra.span)
                            .hint("steps use the playbook step format: one resource kind, its parameters and a `why`"),
                    );
                    continue;
                }
            };
            for step in &steps {
                if !matches!(step.resource, Resource::File { .. } | Resource::Line { .. }) {
                    continue;
                }
                if let Some((first, why)) = on_files
                    .iter()
                    .find_map(|(span, r)| undo_each_other(r, &step.resource).map(|why| (span.line, why)))
                {
                    problems.push(
                        crate::diag::Diagnostic::error(format!(
                            "host `{}`: this step and the one at line {first} undo each other: {why}",
                            host.name
                        ))
                        .at(&topo.source, extra.span)
                        .hint("keep one of them: every run would rewrite the file, and drift would never be clean"),
                    );
                    break;
                }
                on_files.push((extra.span, step.resource.clone()));
            }
            per_host[host.id.0].entry(extra.phase).or_default().extend(steps);
        }
    }
    match problems.0.len() {
        0 => Ok(()),
        1 => Err(CompileError::User(problems.0.remove(0))),
        _ => Err(CompileError::Users(problems)),
    }
}

/// Why two steps on one file would undo each other, run after run: a whole
/// file and a line in it, or two lines where one's pattern matches the
/// other's line (each replaces what the other wrote).
fn undo_each_other(a: &Resource, b: &Resource) -> Option<String> {
    let matches = |re: &Option<String>, line: &str| {
        re.as_deref()
            .and_then(crate::plan::line::regex)
            .is_some_and(|re| re.is_match(line))
    };
    match (a, b) {
        (Resource::File { path: p, .. }, Resource::Line { path: q, .. })
        | (Resource::Line { path: p, .. }, Resource::File { path: q, .. })
            if normal_path(p) == normal_path(q) =>
        {
            Some(format!("a file step writes all of {p}, and a line step edits it"))
        }
        (
            Resource::Line {
                path: p,
                line: la,
                regexp: ra,
                ..
            },
            Resource::Line {
                path: q,
                line: lb,
                regexp: rb,
                ..
            },
        ) if normal_path(p) == normal_path(q) && la != lb && (matches(ra, lb) || matches(rb, la)) => {
            Some(format!("in {p}, `{la}` and `{lb}` each replace the other"))
        }
        _ => None,
    }
}

/// The plan's phases in `PHASES` order, each with the hosts (in topology
/// order) that have steps in it, their steps deduplicated; empty ones left out.
fn phases(topo: &Topology, mut per_host: Vec<BTreeMap<&str, Vec<Step>>>) -> Result<Vec<Phase>, CompileError> {
    let mut phases = Vec::new();
    for phase in PHASES {
        let mut hosts = Vec::new();
        for (hi, host_steps) in per_host.iter_mut().enumerate() {
            let Some(steps) = host_steps.remove(phase) else {
                continue;
            };
            let steps = dedup(&topo.hosts[hi].name, steps)?;
            if !steps.is_empty() {
                hosts.push(HostPlan {
                    host: topo.hosts[hi].name.clone(),
                    steps,
                });
            }
        }
        if !hosts.is_empty() {
            phases.push(Phase {
                name: phase.to_string(),
                hosts,
            });
        }
    }
    Ok(phases)
}

/// The plan's notes: each host whose packages are planned for an assumed OS.
fn notes(topo: &Topology) -> Vec<String> {
    topo.hosts
        .iter()
        .filter(|h| h.packages && h.os.is_none())
        .map(|h| {
            format!(
                "{}: no `os:` declared: planned as debian; `up` and `drift` ask the host",
                h.name
            )
        })
        .collect()
}

/// Refuses a plan whose file outside keepalived.conf holds a secret placeholder.
/// A secret is filled in only where lvslab's own templates put its
/// placeholder (keepalived.conf, mode 0640); a page or a step's file that
/// spells the placeholder would get the password served to anyone.
fn check_secret_placeholders(plan: &Plan) -> Result<(), CompileError> {
    for step in plan
        .phases
        .iter()
        .flat_map(|p| p.hosts.iter())
        .flat_map(|h| h.steps.iter())
    {
        if let Resource::File { path, content, .. } = &step.resource
            && content.contains(crate::plan::SECRET_PLACEHOLDER_PREFIX)
            && path != crate::plan::KEEPALIVED_CONF
        {
            return Err(CompileError::User(
                crate::diag::Diagnostic::error(format!(
                    "the content of {path} holds lvslab's secret placeholder `{}…`",
                    crate::plan::SECRET_PLACEHOLDER_PREFIX
                ))
                .hint("secrets are filled in only into keepalived.conf; remove the placeholder from pages and steps"),
            ));
        }
    }
    Ok(())
}

/// Two plays may want the same resource: identical is fine (kept once), different is a bug.
fn dedup(host: &str, steps: Vec<Step>) -> Result<Vec<Step>, CompileError> {
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    for s in steps {
        match out.iter().find(|o| o.id == s.id) {
            Some(o) if o.resource == s.resource => {}
            Some(o) => {
                return Err(CompileError::Conflict {
                    host: host.to_string(),
                    id: s.id.clone(),
                    a: o.summary.clone(),
                    b: s.summary.clone(),
                });
            }
            None => out.push(s),
        }
    }
    Ok(out)
}

/// The `when` and `loop` expressions of the embedded playbooks, compiled once.
fn playbook_expressions() -> &'static BTreeMap<&'static str, minijinja::Expression<'static, 'static>> {
    static EXPRS: std::sync::OnceLock<BTreeMap<&'static str, minijinja::Expression<'static, 'static>>> =
        std::sync::OnceLock::new();
    EXPRS.get_or_init(|| {
        let mut out = BTreeMap::new();
        let (Ok(env), Ok(plays)) = (shared_environment(), playbooks()) else {
            return out;
        };
        for (_, plays) in plays {
            for play in plays {
                let steps = play.steps.iter().flat_map(|s| ["when", "loop"].map(|k| s.get(k)));
                for e in play
                    .when
                    .iter()
                    .map(String::as_str)
                    .chain(steps.flatten().filter_map(|v| v.as_str()))
                {
                    if let Ok(compiled) = env.compile_expression(e) {
                        out.insert(e, compiled);
                    }
                }
            }
        }
        out
    })
}

/// Evaluate an expression: a playbook's (compiled once), or a topology step's.
fn eval(env: &Environment, expr: &str, ctx: &Value) -> Result<Value, String> {
    match playbook_expressions().get(expr) {
        Some(e) => e.eval(ctx),
        None => env
            .compile_expression(expr)
            .map_err(|e| format!("`{expr}`: {e}"))?
            .eval(ctx),
    }
    .map_err(|e| format!("`{expr}`: {e}"))
}

fn eval_bool(env: &Environment, expr: &str, ctx: &Value) -> Result<bool, String> {
    defined(eval(env, expr, ctx)?, "when", expr).map(|v| v.is_true())
}

/// A step's `when:`: an expression, `true`/`false`, or a list of those that
/// must all hold (Ansible's list form). Anything else (`when: 0`, an empty
/// `when:`) is refused rather than read as a condition that holds.
fn when_holds(env: &Environment, cond: &serde_yaml::Value, ctx: &Value) -> Result<bool, String> {
    match cond {
        serde_yaml::Value::String(expr) => eval_bool(env, expr, ctx),
        serde_yaml::Value::Bool(b) => Ok(*b),
        serde_yaml::Value::Sequence(all) if all.iter().all(|c| c.is_string() || c.is_bool()) => {
            for c in all {
                if !when_holds(env, c, ctx)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        other => Err(format!(
            "`when: {}` is not a condition: write an expression, true or false, or a list of them",
            serde_yaml::to_string(other).unwrap_or_default().trim()
        )),
    }
}

/// A `when` or `loop` naming nothing is a typo (`when: enabeld`), not a
/// false or an empty list: it would drop steps without a word, and on a
/// running lab revert them. `x is defined` asks on purpose.
fn defined(v: Value, what: &str, expr: &str) -> Result<Value, String> {
    if v.is_undefined() {
        Err(format!(
            "{what} `{expr}` is undefined (a variable's name mistyped?); write `{expr} is defined` to ask whether it is"
        ))
    } else {
        Ok(v)
    }
}

fn expand_step(
    env: &Environment,
    topo: &Topology,
    host: &Host,
    raw: &serde_yaml::Mapping,
    ctx: &Value,
) -> Result<Vec<Step>, String> {
    let get = |k: &str| raw.get(k).and_then(|v| v.as_str());
    let why = get("why").ok_or("every step needs a `why`")?;
    let kinds: Vec<&serde_yaml::Value> = raw
        .keys()
        .filter(|k| !k.as_str().is_some_and(|k| META_KEYS.contains(&k)))
        .collect();
    if kinds.len() != 1 {
        let names: Vec<&str> = kinds.iter().filter_map(|k| k.as_str()).collect();
        // `phse:` is a mistyped key, not a second kind.
        let typo = names.iter().find_map(|n| {
            crate::diag::did_you_mean(n, ["phase", "why", "when", "loop"])
                .map(|m| format!("; `{n}`: did you mean `{m}`?"))
        });
        return Err(format!(
            "a step names exactly one resource kind, found {}: {}{}",
            kinds.len(),
            names.join(", "),
            typo.unwrap_or_default()
        ));
    }
    let items: Vec<Value> = match raw.get("loop") {
        Some(serde_yaml::Value::String(expr)) => {
            // Ansible's `loop: "{{ list }}"` is the expression `list`.
            let expr = expr
                .trim()
                .strip_prefix("{{")
                .and_then(|e| e.strip_suffix("}}"))
                .map_or(expr.as_str(), str::trim);
            let v = defined(eval(env, expr, ctx).map_err(|e| format!("loop {e}"))?, "loop", expr)?;
            if v.kind() == minijinja::value::ValueKind::String {
                return Err(format!("loop `{expr}` is a string: a loop goes over a list"));
            }
            v.try_iter().map_err(|e| format!("loop `{expr}`: {e}"))?.collect()
        }
        // A list written out (Ansible's usual form), its strings rendered.
        Some(list @ serde_yaml::Value::Sequence(_)) => match render_value(env, list, ctx)? {
            serde_yaml::Value::Sequence(items) => {
                items.iter().map(|i| Value::from(minijinja::value::Serde(i))).collect()
            }
            _ => Vec::new(),
        },
        Some(other) => {
            return Err(format!(
                "`loop: {}` is neither an expression nor a list",
                serde_yaml::to_string(other).unwrap_or_default().trim()
            ));
        }
        None => vec![Value::UNDEFINED],
    };
    let mut out = Vec::new();
    for item in items {
        let ctx = if item.is_undefined() {
            ctx.clone()
        } else {
            minijinja::context! { item => item, ..ctx.clone() }
        };
        if let Some(cond) = raw.get("when")
            && !when_holds(env, cond, &ctx)?
        {
            continue;
        }
        // serde_yaml reads an externally tagged enum from a YAML tag (`!sysctl {...}`).
        let kind = kinds[0].as_str().ok_or("a step's resource kind must be a name")?;
        let params = render_params(env, raw.get(kinds[0]).unwrap_or(&serde_yaml::Value::Null), &ctx)?;
        let tagged = serde_yaml::Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
            tag: serde_yaml::value::Tag::new(kind),
            value: params,
        }));
        let params: Params = serde_yaml::from_value(tagged).map_err(|e| format!("{kind}: {e}"))?;
        // lvslab's own daemons (units named `lvslab-…`) on systemd hosts: their unit file first.
        let own_unit = match (&params, host.init) {
            (Params::Service { unit, command, .. }, Init::Systemd) if unit.starts_with("lvslab-") => {
                Some(own_unit_file(&topo.lab, unit, command))
            }
            _ => None,
        };
        let mut resource = resource(env, topo, host, params, &ctx)?;
        if let Some(unit_file) = own_unit {
            if let (Resource::Service { restart_on, .. }, Resource::File { path, .. }) = (&mut resource, &unit_file) {
                restart_on.push(path.clone());
            }
            out.push(Step::new(
                unit_file,
                "lvslab's own daemon needs a systemd unit of its own: what it runs, restarted on failure".into(),
            ));
        }
        out.push(Step::new(resource, render(env, why, &ctx)?.trim().to_string()));
    }
    Ok(out)
}

fn render(env: &Environment, s: &str, ctx: &Value) -> Result<String, String> {
    if s.contains("{{") || s.contains("{%") {
        // A playbook string was compiled once (named by its text); a
        // topology's own step is compiled here.
        match env.get_template(s) {
            Ok(t) => t.render(ctx),
            Err(_) => env.render_str(s, ctx),
        }
        .map_err(|e| format!("template `{s}`: {e}"))
    } else {
        Ok(s.to_string())
    }
}

/// A step's parameters rendered, but for the text that is not a template
/// here: `content` under `raw: true` and a user template's source (rendered
/// on its own, with its own settings).
fn render_params(env: &Environment, v: &serde_yaml::Value, ctx: &Value) -> Result<serde_yaml::Value, String> {
    let serde_yaml::Value::Mapping(m) = v else {
        return render_value(env, v, ctx);
    };
    let mut m = m.clone();
    let mut kept = Vec::new();
    if m.get("raw").and_then(serde_yaml::Value::as_bool) == Some(true)
        && let Some(c) = m.remove("content")
    {
        kept.push(("content", c));
    }
    if let Some(t) = m.remove("template_source") {
        kept.push(("template_source", t));
    }
    let mut out = render_value(env, &serde_yaml::Value::Mapping(m), ctx)?;
    if let serde_yaml::Value::Mapping(o) = &mut out {
        for (k, v) in kept {
            o.insert(k.into(), v);
        }
    }
    Ok(out)
}

/// A template file of the user's, rendered as Ansible's `template` renders
/// one: the newline after a block tag removed (`trim_blocks`), spaces
/// before one only when asked (`lstrip_blocks`), the final newline kept;
/// an undefined variable is an error.
fn user_template(name: &str, source: &str, lstrip_blocks: bool, ctx: &Value) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(TEMPLATE_FUEL));
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(lstrip_blocks)
        .keep_trailing_newline(true)
        .build()
        .map_err(|e| e.to_string())?;
    env.set_syntax(syntax);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("q", |s: String| crate::shell::quote(&s));
    env.render_named_str(name, source, ctx)
        .map_err(|e| format!("template {name}: {}", template_error(&e)))
}

/// A render error with minijinja's excerpt of the template, but without its
/// "Referenced variables" block: variables hold passwords as often as ports,
/// and secrets are never printed.
fn template_error(e: &minijinja::Error) -> String {
    let full = format!("{e:#}");
    let mut out = Vec::new();
    let mut skipping = false;
    for line in full.lines() {
        if line.starts_with("Referenced variables:") {
            skipping = true;
            // The `~~~` rule before the block goes with it.
            if out.last().is_some_and(|l: &&str| l.starts_with('~')) {
                out.pop();
            }
            continue;
        }
        if skipping {
            skipping = line != "}";
            continue;
        }
        out.push(line);
    }
    out.join("\n")
}

fn render_value(env: &Environment, v: &serde_yaml::Value, ctx: &Value) -> Result<serde_yaml::Value, String> {
    Ok(match v {
        serde_yaml::Value::String(s) => serde_yaml::Value::String(render(env, s, ctx)?),
        serde_yaml::Value::Sequence(items) => serde_yaml::Value::Sequence(
            items
                .iter()
                .map(|i| render_value(env, i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        serde_yaml::Value::Mapping(m) => {
            let mut out = serde_yaml::Mapping::new();
            for (k, v) in m {
                out.insert(k.clone(), render_value(env, v, ctx)?);
            }
            serde_yaml::Value::Mapping(out)
        }
        other => other.clone(),
    })
}

fn check(ok: bool, what: &str, value: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else if what == "path" {
        Err(format!(
            "path `{value}` does not match its grammar: absolute, of letters, digits and / . _ - + (no spaces, no ..)"
        ))
    } else {
        Err(format!("{what} `{value}` does not match its grammar"))
    }
}

/// A file's path names a file: `/srv/d/` would write `/srv/d/.lvslab-new`
/// and then move it onto the directory.
fn is_file_path(path: &str) -> Result<(), String> {
    if path.ends_with('/') {
        return Err(format!(
            "path `{path}` ends with `/`: a file step's path names a file, not a directory"
        ));
    }
    is_one_spelling(path)
}

/// A step's path in one spelling: no `.` component (`/a/./b`, `/a/b/.`),
/// and a directory's without a final `/` (`rm -rf /a/b/` at `down` would go
/// through a symbolic link put there since).
fn is_one_spelling(path: &str) -> Result<(), String> {
    if path.split('/').any(|c| c == ".") {
        return Err(format!(
            "path `{path}` has a `.` component: write it without (`{}`)",
            crate::model::normal_path(path)
        ));
    }
    if path.len() > 1 && path.ends_with('/') {
        return Err(format!(
            "path `{path}` ends with `/`: write it without (`{}`)",
            path.trim_end_matches('/')
        ));
    }
    Ok(())
}

fn is_word(s: &str, extra: &[char]) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

fn is_mode(s: &str) -> bool {
    (3..=4).contains(&s.len()) && s.chars().all(|c| ('0'..='7').contains(&c))
}

/// Turn rendered parameters into a typed resource, checking every value that
/// will reach a shell command against a strict grammar.
fn resource(env: &Environment, topo: &Topology, host: &Host, p: Params, ctx: &Value) -> Result<Resource, String> {
    Ok(match p {
        Params::Sysctl { key, value } => {
            check(is_word(&key, &['.', '_', '-']) && key.contains('.'), "sysctl key", &key)?;
            check(is_word(&value, &[' ', '-']), "sysctl value", &value)?;
            Resource::Sysctl { key, value }
        }
        Params::KernelModule { name } => {
            check(is_word(&name, &['_']), "module name", &name)?;
            Resource::KernelModule { name }
        }
        Params::Address { address, dev } => {
            check(
                address.parse::<Ipv4Network>().is_ok() && address.contains('/'),
                "address",
                &address,
            )?;
            check(is_interface_name(&dev), "interface", &dev)?;
            Resource::Address { address, dev }
        }
        Params::Route { to, via, dev } => route_resource(to, via, dev)?,
        Params::Link { name, up } => {
            check(is_interface_name(&name), "interface", &name)?;
            Resource::Link { name, up }
        }
        Params::Directory { path, mode, purge } => {
            check(is_safe_path(&path), "path", &path)?;
            is_one_spelling(&path)?;
            check(is_mode(&mode), "mode", &mode)?;
            Resource::Directory { path, mode, purge }
        }
        Params::File {
            path,
            content,
            template,
            mode,
            validate,
            raw: _,
            template_source,
            lstrip_blocks,
        } => {
            check(is_safe_path(&path), "path", &path)?;
            is_file_path(&path)?;
            check(is_mode(&mode), "mode", &mode)?;
            let content = match template_source {
                Some(src) => user_template(&template.unwrap_or_default(), &src, lstrip_blocks, ctx)?,
                None => file_content(env, ctx, content, template)?,
            };
            let sha256 = hex(&Sha256::digest(content.as_bytes()));
            Resource::File {
                path,
                content,
                mode,
                validate,
                sha256,
            }
        }
        Params::Line {
            path,
            line,
            regexp,
            key,
            value,
            separator,
            mode,
        } => line_resource(path, line, regexp, key.zip(value), &separator, mode)?,
        Params::Service {
            name,
            unit,
            command,
            restart_on,
            state_dir,
        } => service_resource(host, name, unit, command, restart_on, state_dir)?,
        Params::Package { apt, dnf } => package_resource(host, apt, dnf)?,
        Params::IpvsTable {} => Resource::IpvsTable {
            services: context::ipvs_table(topo, host),
            previous: Vec::new(),
        },
        Params::Mount {
            source,
            target,
            fstype,
            options,
        } => mount_resource(source, target, fstype, options)?,
        Params::Command {
            name,
            check: chk,
            run,
            revert,
        } => {
            check(is_word(&name, &['-', '_', '.', ':']), "command name", &name)?;
            Resource::Command {
                name,
                check: chk,
                run,
                revert,
            }
        }
    })
}

/// A line step: `line` (with an optional `regexp`), or `key` and `value`
/// (the line `KEY SEPARATOR VALUE`, replacing the line that sets the key).
fn line_resource(
    path: String,
    line: Option<String>,
    regexp: Option<String>,
    key_value: Option<(String, String)>,
    separator: &str,
    mode: String,
) -> Result<Resource, String> {
    check(is_safe_path(&path), "path", &path)?;
    is_file_path(&path)?;
    check(is_mode(&mode), "mode", &mode)?;
    let (line, regexp) = match (line, key_value) {
        (Some(l), None) => (l, regexp),
        (None, Some((k, v))) if regexp.is_none() => {
            let sep = separator.trim();
            let re = if sep.is_empty() {
                format!("^[[:space:]]*{}([[:space:]]|$)", line::ere_escape(&k))
            } else {
                format!(
                    "^[[:space:]]*{}[[:space:]]*{}",
                    line::ere_escape(&k),
                    line::ere_escape(sep)
                )
            };
            (format!("{k}{separator}{v}"), Some(re))
        }
        _ => return Err("a line step has either `line` (and an optional `regexp`) or `key` and `value`".into()),
    };
    if line.contains('\n') {
        return Err("a line step's line is one line (no newline in it)".into());
    }
    // Compiled again only to say why.
    if let Some(r) = regexp.as_deref().filter(|r| crate::plan::line::regex(r).is_none()) {
        regex::Regex::new(r).map_err(|e| format!("regexp `{r}`: {e}"))?;
    }
    Ok(Resource::Line {
        path,
        line,
        regexp,
        mode,
    })
}

/// A route step: the destination (`default` or a network), the next hop and
/// the optional device, each checked against its grammar.
fn route_resource(to: String, via: String, dev: Option<String>) -> Result<Resource, String> {
    check(
        to == "default" || to.parse::<Ipv4Network>().is_ok(),
        "route destination",
        &to,
    )?;
    check(via.parse::<Ipv4Addr>().is_ok(), "next hop", &via)?;
    if let Some(d) = &dev {
        check(is_interface_name(d), "interface", d)?;
    }
    Ok(Resource::Route { to, via, dev })
}

/// A file step's content: given inline, or rendered from a named template
/// with the host's context; exactly one of the two.
fn file_content(
    env: &Environment,
    ctx: &Value,
    content: Option<String>,
    template: Option<String>,
) -> Result<String, String> {
    match (content, template) {
        (Some(c), None) => Ok(c),
        (None, Some(t)) => env
            .get_template(&t)
            .and_then(|tpl| tpl.render(ctx))
            .map_err(|e| format!("template {t}: {}", template_error(&e))),
        _ => Err("a file step has exactly one of `content` or `template`".into()),
    }
}

/// A service step managed as the host's init runs it (a systemd unit, or a
/// daemon with a pid file in its state directory, by default the init's own).
fn service_resource(
    host: &Host,
    name: String,
    unit: String,
    command: String,
    restart_on: Vec<String>,
    state_dir: Option<String>,
) -> Result<Resource, String> {
    let state_dir = state_dir.unwrap_or_else(|| {
        match host.init {
            Init::Systemd => UNIT_STATE_DIR,
            Init::Daemon => DAEMON_STATE_DIR,
        }
        .to_string()
    });
    check(is_safe_path(&state_dir), "state directory", &state_dir)?;
    check(is_word(&name, &['-', '_']), "service name", &name)?;
    check(is_word(&unit, &['-', '_', '.', '@']), "unit", &unit)?;
    let manager = match host.init {
        Init::Systemd => ServiceManager::Systemd { unit },
        Init::Daemon => ServiceManager::Daemon {
            command,
            pidfile: format!("{state_dir}/{name}.pid"),
        },
    };
    // Bound to the files' contents after the plan is assembled.
    Ok(Resource::Service {
        name,
        manager,
        config_hash: String::new(),
        state_dir,
        restart_on,
    })
}

/// A package step: the host's family picks the manager and the names
/// (`a|b`: either satisfies, `a` is installed).
fn package_resource(host: &Host, apt: Vec<String>, dnf: Vec<String>) -> Result<Resource, String> {
    let (manager, packages) = match host.os_family() {
        crate::model::OsFamily::Debian => (crate::plan::PackageManager::Apt, apt),
        crate::model::OsFamily::Rhel => (crate::plan::PackageManager::Dnf, dnf),
    };
    for p in packages.iter().flat_map(|p| p.split('|')) {
        check(is_word(p, &['-', '+', '.']), "package", p)?;
    }
    Ok(Resource::Package { manager, packages })
}

/// A mount step: an `address:path` source, a target path, a file system
/// type and options, each checked against its grammar.
fn mount_resource(source: String, target: String, fstype: String, options: String) -> Result<Resource, String> {
    let src_ok = source
        .split_once(':')
        .is_some_and(|(a, p)| a.parse::<Ipv4Addr>().is_ok() && is_safe_path(p));
    check(src_ok, "mount source", &source)?;
    check(is_safe_path(&target), "mount target", &target)?;
    check(is_word(&fstype, &[]), "file system type", &fstype)?;
    check(is_word(&options, &['=', ',', '.', '_', '-']), "mount options", &options)?;
    Ok(Resource::Mount {
        source,
        target,
        fstype,
        options,
    })
}

/// The unit file of one of lvslab's own daemons on a systemd host. `%` and
/// `$` are escaped for systemd; the command's first word is found on
/// systemd's own search path (systemd 239 and later).
fn own_unit_file(lab: &str, unit: &str, command: &str) -> Resource {
    let exec = command.replace('%', "%%").replace('$', "$$");
    let content = format!(
        "# Written by lvslab for lab {lab}; `lvslab down` removes it.\n[Unit]\nDescription=lvslab lab {lab}: {unit}\n\
         Wants=network-online.target\nAfter=network-online.target\n\n[Service]\nExecStart={exec}\nRestart=on-failure\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    persist::file_resource(&format!("/etc/systemd/system/{unit}.service"), content, "0644")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A service restarts when what it runs changes: its hash covers its command
/// and the contents of the files named in `restart_on` (as planned for the same host).
fn bind_service_hashes(mut plan: Plan) -> Result<Plan, CompileError> {
    let mut files: BTreeMap<(String, String), String> = BTreeMap::new();
    for phase in &plan.phases {
        for hp in &phase.hosts {
            for s in &hp.steps {
                if let Resource::File { path, sha256, .. } = &s.resource {
                    files.insert((hp.host.clone(), path.clone()), sha256.clone());
                }
            }
        }
    }
    for phase in &mut plan.phases {
        for hp in &mut phase.hosts {
            for step in &mut hp.steps {
                if let Resource::Service {
                    name,
                    manager,
                    config_hash,
                    restart_on,
                    ..
                } = &mut step.resource
                {
                    let mut h = Sha256::new();
                    match manager {
                        ServiceManager::Systemd { unit } => h.update(unit.as_bytes()),
                        ServiceManager::Daemon { command, .. } => h.update(command.as_bytes()),
                    }
                    for path in restart_on.iter() {
                        h.update(path.as_bytes());
                        let sha =
                            files
                                .get(&(hp.host.clone(), path.to_string()))
                                .ok_or_else(|| CompileError::RestartOn {
                                    host: hp.host.clone(),
                                    service: name.clone(),
                                    path: path.to_string(),
                                })?;
                        h.update(sha.as_bytes());
                    }
                    *config_hash = hex(&h.finalize())[..16].to_string();
                    let why = std::mem::take(&mut step.why);
                    *step = Step::new(step.resource.clone(), why);
                }
            }
        }
    }
    Ok(plan)
}
