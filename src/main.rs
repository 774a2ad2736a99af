//! The `lvslab` command line. Parsing arguments, calling the pipeline and
//! choosing exit codes happen here; nothing below this file prints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use std::sync::Arc;

use lvslab::exec::{connect, converge, runner, state};
use lvslab::provider::{netns, vm};
use lvslab::report::count;
use lvslab::{compile, plan, report};

#[derive(Parser)]
#[command(name = "lvslab", version, about = "Linux Virtual Server labs from one YAML file")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check topology files; report every problem with file:line:col and a hint.
    ///
    /// Exit status: 0 all valid (warnings allowed), 1 something invalid.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show what `up` would do, step by step, with why. Touches no host.
    Plan {
        file: PathBuf,
        /// Only this host's steps.
        #[arg(long)]
        host: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// With `--format sh`: write one executable script per host into this directory.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Provision the lab: observe every step, apply only what differs, confirm.
    ///
    /// Exit status: 0 success (or --check), 1 a step or host failed.
    Up {
        file: PathBuf,
        /// Show what would change (with diffs) and change nothing.
        #[arg(long)]
        check: bool,
        /// Do not run `verify` after provisioning.
        #[arg(long)]
        no_verify: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Prove the lab works: real traffic from the client, IPVS tables and
    /// counters, packet paths, ARP ownership, real-server set-up, health, and
    /// the topology's own `checks:`.
    ///
    /// Exit status: 0 every check passed (skipped ones are listed), 1 a check
    /// failed or the lab could not be checked.
    Verify {
        file: PathBuf,
        /// Requests per service (default: the topology's `verify.requests`, else 60).
        #[arg(long)]
        requests: Option<u32>,
        #[arg(long, value_enum, default_value_t = VerifyFormat::Text)]
        format: VerifyFormat,
        /// Also write the report as JUnit XML to this file.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Write everything verify read from the lab (JSON) to this file, to
        /// replay its decisions in tests or attach to a bug report.
        #[arg(long)]
        save_evidence: Option<PathBuf>,
        /// Also the disruptive HA checks: stop keepalived on the director
        /// holding each VIP (measuring the failover gap), stop a real server's
        /// web server (health checks), stop them all (sorry server). Everything
        /// is started again afterwards.
        #[arg(long)]
        failover: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// What no longer matches the topology (changed by hand), host by host,
    /// field by field; with --fix, put back only that.
    ///
    /// One read-only round trip per host observes every step of the plan and
    /// each director's whole IPVS table (services nobody declared included).
    ///
    /// Exit status: 0 no drift, 2 drift found (with --fix: drift left after
    /// fixing), 1 some host could not be checked (its drift is unknown).
    Drift {
        file: PathBuf,
        /// Only these hosts (comma-separated, or repeated).
        #[arg(long, value_delimiter = ',')]
        host: Vec<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        format: Output,
        /// Re-apply only the drifted steps (as `up` would: the difference
        /// only, originals recorded for `down`), put keepalived's own IPVS
        /// entries back with ipvsadm, then observe again and report what was
        /// fixed. IPVS services nobody declared are never removed.
        #[arg(long)]
        fix: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Revert everything `up` changed, in reverse order, restoring what was there before.
    ///
    /// Takes the topology file, or the lab's name when the file is gone.
    Down {
        /// Topology file or lab name.
        #[arg(required_unless_present = "all")]
        lab: Option<String>,
        /// Every lab recorded on this machine.
        #[arg(long, conflicts_with = "lab")]
        all: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// The labs recorded on this machine: name, provider, hosts, topology file, since.
    List,
    /// Run a command on a lab host and exit with its status; without a command,
    /// an interactive shell (netns hosts).
    Exec {
        file: PathBuf,
        host: String,
        /// The command (after `--`).
        #[arg(last = true)]
        command: Vec<String>,
        #[arg(long, value_enum)]
        provider: Option<ProviderArg>,
    },
    /// Internal: run by the vm provider inside its VM to create the lab's
    /// hosts as namespaces there.
    #[command(hide = true)]
    VmGuest {
        file: PathBuf,
        #[arg(long)]
        ssh_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Only these hosts (comma-separated).
    #[arg(long, value_delimiter = ',')]
    limit: Vec<String>,
    #[command(flatten)]
    conn: ConnArgs,
    /// Progress and results as text (default) or JSON lines on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Also list steps that were already in the desired state.
    #[arg(short, long)]
    verbose: bool,
}

/// How to reach the lab's hosts.
#[derive(clap::Args)]
struct ConnArgs {
    /// How many hosts to work on at once.
    #[arg(long, default_value_t = 50)]
    forks: usize,
    /// Where the lab runs; overrides the topology's `provider`.
    #[arg(long, value_enum)]
    provider: Option<ProviderArg>,
    /// Record unknown SSH host keys in known_hosts (a changed key is still refused).
    #[arg(long)]
    accept_new_host_keys: bool,
    /// netns labs: reach the hosts by entering their namespaces (default) or
    /// over SSH on the topology's management network.
    #[arg(long, value_enum, default_value_t = Via::Ns)]
    via: Via,
    /// vm provider: the kernel to boot, a `linux-image-*.deb` or an unpacked
    /// one (a directory with boot/vmlinuz-* and lib/modules/*); default: the
    /// distribution's, fetched with apt-get download. Also $LVSLAB_VM_KERNEL.
    #[arg(long, value_name = "FILE|DIR")]
    vm_kernel: Option<PathBuf>,
}

impl ConnArgs {
    fn vm_kernel(&self) -> Option<PathBuf> {
        self.vm_kernel
            .clone()
            .or_else(|| std::env::var_os("LVSLAB_VM_KERNEL").map(PathBuf::from))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Via {
    Ns,
    Ssh,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProviderArg {
    Ssh,
    Netns,
    Vm,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum VerifyFormat {
    /// A table with a bar chart of each service's distribution.
    Text,
    /// The report as JSON (schema lvslab.verify/v1).
    Json,
    /// JUnit XML, for CI systems.
    Junit,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// By phase and host, each step with its why and commands.
    Text,
    /// The plan as JSON (schema lvslab.plan/v1, see docs/plan-schema.md).
    Json,
    /// A POSIX shell script per host.
    Sh,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let text = format!("{e:#}");
            // A diagnostic says `error:` itself.
            if text.starts_with("error: ") {
                eprintln!("{}", text.trim_end());
            } else {
                eprintln!("error: {text}");
            }
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { files } => Ok(validate(&files)),
        Command::Plan {
            file,
            host,
            format,
            out_dir,
        } => plan(&file, host.as_deref(), format, out_dir.as_deref()),
        Command::Up {
            file,
            check,
            no_verify,
            run,
        } => runtime()?.block_on(up(&file, check, no_verify, &run)),
        Command::Verify {
            file,
            requests,
            format,
            junit,
            save_evidence,
            failover,
            run,
        } => runtime()?.block_on(verify_cmd(
            &file,
            &VerifyArgs {
                requests,
                format,
                junit,
                save_evidence,
                failover,
            },
            &run,
        )),
        Command::Drift {
            file,
            host,
            format,
            fix,
            conn,
        } => {
            let run = RunArgs {
                limit: host,
                conn,
                output: Output::Text,
                verbose: false,
            };
            runtime()?.block_on(drift(&file, format, fix, &run))
        }
        Command::Down { lab, all, run } => runtime()?.block_on(async {
            if all {
                let mut code = ExitCode::SUCCESS;
                for lab in state::list_labs()? {
                    if down(&lab, &run).await? != ExitCode::SUCCESS {
                        code = ExitCode::from(1);
                    }
                }
                Ok(code)
            } else {
                down(lab.as_deref().unwrap_or_default(), &run).await
            }
        }),
        Command::List => list(),
        Command::Exec {
            file,
            host,
            command,
            provider,
        } => runtime()?.block_on(exec(&file, &host, &command, provider)),
        Command::VmGuest { file, ssh_dir } => vm_guest(&file, &ssh_dir),
    }
}

fn validate(files: &[PathBuf]) -> ExitCode {
    let mut bad = 0;
    for file in files {
        match lvslab::load(file) {
            Ok(loaded) => {
                if !loaded.warnings.0.is_empty() {
                    eprintln!("{}", loaded.warnings);
                }
                // What `plan` would refuse, `validate` refuses: the file's
                // own steps and templates are compiled too.
                if let Err(e) = compile::compile(&loaded.topology) {
                    bad += 1;
                    match e {
                        compile::CompileError::User(d) => eprintln!("{d}"),
                        other => eprintln!("error: {other}"),
                    }
                    eprintln!("{}: invalid: 1 error", file.display());
                    continue;
                }
                let t = &loaded.topology;
                let warnings = match loaded.warnings.warning_count() {
                    0 => String::new(),
                    n => format!(", {}", count(n, "warning")),
                };
                println!(
                    "{}: ok: lab {}, mode {}, {}, {}, {}{warnings}",
                    file.display(),
                    t.lab,
                    t.mode.as_str(),
                    count(t.hosts.len(), "host"),
                    count(t.networks.len(), "network"),
                    count(t.services.len(), "service"),
                );
            }
            Err(diags) => {
                bad += 1;
                eprintln!("{diags}");
                eprintln!("{}: invalid: {}", file.display(), count(diags.error_count(), "error"));
            }
        }
    }
    if bad == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

fn plan(file: &Path, host: Option<&str>, format: Format, out_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let mut plan = compile::compile(&loaded.topology)?;
    if let Some(h) = host {
        if loaded.topology.host_by_name(h).is_none() {
            let names: Vec<&str> = loaded.topology.hosts.iter().map(|h| h.name.as_str()).collect();
            anyhow::bail!("no host `{h}` in {} (hosts: {})", file.display(), names.join(", "));
        }
        plan = plan.only_host(h);
    }
    // Against a running lab: what it has and the file no longer declares.
    if let Some(lab_state) = state::LabDir::new(&loaded.topology.lab).load()? {
        let hosts: Vec<String> = loaded.topology.hosts.iter().map(|h| h.name.clone()).collect();
        let limit: Vec<String> = host.map(String::from).into_iter().collect();
        plan.removals = converge::removals(&hosts, &plan, &lab_state, &limit).lines();
        if !plan.removals.is_empty() && matches!(format, Format::Sh) {
            eprintln!(
                "note: the running lab {} has {} the file no longer declares (`lvslab plan` lists them, `lvslab up` removes them); these scripts only build",
                loaded.topology.lab,
                count(plan.removals.len(), "thing")
            );
        }
    }
    let mut stdout = std::io::stdout().lock();
    match (format, out_dir) {
        (Format::Text, None) => stdout.write_all(report::plan_text(&plan).as_bytes())?,
        (Format::Json, None) => stdout.write_all(report::plan_json(&plan)?.as_bytes())?,
        (Format::Sh, None) => {
            for (i, (_, script)) in report::plan_sh(&plan).iter().enumerate() {
                if i > 0 {
                    writeln!(stdout)?;
                }
                stdout.write_all(script.as_bytes())?;
            }
        }
        (Format::Sh, Some(dir)) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for (host, script) in report::plan_sh(&plan) {
                let path = dir.join(format!("{host}.sh"));
                write_script(&path, script.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        (_, Some(_)) => anyhow::bail!("--out-dir is only for --format sh"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Write a script as a new file (mode 0755) and rename it into place: a
/// symlink or another file at `path` is replaced, never written through, and
/// no existing file's mode is changed.
fn write_script(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.lvslab-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&tmp)?;
    let written = f
        .write_all(bytes)
        .and_then(|_| f.set_permissions(std::fs::Permissions::from_mode(0o755)))
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Load a topology, printing its problems (and warnings) on stderr; `None` if invalid.
fn load_reported(file: &Path) -> Option<lvslab::Loaded> {
    match lvslab::load(file) {
        Ok(l) => {
            if !l.warnings.0.is_empty() {
                eprintln!("{}", l.warnings);
            }
            Some(l)
        }
        Err(diags) => {
            eprintln!("{diags}");
            None
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn reporter(run: &RunArgs, hosts: &[String]) -> Arc<dyn runner::Reporter> {
    use std::io::IsTerminal;
    if run.output == Output::Json {
        Arc::new(report::JsonReporter)
    } else if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
        Arc::new(report::TtyReporter::new(hosts))
    } else {
        Arc::new(report::PlainReporter { verbose: run.verbose })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Chosen {
    Ssh,
    Netns,
    Vm,
}

/// The provider: `--provider`, else the topology's `provider:`, else the one
/// the lab was brought up with on this machine, else netns when this machine
/// can run the lab (root, a kernel with IPVS) and vm when not (saying why).
fn choose_provider(topo: &lvslab::model::Topology, run: &RunArgs) -> anyhow::Result<Chosen> {
    use lvslab::model::Provider;
    let recorded = state::LabDir::new(&topo.lab)
        .load()
        .ok()
        .flatten()
        .and_then(|s| s.provider)
        .and_then(|p| match p.as_str() {
            "netns" => Some(Provider::Netns),
            "ssh" => Some(Provider::Ssh),
            "vm" => Some(Provider::Vm),
            _ => None,
        });
    match (run.conn.provider, topo.provider.or(recorded)) {
        (Some(ProviderArg::Ssh), _) | (None, Some(Provider::Ssh)) => Ok(Chosen::Ssh),
        (Some(ProviderArg::Netns), _) | (None, Some(Provider::Netns)) => Ok(Chosen::Netns),
        (Some(ProviderArg::Vm), _) | (None, Some(Provider::Vm)) => Ok(Chosen::Vm),
        (None, None) => Ok(match netns::can_run_here(topo) {
            Ok(()) => {
                eprintln!("provider: netns (root, and this kernel has what the lab needs; --provider to choose)");
                Chosen::Netns
            }
            Err(e) => {
                let why = match e {
                    netns::NetnsError::NotRoot => "network namespaces need root".to_string(),
                    netns::NetnsError::Kernel { module, .. } => format!("this kernel cannot load {module}"),
                    other => other.to_string(),
                };
                eprintln!("provider: vm, because {why} (--provider to choose)");
                Chosen::Vm
            }
        }),
    }
}

/// The topology as the provider runs it: the vm provider adds a management
/// network (for its hosts' sshds) when the topology has none.
fn provider_topology(
    topo: &lvslab::model::Topology,
    provider: Chosen,
) -> anyhow::Result<std::borrow::Cow<'_, lvslab::model::Topology>> {
    Ok(match provider {
        Chosen::Vm => std::borrow::Cow::Owned(vm::with_mgmt(topo)?),
        // Over SSH the plan owns the hosts' addresses (`--provider ssh` on a
        // topology that names another provider, or none).
        Chosen::Ssh if topo.provider != Some(lvslab::model::Provider::Ssh) => {
            let mut t = topo.clone();
            t.provider = Some(lvslab::model::Provider::Ssh);
            std::borrow::Cow::Owned(t)
        }
        _ => std::borrow::Cow::Borrowed(topo),
    })
}

/// Internal (`vm-guest`): inside the vm provider's VM, create the lab's
/// hosts as namespaces, with sshds on the management network.
fn vm_guest(file: &Path, ssh_dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let topo = vm::with_mgmt(&loaded.topology)?;
    netns::preflight(&topo)?;
    let dir = state::LabDir::new(&topo.lab);
    let _lock = dir.lock()?;
    let mut lab_state = dir.load_or_new(unix_now())?;
    let nsp = netns::Netns {
        topo: &topo,
        ssh_dir: ssh_dir.to_path_buf(),
    };
    let dir2 = state::LabDir::new(&topo.lab);
    nsp.ensure(&mut lab_state, &|s: &state::LabState| {
        dir2.save(s).map_err(|e| e.to_string())
    })?;
    dir.save(&lab_state)?;
    Ok(ExitCode::SUCCESS)
}

fn list() -> anyhow::Result<ExitCode> {
    let labs = state::list_labs()?;
    if labs.is_empty() {
        eprintln!("no labs recorded in {}", state::state_root().display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<8} {:<5} {:<12} topology",
        "lab", "provider", "hosts", "since (unix)"
    );
    // Every lab, the unreadable ones marked (and the reason on stderr).
    let mut unreadable = 0;
    for lab in labs {
        let dir = if lvslab::model::is_simple_name(&lab) {
            state::LabDir::new(&lab)
        } else {
            unreadable += 1;
            println!("{:<16} UNREADABLE (not a lab name)", lab.escape_debug());
            continue;
        };
        match dir.load() {
            Ok(Some(s)) => println!(
                "{:<16} {:<8} {:<5} {:<12} {}",
                lab,
                s.provider.as_deref().unwrap_or("ssh"),
                s.known_hosts().len(),
                s.since,
                s.topology.as_deref().unwrap_or("-").escape_debug()
            ),
            Ok(None) => println!("{lab:<16} -        -     -            (no record)"),
            Err(e) => {
                unreadable += 1;
                println!("{lab:<16} UNREADABLE");
                eprintln!("{lab}: {e}");
            }
        }
    }
    Ok(if unreadable == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn finish(outcome: &runner::RunOutcome, run: &RunArgs, title: &str, changed: &str) -> ExitCode {
    if run.output == Output::Json {
        let summary = serde_json::json!({
            "event": "summary",
            "recap": outcome.recap,
            "failed": outcome.failed,
            "failures": report::failures_json(outcome),
        });
        println!("{summary}");
    } else {
        print!("{}", report::recap_text(outcome, title, changed));
    }
    if outcome.failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Make the file's hosts as network namespaces (converging what an earlier
/// or interrupted run left); returns the hosts it removed.
fn ensure_netns(
    topo: &lvslab::model::Topology,
    dir: &state::LabDir,
    lab_state: &mut state::LabState,
) -> anyhow::Result<Vec<String>> {
    let nsp = netns::Netns {
        topo,
        ssh_dir: dir.path.join("ssh"),
    };
    Ok(nsp.ensure(lab_state, &|s: &state::LabState| dir.save(s).map_err(|e| e.to_string()))?)
}

/// Boot the lab's VM (or find it running) and have the lvslab inside it make
/// the file's hosts (and remove those the file no longer has), with a spinner.
async fn ensure_vm(
    topo: &lvslab::model::Topology,
    file: &Path,
    dir: &state::LabDir,
    lab_state: &mut state::LabState,
    run: &RunArgs,
) -> anyhow::Result<vm::VmRecord> {
    let text = lvslab::read_topology(file).map_err(|d| anyhow::anyhow!("{d}"))?;
    let spinner = report::Spinner::new();
    let booted = vm::ensure(
        topo,
        &text,
        &dir.path.join("vm"),
        lab_state,
        &|s: &state::LabState| dir.save(s).map_err(|e| e.to_string()),
        run.conn.vm_kernel().as_deref(),
        &spinner,
    )
    .await;
    spinner.finish();
    Ok(booted?)
}

async fn up(file: &Path, check: bool, no_verify: bool, run: &RunArgs) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let provider = choose_provider(&loaded.topology, run)?;
    let topo_p = provider_topology(&loaded.topology, provider)?;
    let topo = topo_p.as_ref();
    if provider == Chosen::Netns {
        netns::preflight(topo)?;
    }
    if provider == Chosen::Vm && !check {
        vm::preflight(topo, run.conn.vm_kernel().as_deref())?;
    }
    let mut plan = compile::compile(topo)?;
    for h in &run.limit {
        if topo.host_by_name(h).is_none() {
            anyhow::bail!("--limit: no host `{h}` in {}", file.display());
        }
    }
    limit_plan(&mut plan, &run.limit);
    let dir = state::LabDir::new(&topo.lab);
    let _lock = dir.lock()?;
    let mut lab_state = dir.load_or_new(unix_now())?;
    let topo_hosts: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
    // What the running lab has and the file no longer declares (before the
    // provider removes hosts: it decides from the same record).
    let removals = converge::removals(&topo_hosts, &plan, &lab_state, &run.limit);
    let mut hosts: Vec<String> = plan.host_names().into_iter().map(String::from).collect();
    for h in removals.changes.keys() {
        if !hosts.contains(h) {
            hosts.push(h.clone());
        }
    }
    let topo_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let reach = connect::reach(topo, &topo_dir);
    lab_state.topology = Some(
        std::fs::canonicalize(file)
            .unwrap_or_else(|_| file.to_path_buf())
            .display()
            .to_string(),
    );
    for h in &hosts {
        if let Some(r) = reach.get(h) {
            lab_state.reach.insert(h.clone(), r.clone());
        }
    }
    let mut shown = hosts.clone();
    shown.extend(removals.hosts.iter().cloned());
    let reporter = reporter(run, &shown);
    let mut removed_outcome = runner::RunOutcome::default();
    if provider == Chosen::Netns {
        if check && lab_state.infra.is_empty() {
            anyhow::bail!(
                "lab {} is not up: --check needs its hosts (run `lvslab up` first)",
                topo.lab
            );
        }
        if !check {
            let gone = ensure_netns(topo, &dir, &mut lab_state)?;
            removed_outcome = removed_outcome.merge(hosts_removed(&mut lab_state, &gone, "netns", &reporter));
            dir.save(&lab_state)?;
        }
    }
    if provider == Chosen::Vm {
        if check && !lab_state.vm.as_ref().is_some_and(vm::alive) {
            anyhow::bail!(
                "lab {} is not up: --check needs its VM (run `lvslab up` first)",
                topo.lab
            );
        }
        if !check {
            let rec = ensure_vm(topo, file, &dir, &mut lab_state, run).await?;
            // The lvslab inside the VM removed the hosts the file no longer has.
            removed_outcome = removed_outcome.merge(hosts_removed(&mut lab_state, &removals.hosts, "vm", &reporter));
            // `down --limit` reaches the hosts without the topology.
            lab_state.reach = vm::host_reach(topo, &rec);
            dir.save(&lab_state)?;
        }
    }
    let (conns, facts) = connections(topo, file, provider, run, &lab_state, &hosts, Some(&plan)).await?;
    let detected;
    let (topo, mut plan) = match with_detected_os(topo, provider, &facts)? {
        Some(t) => {
            detected = t;
            let mut plan = compile::compile(&detected)?;
            limit_plan(&mut plan, &run.limit);
            (&detected, plan)
        }
        None => (topo, plan),
    };
    let removals = converge::removals(&topo_hosts, &plan, &lab_state, &run.limit);
    let opts = runner::Options {
        check,
        forks: run.conn.forks,
    };
    if check {
        removed_outcome = would_remove(&removals, provider, &reporter);
    } else {
        let outcome = remove(&plan, &removals, provider, &conns, &mut lab_state, &dir, run, &reporter).await?;
        removed_outcome = removed_outcome.merge(outcome);
        if run.limit.is_empty() {
            lab_state.lab_hosts = topo_hosts.clone();
        }
    }
    // Each director's IPVS step deletes the services lvslab made and the file
    // no longer declares, and drains the real servers it removed.
    converge::with_previous_ipvs(&mut plan, &lab_state);
    // The same transports serve the verify that follows.
    let verify_conns: Vec<runner::HostConn> = conns
        .iter()
        .filter(|c| plan.host_names().contains(&c.host.as_str()))
        .map(|c| runner::HostConn {
            host: c.host.clone(),
            transport: c.transport.clone(),
        })
        .collect();
    let up_conns: Vec<runner::HostConn> = conns
        .into_iter()
        .filter(|c| plan.host_names().contains(&c.host.as_str()))
        .collect();
    let plan = Arc::new(plan);
    let save: runner::SaveFn = if check {
        Arc::new(|_: &state::LabState| Ok(()))
    } else {
        let dir = state::LabDir::new(&topo.lab);
        Arc::new(move |s: &state::LabState| dir.save(s).map_err(|e| e.to_string()))
    };
    let (outcome, lab_state) = runner::up(Arc::clone(&plan), up_conns, lab_state, save, opts, reporter).await;
    if !check {
        dir.save(&lab_state)?;
    }
    let outcome = removed_outcome.merge(outcome);
    let title = if check {
        "CHECK RECAP (nothing was changed)"
    } else {
        "RECAP"
    };
    let code = finish(&outcome, run, title, if check { "to change" } else { "changed" });
    if check || outcome.failed || no_verify || (topo.services.is_empty() && topo.checks.is_empty()) {
        return Ok(code);
    }
    if !run.limit.is_empty() {
        eprintln!("verify skipped: --limit provisioned only some hosts (run `lvslab verify` for the whole lab)");
        return Ok(code);
    }
    // Hosts without steps (a bare client, say) were not connected for provisioning.
    let missing: Vec<String> = topo
        .hosts
        .iter()
        .map(|h| h.name.clone())
        .filter(|h| !verify_conns.iter().any(|c| &c.host == h))
        .collect();
    let mut verify_conns = verify_conns;
    if !missing.is_empty() {
        verify_conns.extend(
            connections(topo, file, provider, run, &lab_state, &missing, None)
                .await?
                .0,
        );
    }
    let report = verify_with(topo, &plan, verify_conns, None, None, false).await;
    if run.output == Output::Json {
        println!("{}", serde_json::json!({ "event": "verify", "report": report }));
    } else {
        print!("\n{}", report::verify_text(&report));
    }
    Ok(if report.passed { code } else { ExitCode::from(1) })
}

/// Remove what the running lab has and the file no longer declares, except
/// netns and vm hosts (their provider removed them with their namespace):
/// hosts on machines of their own (SSH) get everything lvslab did put back,
/// and steps the file no longer has are reverted on the hosts it still has.
/// The record is updated and saved as each is confirmed.
#[allow(clippy::too_many_arguments)]
async fn remove(
    plan: &plan::Plan,
    removals: &converge::Removals,
    provider: Chosen,
    conns: &[runner::HostConn],
    lab_state: &mut state::LabState,
    dir: &state::LabDir,
    run: &RunArgs,
    reporter: &Arc<dyn runner::Reporter>,
) -> anyhow::Result<runner::RunOutcome> {
    let opts = runner::Options {
        check: false,
        forks: run.conn.forks,
    };
    let mut removed = runner::RunOutcome::default();
    if provider == Chosen::Ssh && !removals.hosts.is_empty() {
        let gone: Vec<String> = removals.hosts.clone();
        let conns = connect::connect_all(&gone, &lab_state.reach, run.conn.accept_new_host_keys, run.conn.forks).await;
        let mut sub = state::LabState::default();
        for h in &gone {
            if let Some(hs) = lab_state.hosts.get(h) {
                sub.hosts.insert(h.clone(), hs.clone());
            }
        }
        let (outcome, left) = runner::remove(Arc::new(plan.clone()), conns, sub, opts, Arc::clone(reporter)).await;
        for h in &gone {
            match left.hosts.get(h) {
                Some(hs) => {
                    lab_state.hosts.insert(h.clone(), hs.clone());
                }
                None => {
                    lab_state.hosts.remove(h);
                    lab_state.reach.remove(h);
                    lab_state.lab_hosts.retain(|x| x != h);
                }
            }
        }
        removed = removed.merge(outcome);
        dir.save(lab_state)?;
    }
    if !removals.changes.is_empty() {
        let mut sub = state::LabState::default();
        for (h, changes) in &removals.changes {
            sub.hosts.insert(
                h.clone(),
                state::HostState {
                    changes: changes.clone(),
                },
            );
        }
        let orphan_conns: Vec<runner::HostConn> = conns
            .iter()
            .filter(|c| removals.changes.contains_key(&c.host))
            .map(|c| runner::HostConn {
                host: c.host.clone(),
                transport: c.transport.clone(),
            })
            .collect();
        let (outcome, left) =
            runner::remove(Arc::new(plan.clone()), orphan_conns, sub, opts, Arc::clone(reporter)).await;
        // Forget what was removed; what could not be stays recorded (retried next time).
        for (h, changes) in &removals.changes {
            let kept = left.hosts.get(h).map(|hs| &hs.changes);
            if let Some(hs) = lab_state.hosts.get_mut(h) {
                hs.changes.retain(|c| {
                    !changes.iter().any(|o| o.id == c.id) || kept.is_some_and(|k| k.iter().any(|x| x.id == c.id))
                });
            }
        }
        lab_state.hosts.retain(|_, h| !h.changes.is_empty());
        removed = removed.merge(outcome);
        dir.save(lab_state)?;
    }
    Ok(removed)
}

/// Hosts a provider removed with their namespace (netns, or inside the VM):
/// what lvslab recorded of them goes with them. One `removed` line each.
fn hosts_removed(
    lab_state: &mut state::LabState,
    gone: &[String],
    how: &str,
    reporter: &Arc<dyn runner::Reporter>,
) -> runner::RunOutcome {
    let mut outcome = runner::RunOutcome::default();
    for h in gone {
        lab_state.hosts.remove(h);
        lab_state.reach.remove(h);
        lab_state.lab_hosts.retain(|x| x != h);
        let r = runner::StepResult {
            host: h.clone(),
            phase: "lab".into(),
            id: "host".into(),
            summary: format!("host {h} (no longer in the topology): its {how} namespace and everything in it"),
            status: runner::Status::Removed,
            details: Vec::new(),
            diff: None,
        };
        reporter.step(&r);
        outcome.results.push(r);
        outcome.recap.push(runner::HostRecap {
            host: h.clone(),
            changed: 1,
            ..runner::HostRecap::default()
        });
    }
    outcome
}

/// `up --check`: what `up` would remove, one `would remove` line each.
fn would_remove(
    removals: &converge::Removals,
    provider: Chosen,
    reporter: &Arc<dyn runner::Reporter>,
) -> runner::RunOutcome {
    let mut outcome = runner::RunOutcome::default();
    let mut add = |host: &str, phase: &str, id: &str, summary: String| {
        let r = runner::StepResult {
            host: host.to_string(),
            phase: phase.to_string(),
            id: id.to_string(),
            summary,
            status: runner::Status::WouldRemove,
            details: vec!["no longer in the topology".into()],
            diff: None,
        };
        reporter.step(&r);
        outcome.results.push(r);
        match outcome.recap.iter_mut().find(|c| c.host == host) {
            Some(c) => c.changed += 1,
            None => outcome.recap.push(runner::HostRecap {
                host: host.to_string(),
                changed: 1,
                ..runner::HostRecap::default()
            }),
        }
    };
    for h in &removals.hosts {
        let how = match provider {
            Chosen::Ssh => "everything lvslab changed on it, put back",
            _ => "its namespace and everything in it",
        };
        add(h, "lab", "host", format!("host {h}: {how}"));
    }
    for (h, changes) in &removals.changes {
        for c in changes {
            add(h, &c.phase, &c.id, c.summary.clone());
        }
    }
    // IPVS services no longer declared: the IPVS step says so (it deletes them).
    outcome
}

/// Keep only the `--limit` hosts' steps (all hosts when empty).
fn limit_plan(plan: &mut plan::Plan, limit: &[String]) {
    if !limit.is_empty() {
        for p in &mut plan.phases {
            p.hosts.retain(|h| limit.contains(&h.host));
        }
    }
}

/// Over SSH, hosts that declare no `os:` get the family their facts name;
/// when any did, the topology with their families (to compile again), else `None`.
fn with_detected_os(
    topo: &lvslab::model::Topology,
    provider: Chosen,
    facts: &Facts,
) -> anyhow::Result<Option<lvslab::model::Topology>> {
    if provider != Chosen::Ssh || topo.hosts.iter().all(|h| h.os.is_some()) {
        return Ok(None);
    }
    let mut t = topo.clone();
    let found = connect::apply_detected_os(&mut t, facts).map_err(|e| anyhow::anyhow!(e))?;
    if found.is_empty() {
        return Ok(None);
    }
    eprintln!("os detected: {}", found.join(", "));
    Ok(Some(t))
}

/// Each host's facts, as read by `connections`.
type Facts = std::collections::BTreeMap<String, lvslab::exec::transport::Facts>;

/// Transports to the lab's hosts for the chosen provider. For SSH with a plan,
/// each host's facts are read (once) and checked against it.
async fn connections(
    topo: &lvslab::model::Topology,
    file: &Path,
    provider: Chosen,
    run: &RunArgs,
    lab_state: &state::LabState,
    hosts: &[String],
    plan: Option<&plan::Plan>,
) -> anyhow::Result<(Vec<runner::HostConn>, Facts)> {
    let over_ssh = |reach: std::collections::BTreeMap<String, connect::Reach>, accept: bool| async move {
        let conns = connect::connect_all(hosts, &reach, accept, run.conn.forks).await;
        match plan {
            Some(p) => connect::check_facts(conns, p).await,
            None => (conns, Facts::new()),
        }
    };
    Ok(match provider {
        Chosen::Ssh => {
            let topo_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
            over_ssh(connect::reach(topo, &topo_dir), run.conn.accept_new_host_keys).await
        }
        Chosen::Netns => {
            let nsp = netns::Netns {
                topo,
                ssh_dir: state::LabDir::new(&topo.lab).path.join("ssh"),
            };
            match run.conn.via {
                Via::Ns => (nsp.connections(lab_state, hosts), Facts::new()),
                Via::Ssh => {
                    let reach = nsp.mgmt_reach().ok_or_else(|| {
                        anyhow::anyhow!("--via ssh needs a management network: add `mgmt: {{ cidr: 10.250.0.0/24 }}` to the topology")
                    })?;
                    over_ssh(reach, false).await
                }
            }
        }
        Chosen::Vm => {
            let rec = lab_state.vm.as_ref().filter(|r| vm::alive(r)).ok_or_else(|| {
                anyhow::anyhow!(
                    "lab {}'s VM is not running (run `lvslab up {}`)",
                    topo.lab,
                    file.display()
                )
            })?;
            over_ssh(vm::host_reach(topo, rec), false).await
        }
    })
}

struct VerifyArgs {
    requests: Option<u32>,
    format: VerifyFormat,
    junit: Option<PathBuf>,
    save_evidence: Option<PathBuf>,
    failover: bool,
}

/// Gather evidence over `conns` and decide.
async fn verify_with(
    topo: &lvslab::model::Topology,
    plan: &plan::Plan,
    conns: Vec<runner::HostConn>,
    requests: Option<u32>,
    save_evidence: Option<&Path>,
    failover: bool,
) -> lvslab::verify::Report {
    let mut ok = std::collections::BTreeMap::new();
    let mut failed = std::collections::BTreeMap::new();
    for c in conns {
        match c.transport {
            Ok(t) => {
                ok.insert(c.host, t);
            }
            Err(e) => {
                failed.insert(c.host, e);
            }
        }
    }
    let mut ev = lvslab::verify::gather(topo, &ok, failed, requests.unwrap_or(topo.verify.requests)).await;
    let secrets: Vec<&str> = plan.secrets.values().map(|s| s.expose()).collect();
    ev.mask(&secrets);
    if let Some(path) = save_evidence {
        match serde_json::to_string_pretty(&ev) {
            Ok(j) => {
                if let Err(e) = std::fs::write(path, j + "\n") {
                    eprintln!("warning: cannot write evidence to {}: {e}", path.display());
                }
            }
            Err(e) => eprintln!("warning: cannot serialize evidence: {e}"),
        }
    }
    let mut checks = lvslab::verify::decide(topo, plan, &ev);
    let mut seconds = ev.seconds;
    if failover {
        let start = std::time::Instant::now();
        checks.extend(lvslab::verify::failover::run(topo, plan, &ok).await);
        seconds += start.elapsed().as_secs_f64();
    }
    let mut report = lvslab::verify::Report::new(topo, &ev, checks);
    report.seconds = seconds;
    report
}

async fn verify_cmd(file: &Path, args: &VerifyArgs, run: &RunArgs) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let provider = choose_provider(&loaded.topology, run)?;
    let topo_p = provider_topology(&loaded.topology, provider)?;
    let topo = topo_p.as_ref();
    let plan = compile::compile(topo)?;
    let lab_state = state::LabDir::new(&topo.lab).load()?.unwrap_or_default();
    if provider == Chosen::Netns && lab_state.infra.is_empty() {
        anyhow::bail!("lab {} is not up (run `lvslab up {}` first)", topo.lab, file.display());
    }
    let hosts: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
    let (conns, _) = connections(topo, file, provider, run, &lab_state, &hosts, None).await?;
    let report = verify_with(
        topo,
        &plan,
        conns,
        args.requests,
        args.save_evidence.as_deref(),
        args.failover,
    )
    .await;
    if let Some(path) = &args.junit {
        std::fs::write(path, report::verify_junit(&report)).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    match args.format {
        VerifyFormat::Text => stdout.write_all(report::verify_text(&report).as_bytes())?,
        VerifyFormat::Json => stdout.write_all(report::verify_json(&report)?.as_bytes())?,
        VerifyFormat::Junit => {
            stdout.write_all(report::verify_junit(&report).as_bytes())?;
            eprintln!("{}", report::verify_summary(&report));
        }
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `drift`: observe, judge, and with `fix` repair and observe again.
async fn drift(file: &Path, format: Output, fix: bool, run: &RunArgs) -> anyhow::Result<ExitCode> {
    use lvslab::drift;
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let provider = choose_provider(&loaded.topology, run)?;
    let topo_p = provider_topology(&loaded.topology, provider)?;
    let topo = topo_p.as_ref();
    let plan = compile::compile(topo)?;
    let dir = state::LabDir::new(&topo.lab);
    let lab_state = dir.load()?.unwrap_or_default();
    if provider == Chosen::Netns && lab_state.infra.is_empty() {
        anyhow::bail!("lab {} is not up (run `lvslab up {}` first)", topo.lab, file.display());
    }
    let mut hosts = drift::hosts(topo, &plan);
    for h in &run.limit {
        if topo.host_by_name(h).is_none() {
            anyhow::bail!("--host: no host `{h}` in {}", file.display());
        }
    }
    if !run.limit.is_empty() {
        hosts.retain(|h| run.limit.contains(h));
    }
    let topo_hosts: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
    // Hosts with steps the file no longer has are looked at too; hosts the
    // file has and the running lab does not (added since) cannot be.
    for h in converge::removals(&topo_hosts, &plan, &lab_state, &run.limit)
        .changes
        .keys()
    {
        if !hosts.contains(h) {
            hosts.push(h.clone());
        }
    }
    let known = lab_state.known_hosts();
    let missing: Vec<String> = if known.is_empty() {
        Vec::new()
    } else {
        hosts.iter().filter(|h| !known.contains(h)).cloned().collect()
    };
    hosts.retain(|h| !missing.contains(h));
    let start = std::time::Instant::now();
    let (conns, facts) = connections(topo, file, provider, run, &lab_state, &hosts, Some(&plan)).await?;
    let detected;
    let (topo, mut plan) = match with_detected_os(topo, provider, &facts)? {
        Some(t) => {
            detected = t;
            (&detected, compile::compile(&detected)?)
        }
        None => (topo, plan),
    };
    // IPVS services lvslab made and the file no longer declares are drift too.
    converge::with_previous_ipvs(&mut plan, &lab_state);
    let removals = converge::removals(&topo_hosts, &plan, &lab_state, &run.limit);
    let copy = |conns: &[runner::HostConn]| -> Vec<runner::HostConn> {
        conns
            .iter()
            .map(|c| runner::HostConn {
                host: c.host.clone(),
                transport: c.transport.clone(),
            })
            .collect()
    };
    let observed = drift::observe(topo, &plan, copy(&conns)).await;
    let mut report = drift::decide(topo, &plan, &observed, start.elapsed().as_secs_f64());
    drift::add_removals(&mut report, &removals, &missing);
    let fixable = report.hosts.iter().flat_map(|h| &h.findings).any(|f| f.fixable());
    if fix && fixable {
        let before = report.clone();
        eprintln!("{}", before.summary());
        let mut failed = false;
        // 0. What the file no longer declares goes, as `up` removes it.
        if !removals.hosts.is_empty() || !removals.changes.is_empty() {
            let _lock = dir.lock()?;
            let mut lab_state = dir.load()?.unwrap_or_default();
            let shown: Vec<String> = removals.hosts.iter().chain(removals.changes.keys()).cloned().collect();
            let reporter = reporter(run, &shown);
            let mut outcome = runner::RunOutcome::default();
            match provider {
                Chosen::Netns if !removals.hosts.is_empty() => {
                    let gone = ensure_netns(topo, &dir, &mut lab_state)?;
                    outcome = outcome.merge(hosts_removed(&mut lab_state, &gone, "netns", &reporter));
                }
                Chosen::Vm if !removals.hosts.is_empty() => {
                    ensure_vm(topo, file, &dir, &mut lab_state, run).await?;
                    outcome = outcome.merge(hosts_removed(&mut lab_state, &removals.hosts, "vm", &reporter));
                }
                _ => {}
            }
            outcome =
                outcome.merge(remove(&plan, &removals, provider, &conns, &mut lab_state, &dir, run, &reporter).await?);
            if run.limit.is_empty() {
                lab_state.lab_hosts = topo_hosts.clone();
            }
            dir.save(&lab_state)?;
            failed |= outcome.failed;
            eprint!(
                "{}",
                report::recap_text(&outcome, "REMOVED (no longer in the topology)", "removed")
            );
        }
        // 1. The drifted steps, by the runner (it re-observes, applies only
        // what differs, records originals for `down`).
        let step_hosts: Vec<String> = before
            .hosts
            .iter()
            .filter(|h| h.findings.iter().any(|f| matches!(f.fix, drift::Fix::Step { .. })))
            .map(|h| h.host.clone())
            .collect();
        if !step_hosts.is_empty() {
            let _lock = dir.lock()?;
            let mut fix_plan = plan.clone();
            for p in &mut fix_plan.phases {
                p.hosts.retain(|h| step_hosts.contains(&h.host));
            }
            let fix_conns: Vec<runner::HostConn> = copy(&conns)
                .into_iter()
                .filter(|c| step_hosts.contains(&c.host))
                .collect();
            let lab_state = dir.load()?.unwrap_or_default();
            let save_dir = state::LabDir::new(&topo.lab);
            let save: runner::SaveFn = Arc::new(move |s: &state::LabState| save_dir.save(s).map_err(|e| e.to_string()));
            let opts = runner::Options {
                check: false,
                forks: run.conn.forks,
            };
            let (outcome, lab_state) = runner::up(
                Arc::new(fix_plan),
                fix_conns,
                lab_state,
                save,
                opts,
                reporter(run, &step_hosts),
            )
            .await;
            dir.save(&lab_state)?;
            failed = outcome.failed;
            eprint!("{}", report::recap_text(&outcome, "FIX RECAP", "changed"));
        }
        // 2. keepalived's own table entries, by keepalived's configuration,
        // once the steps (keepalived itself among them) are right.
        let observed = drift::observe(topo, &plan, copy(&conns)).await;
        let now = drift::decide(topo, &plan, &observed, 0.0);
        for h in &now.hosts {
            let args: Vec<String> = h
                .findings
                .iter()
                .filter_map(|f| match &f.fix {
                    drift::Fix::Ipvsadm { args } => Some(args.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            let Some(Ok(t)) = conns.iter().find(|c| c.host == h.host).map(|c| &c.transport) else {
                continue;
            };
            if args.is_empty() {
                continue;
            }
            let script: String = args
                .iter()
                .map(|a| lvslab::plan::ipvs::ipvsadm_command(a) + "\n")
                .collect();
            eprintln!("{}: ipvsadm {}", h.host, args.join("; ipvsadm "));
            match t.run(&format!("set -e\n{script}")).await {
                Ok(o) if o.status == 0 => {}
                Ok(o) => {
                    failed = true;
                    eprintln!(
                        "{}: ipvsadm failed (exit {}): {}{}",
                        h.host,
                        o.status,
                        o.stdout.trim(),
                        o.stderr.trim()
                    );
                }
                Err(e) => {
                    failed = true;
                    eprintln!("{}: {e}", h.host);
                }
            }
        }
        // 3. Look again: what is left is what --fix could not fix.
        let observed = drift::observe(topo, &plan, copy(&conns)).await;
        report = drift::decide(topo, &plan, &observed, start.elapsed().as_secs_f64());
        let now = dir.load()?.unwrap_or_default();
        drift::add_removals(
            &mut report,
            &converge::removals(&topo_hosts, &plan, &now, &run.limit),
            &missing,
        );
        report.fixed = drift::fixed(&before, &report);
        if failed {
            eprintln!("--fix: some repairs failed (above); what is left is reported below");
        }
    }
    let mut stdout = std::io::stdout().lock();
    match format {
        Output::Text => stdout.write_all(report::drift_text(&report).as_bytes())?,
        Output::Json => {
            stdout.write_all(report::drift_json(&report)?.as_bytes())?;
            eprintln!("{}", report.summary());
        }
    }
    Ok(ExitCode::from(report.exit_code()))
}

async fn down(lab: &str, run: &RunArgs) -> anyhow::Result<ExitCode> {
    // A topology file, or the name of a lab brought up earlier.
    let path = Path::new(lab);
    let (name, plan, reach) = if path.is_file() {
        let Some(loaded) = load_reported(path) else {
            return Ok(ExitCode::from(1));
        };
        let plan = compile::compile(&loaded.topology)?;
        let topo_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (
            loaded.topology.lab.clone(),
            Some(plan),
            Some(connect::reach(&loaded.topology, &topo_dir)),
        )
    } else if lvslab::model::is_simple_name(lab) {
        (lab.to_string(), None, None)
    } else {
        anyhow::bail!("{lab}: no such topology file, and not a lab name");
    };
    let dir = state::LabDir::new(&name);
    // A lab that is not up has nothing to take down: create nothing for it.
    let Some(_lock) = dir.lock_existing()? else {
        let known = state::list_labs().unwrap_or_default();
        let known = if known.is_empty() {
            "no lab is up here".to_string()
        } else {
            format!("labs up here: {}", known.join(", "))
        };
        eprintln!("lab {name} is not up here ({known}); nothing to do");
        return Ok(ExitCode::SUCCESS);
    };
    let Some(mut lab_state) = dir.load()? else {
        // A directory without a state (an `up` that stopped before its first record).
        dir.remove_all()?;
        eprintln!("lab {name} had no recorded changes; removed {}", dir.path.display());
        return Ok(ExitCode::SUCCESS);
    };
    if !run.limit.is_empty() {
        let known = lab_state.known_hosts();
        if let Some(h) = run.limit.iter().find(|h| !known.contains(h)) {
            anyhow::bail!("--limit {h}: lab {name} has no host {h} (hosts: {})", known.join(", "));
        }
        lab_state.hosts.retain(|h, _| run.limit.contains(h));
    }
    let is_netns = lab_state.provider.as_deref() == Some("netns");
    let is_vm = lab_state.provider.as_deref() == Some("vm");
    if is_vm && run.limit.is_empty() {
        // Everything the lab changed lives in the VM: stopping it reverts all.
        let done = match &lab_state.vm {
            Some(rec) => vm::stop(rec)?,
            None => Vec::new(),
        };
        dir.remove_all()?;
        println!("DOWN RECAP (vm)");
        for d in &done {
            println!("  {d}");
        }
        println!("  removed {}", dir.path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut reach_all = lab_state.reach.clone();
    if !is_vm {
        // The vm provider's hosts are reached through its VM, as recorded.
        reach_all.extend(reach.unwrap_or_default());
    }
    let hosts: Vec<String> = lab_state.hosts.keys().cloned().collect();
    let reporter = reporter(run, &hosts);
    let conns = if is_netns {
        netns::connections_from_state(&lab_state)
    } else {
        connect::connect_all(&hosts, &reach_all, run.conn.accept_new_host_keys, run.conn.forks).await
    };
    let plan = plan.unwrap_or_else(|| plan::Plan {
        schema: plan::SCHEMA,
        lab: name.clone(),
        mode: lvslab::model::Mode::Nat,
        notes: Vec::new(),
        removals: Vec::new(),
        phases: Vec::new(),
        secrets: Default::default(),
    });
    let opts = runner::Options {
        check: false,
        forks: run.conn.forks,
    };
    let infra = lab_state.infra.clone();
    let (mut outcome, left) = runner::down(Arc::new(plan), conns, lab_state, opts, reporter).await;
    // Hosts left out by --limit keep their record.
    let mut full = dir.load()?.unwrap_or_default();
    for h in &hosts {
        full.hosts.remove(h);
    }
    full.hosts.extend(left.hosts);
    if is_netns && run.limit.is_empty() {
        // Everything inside the namespaces goes with them; then the namespaces, links and directories.
        full.hosts.clear();
        full.infra = infra;
        let problems = netns::destroy(&mut full);
        let left = netns::leftovers(&full);
        for p in problems.iter().chain(left.iter()) {
            eprintln!("FAILED       {p}");
            outcome.results.push(runner::StepResult {
                host: name.clone(),
                phase: "infra".into(),
                id: "netns".into(),
                summary: "remove the lab's namespaces, links and directories".into(),
                status: runner::Status::Failed,
                details: vec![p.clone()],
                diff: None,
            });
        }
        if problems.is_empty() && left.is_empty() {
            full.infra.clear();
        } else {
            outcome.failed = true;
        }
    }
    if full.is_empty() {
        // Nothing of the lab is left: neither its record nor its lock, keys or files.
        dir.remove_all()?;
    } else {
        dir.save(&full)?;
    }
    Ok(finish(&outcome, run, "DOWN RECAP", "reverted"))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn exec(file: &Path, host: &str, command: &[String], provider: Option<ProviderArg>) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load_reported(file) else {
        return Ok(ExitCode::from(1));
    };
    let topo = &loaded.topology;
    if topo.host_by_name(host).is_none() {
        let names: Vec<&str> = topo.hosts.iter().map(|h| h.name.as_str()).collect();
        anyhow::bail!("no host `{host}` in {} (hosts: {})", file.display(), names.join(", "));
    }
    let run = RunArgs {
        limit: Vec::new(),
        conn: ConnArgs {
            forks: 1,
            provider,
            accept_new_host_keys: false,
            via: Via::Ns,
            vm_kernel: None,
        },
        output: Output::Text,
        verbose: false,
    };
    let lab_state = state::LabDir::new(&topo.lab).load()?.unwrap_or_default();
    let provider = choose_provider(topo, &run)?;
    match provider {
        Chosen::Netns => {
            let pid = netns::holder_pid(&lab_state, host)
                .ok_or_else(|| anyhow::anyhow!("host {host} of lab {} is not up (run `lvslab up` first)", topo.lab))?;
            let mut cmd = std::process::Command::new("nsenter");
            cmd.args(["-t", &pid.to_string(), "-n", "-m", "--"]);
            if command.is_empty() {
                cmd.arg(std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into()));
            } else {
                cmd.args(command);
            }
            let status = cmd.status()?;
            Ok(ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8))
        }
        Chosen::Ssh | Chosen::Vm => {
            if command.is_empty() {
                anyhow::bail!("interactive shells over SSH are not supported yet: give a command after `--`");
            }
            let reach = if provider == Chosen::Vm {
                let rec =
                    lab_state.vm.as_ref().filter(|r| vm::alive(r)).ok_or_else(|| {
                        anyhow::anyhow!("lab {}'s VM is not running (run `lvslab up` first)", topo.lab)
                    })?;
                vm::host_reach(&vm::with_mgmt(topo)?, rec)
            } else {
                let topo_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
                connect::reach(topo, &topo_dir)
            };
            let conns = connect::connect_all(&[host.to_string()], &reach, false, 1).await;
            let t = conns
                .into_iter()
                .next()
                .map(|c| c.transport)
                .unwrap_or_else(|| Err("no connection".into()))
                .map_err(|e| anyhow::anyhow!(e))?;
            let script: Vec<String> = command.iter().map(|a| lvslab::shell::quote(a)).collect();
            // Streamed as it comes: a command printing gigabytes never
            // gathers them in memory.
            use std::io::Write as _;
            let mut write_err = None;
            let status = t
                .run_streaming(&format!("{}\n", script.join(" ")), &mut |stream, data| {
                    let r = match stream {
                        lvslab::exec::transport::Stream::Stdout => std::io::stdout().write_all(data),
                        lvslab::exec::transport::Stream::Stderr => std::io::stderr().write_all(data),
                    };
                    if let Err(e) = r {
                        write_err.get_or_insert(e);
                    }
                })
                .await?;
            if let Some(e) = write_err {
                return Err(e.into());
            }
            Ok(ExitCode::from(status.clamp(0, 255) as u8))
        }
    }
}
