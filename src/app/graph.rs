//! `graph`: the topology as a picture (SVG, DOT or Mermaid).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::cli::GraphFormat;
use super::load_reported;
use crate::graph;
use crate::state;

/// Draw the topology of `what`: a topology file, or the name of a lab
/// brought up on this machine (its recorded topology file).
pub fn graph(what: &str, format: GraphFormat, output: Option<&Path>) -> anyhow::Result<ExitCode> {
    let file = topology_file(what)?;
    let Some(loaded) = load_reported(&file) else {
        return Ok(ExitCode::from(1));
    };
    let picture = graph::picture(&loaded.topology);
    let text = match format {
        GraphFormat::Svg => graph::svg::render(&picture),
        GraphFormat::Dot => graph::dot::render(&picture),
        GraphFormat::Mermaid => graph::mermaid::render(&picture),
    };
    match output {
        Some(path) => std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn topology_file(what: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(what);
    if path.is_file() || !crate::model::is_simple_name(what) {
        return Ok(path.to_path_buf());
    }
    let record = state::LabDir::new(what).load()?;
    match record.and_then(|s| s.topology) {
        Some(t) => Ok(PathBuf::from(t)),
        None => anyhow::bail!("{what}: no such topology file, and no lab of that name is up here"),
    }
}
