//! The `lvslab` command line: parse, dispatch to the verb's module in
//! [`lvslab::app`], map the result to an exit status. Nothing else.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use lvslab::app::cli::{Cli, Command};
use lvslab::app::{self, verify::VerifyArgs};

fn main() -> ExitCode {
    quiet_broken_pipe();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // Output written to a reader that went away (a bare I/O error: a
        // transport's broken pipe comes wrapped in what was being done).
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::from(141)
        }
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

/// A reader that went away (`lvslab plan x | head -1`, stderr too) ends
/// the program as a broken pipe ends other tools: quietly, status 141
/// (128 + SIGPIPE), not with a panic's message and 101. Rust ignores
/// SIGPIPE, so `println!` panics instead; every other panic is reported.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate { files } => Ok(app::validate::validate(&files)),
        Command::Plan {
            file,
            host,
            format,
            out_dir,
        } => app::plan::plan(&file, host.as_deref(), format, out_dir.as_deref()),
        Command::Up {
            file,
            check,
            no_verify,
            run,
        } => runtime()?.block_on(app::up::up(&file, check, no_verify, &run)),
        Command::Verify {
            file,
            requests,
            format,
            junit,
            save_evidence,
            failover,
            conn,
        } => runtime()?.block_on(app::verify::verify_cmd(
            &file,
            &VerifyArgs {
                requests,
                format,
                junit,
                save_evidence,
                failover,
            },
            &conn,
        )),
        Command::Drift {
            file,
            host,
            format,
            fix,
            conn,
        } => {
            let run = app::cli::RunArgs {
                limit: host,
                conn,
                output: app::cli::Output::Text,
                verbose: false,
                vm_kernel: None,
            };
            runtime()?.block_on(app::drift::drift(&file, format, fix, &run))
        }
        Command::Down { lab, all, run } => runtime()?.block_on(async {
            if all {
                let mut code = ExitCode::SUCCESS;
                for lab in lvslab::state::list_labs()? {
                    if app::down::down(&lab, &run).await? != ExitCode::SUCCESS {
                        code = ExitCode::from(1);
                    }
                }
                Ok(code)
            } else {
                app::down::down(lab.as_deref().unwrap_or_default(), &run).await
            }
        }),
        Command::List { format } => app::list::list(format),
        Command::Graph { file, format, output } => app::graph::graph(&file, format, output.as_deref()),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "lvslab", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec {
            file,
            host,
            command,
            provider,
        } => runtime()?.block_on(app::exec::exec(&file, &host, &command, provider)),
        Command::VmGuest { file, ssh_dir } => app::lab::vm_guest(&file, &ssh_dir),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
