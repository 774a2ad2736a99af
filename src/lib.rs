//! lvslab: Linux Virtual Server labs from one YAML file.
//!
//! The pipeline, with one-way data flow (see ARCHITECTURE.md):
//! [`spec`] (the file as written, with positions) → [`model`] (validated
//! topology) → [`compile`] (playbooks + templates → [`plan::Plan`], pure) →
//! [`report`] (plan rendered as text, JSON or shell scripts).

pub mod assets;
pub mod compile;
pub mod diag;
pub mod drift;
pub mod exec;
pub mod iproute;
pub mod local;
pub mod model;
pub mod plan;
pub mod process;
pub mod provider;
pub mod report;
pub mod shell;
pub mod spec;
pub mod verify;

use std::path::Path;
use std::sync::Arc;

use diag::{Diagnostic, Diagnostics, SourceFile};

/// A topology file read and validated, with its warnings.
pub struct Loaded {
    pub topology: model::Topology,
    pub warnings: Diagnostics,
}

/// Read, parse and validate one topology file. On failure, every problem found.
pub fn load(path: &Path) -> Result<Loaded, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![
            Diagnostic::error(format!("cannot read {}: {e}", path.display()))
                .hint("give the path of a topology file, e.g. topologies/nat.yaml"),
        ])
    })?;
    load_str(&path.display().to_string(), text)
}

/// Like [`load`], for text already in memory; `name` is used in messages.
pub fn load_str(name: &str, text: String) -> Result<Loaded, Diagnostics> {
    let file = Arc::new(SourceFile {
        path: name.to_string(),
        text,
    });
    let (spec, mut diags) = spec::parse(&file);
    let Some(spec) = spec else {
        return Err(Diagnostics(diags).sorted());
    };
    let (model, model_diags) = model::build(&spec, &file);
    diags.extend(model_diags.0);
    let diags = Diagnostics(diags).sorted();
    match model {
        Some(topology) if !diags.has_errors() => Ok(Loaded {
            topology,
            warnings: diags,
        }),
        _ => Err(diags),
    }
}
