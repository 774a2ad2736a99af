//! The `lvslab` command line. Parsing arguments, calling the pipeline and
//! choosing exit codes happen here; nothing below this file prints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use lvslab::report::count;
use lvslab::{compile, report};

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
            eprintln!("error: {e:#}");
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
    let loaded = match lvslab::load(file) {
        Ok(l) => l,
        Err(diags) => {
            eprintln!("{diags}");
            return Ok(ExitCode::from(1));
        }
    };
    if !loaded.warnings.0.is_empty() {
        eprintln!("{}", loaded.warnings);
    }
    let mut plan = compile::compile(&loaded.topology)?;
    if let Some(h) = host {
        if loaded.topology.host_by_name(h).is_none() {
            let names: Vec<&str> = loaded.topology.hosts.iter().map(|h| h.name.as_str()).collect();
            anyhow::bail!("no host `{h}` in {} (hosts: {})", file.display(), names.join(", "));
        }
        plan = plan.only_host(h);
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
                std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
                set_executable(&path)?;
                eprintln!("wrote {}", path.display());
            }
        }
        (_, Some(_)) => anyhow::bail!("--out-dir is only for --format sh"),
    }
    Ok(ExitCode::SUCCESS)
}

fn set_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perm = std::fs::metadata(path)?.permissions();
    perm.set_mode(0o755);
    std::fs::set_permissions(path, perm)?;
    Ok(())
}
