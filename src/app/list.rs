//! `list`: the labs recorded on this machine.

use std::process::ExitCode;

use crate::state;

pub fn list() -> anyhow::Result<ExitCode> {
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
        let dir = if crate::model::is_simple_name(&lab) {
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
                s.provider.map_or("ssh", |p| p.as_str()),
                s.known_hosts().len(),
                s.since,
                s.topology.as_deref().unwrap_or("-").escape_debug()
            ),
            Ok(None) => println!("{lab:<16} -        -     -            (no record)"),
            Err(e) => {
                unreadable += 1;
                println!("{lab:<16} UNREADABLE");
                eprintln!("{lab}: {}", crate::diag::chain(&e));
            }
        }
    }
    Ok(if unreadable == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
