//! `validate`: check topology files, every problem at file:line:col.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::compile;
use crate::report::count;

pub fn validate(files: &[PathBuf]) -> ExitCode {
    let mut bad = 0;
    for file in files {
        match crate::load(file) {
            Ok(loaded) => {
                if !loaded.warnings.0.is_empty() {
                    eprintln!("{}", loaded.warnings);
                }
                // What `plan` would refuse, `validate` refuses: the file's
                // own steps and templates are compiled too.
                if let Err(e) = compile::compile(&loaded.topology) {
                    bad += 1;
                    let n = match e {
                        compile::CompileError::User(d) => {
                            eprintln!("{d}");
                            1
                        }
                        compile::CompileError::Users(ds) => {
                            eprintln!("{ds}");
                            ds.error_count()
                        }
                        other => {
                            eprintln!("error: {other}");
                            1
                        }
                    };
                    eprintln!("{}: invalid: {}", file.display(), count(n, "error"));
                    continue;
                }
                let t = &loaded.topology;
                let warnings = match loaded.warnings.warning_count() {
                    0 => String::new(),
                    n => format!(", {}", count(n, "warning")),
                };
                println!(
                    "{}: ok: lab {}, {}, {}, {}, {}{warnings}",
                    file.display(),
                    t.lab,
                    t.mode.map_or("no LVS mode".into(), |m| format!("mode {}", m.as_str())),
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
