//! The `lvslab` command line: parse, dispatch to the verb's module in
//! [`lvslab::app`], map the result to an exit status. Nothing else.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use lvslab::app::cli::{Cli, Command};
use lvslab::app::{self, verify::VerifyArgs};

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
