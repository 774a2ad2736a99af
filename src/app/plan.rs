//! `plan`: what `up` would do, as text, JSON or a shell script per host.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::cli::Format;
use super::load_reported;
use crate::exec::converge;
use crate::report::count;
use crate::{compile, report, state};

pub fn plan(file: &Path, host: Option<&str>, format: Format, out_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
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
pub fn write_script(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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
