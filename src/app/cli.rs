//! The command line's shape: verbs, flags and their help. Parsing only; the
//! verbs live in their own modules of [`crate::app`].

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use crate::spec::Provider;

#[derive(Parser)]
#[command(name = "lvslab", version, about = "Linux Virtual Server labs from one YAML file")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        conn: ConnArgs,
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
        run: DownArgs,
    },
    /// The labs recorded on this machine: name, provider, hosts, since, topology file.
    List {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        format: Output,
    },
    /// Shell completions for lvslab's verbs and flags, on standard output.
    ///
    /// For bash: `lvslab completions bash > /etc/bash_completion.d/lvslab`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The manual page (roff), on standard output: `lvslab man | man -l -`.
    Man,
    /// Draw the topology: networks, hosts with their roles and addresses,
    /// VIPs, services with mode and scheduler, VRRP pairs, storage.
    ///
    /// SVG needs no other program; DOT is for Graphviz, Mermaid for Markdown.
    Graph {
        /// Topology file, or the name of a lab that is up here.
        file: String,
        #[arg(long, value_enum, default_value_t = GraphFormat::Svg)]
        format: GraphFormat,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run a command on a lab host and exit with its status; without a command,
    /// an interactive shell (netns hosts).
    Exec {
        file: PathBuf,
        host: String,
        /// The command (after `--`).
        #[arg(last = true)]
        command: Vec<String>,
        #[arg(long, value_enum)]
        provider: Option<Provider>,
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
pub struct RunArgs {
    /// Only these hosts (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub limit: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Progress and results as text (default) or JSON lines on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Also list steps that were already in the desired state.
    #[arg(short, long)]
    pub verbose: bool,
    /// vm provider: the kernel to boot, a `linux-image-*.deb` or an unpacked
    /// one (a directory with boot/vmlinuz-* and lib/modules/*); default: the
    /// distribution's, fetched with apt-get download. Also $LVSLAB_VM_KERNEL.
    #[arg(long, value_name = "FILE|DIR")]
    pub vm_kernel: Option<PathBuf>,
}

/// `down`'s options: the lab's record says where it runs and how its hosts
/// are reached.
#[derive(clap::Args)]
pub struct DownArgs {
    /// Only these hosts (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub limit: Vec<String>,
    /// How many hosts to work on at once.
    #[arg(long, default_value_t = 50)]
    pub forks: usize,
    /// Record unknown SSH host keys in known_hosts (a changed key is still refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Progress and results as text (default) or JSON lines on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Also list steps that were already in the desired state.
    #[arg(short, long)]
    pub verbose: bool,
}

/// How to reach the lab's hosts.
#[derive(clap::Args)]
pub struct ConnArgs {
    /// How many hosts to work on at once.
    #[arg(long, default_value_t = 50)]
    pub forks: usize,
    /// Where the lab runs; overrides the topology's `provider`.
    #[arg(long, value_enum)]
    pub provider: Option<Provider>,
    /// Record unknown SSH host keys in known_hosts (a changed key is still refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// netns labs: reach the hosts by entering their namespaces (default) or
    /// over SSH on the topology's management network.
    #[arg(long, value_enum, default_value_t = Via::Ns)]
    pub via: Via,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    Ns,
    Ssh,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyFormat {
    /// A table with a bar chart of each service's distribution.
    Text,
    /// The report as JSON (schema lvslab.verify/v1).
    Json,
    /// JUnit XML, for CI systems.
    Junit,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// By phase and host, each step with its why and commands.
    Text,
    /// The plan as JSON (schema lvslab.plan/v1, see docs/plan-schema.md).
    Json,
    /// A POSIX shell script per host.
    Sh,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// A self-contained SVG picture.
    Svg,
    /// Graphviz (`dot -Tpng`).
    Dot,
    /// A Mermaid flowchart (GitHub and GitLab render it in Markdown).
    Mermaid,
}
