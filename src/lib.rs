//! lvslab: Linux Virtual Server labs from one YAML file.
//!
//! The pipeline, with one-way data flow (see ARCHITECTURE.md):
//! [`spec`] (the file as written, with positions) → [`model`] (validated
//! topology) → [`compile`] (playbooks + templates → [`plan::Plan`], pure) →
//! [`report`] (plan rendered as text, JSON or shell scripts).

pub mod app;
pub mod assets;
pub mod compile;
pub mod diag;
pub mod drift;
pub mod exec;
pub mod graph;
pub mod iproute;
pub mod local;
pub mod model;
pub mod plan;
pub mod process;
pub mod provider;
pub mod report;
pub mod shell;
pub mod spec;
pub mod state;
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
    let text = read_topology(path).map_err(|d| Diagnostics(vec![d]))?;
    load_str(&path.display().to_string(), text)
}

/// The largest topology file lvslab reads (real ones are a few kilobytes).
pub const MAX_TOPOLOGY_BYTES: u64 = 1 << 20;

/// A topology file's text: a regular file (never a FIFO or a device, which
/// could block or never end), at most [`MAX_TOPOLOGY_BYTES`], UTF-8 without
/// NUL characters (a byte-order mark is dropped).
pub fn read_topology(path: &Path) -> Result<String, Diagnostic> {
    use std::io::Read;
    let cannot = |why: String| {
        Diagnostic::error(format!("cannot read {}: {why}", path.display()))
            .hint("give the path of a topology file, e.g. topologies/nat.yaml")
    };
    let meta = std::fs::metadata(path).map_err(|e| cannot(e.to_string()))?;
    if !meta.is_file() {
        return Err(cannot("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOPOLOGY_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| cannot(e.to_string()))?;
    if bytes.len() as u64 > MAX_TOPOLOGY_BYTES {
        return Err(cannot(format!(
            "larger than {} KiB; a topology is a few kilobytes",
            MAX_TOPOLOGY_BYTES / 1024
        )));
    }
    let name = path.display().to_string();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let bad_at = |offset: usize, what: &str, hint: &str| {
        let before = String::from_utf8_lossy(&bytes[..offset]);
        let line = before.matches('\n').count() as u32 + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32;
        let file = Arc::new(SourceFile::new(
            name.clone(),
            String::from_utf8_lossy(bytes).replace('\0', " "),
        ));
        Diagnostic::error(what.to_string())
            .at(&file, diag::Span { line, col, len: 1 })
            .hint(hint.to_string())
    };
    if let Some(i) = bytes.iter().position(|b| *b == 0) {
        return Err(bad_at(
            i,
            "the file contains a NUL byte; a topology is text",
            "remove the NUL byte (was the file saved by a binary tool or truncated?)",
        ));
    }
    String::from_utf8(bytes.to_vec()).map_err(|e| {
        bad_at(
            e.utf8_error().valid_up_to(),
            "the file is not UTF-8 text",
            "save the file as UTF-8",
        )
    })
}

/// Like [`load`], for text already in memory; `name` is used in messages.
pub fn load_str(name: &str, text: String) -> Result<Loaded, Diagnostics> {
    let file = Arc::new(SourceFile::new(name, text));
    let (spec, mut diags) = spec::parse(&file);
    let Some(spec) = spec else {
        return Err(capped(Diagnostics(diags).sorted()));
    };
    let (model, model_diags) = model::build(&spec, &file);
    diags.extend(model_diags.0);
    let diags = capped(Diagnostics(diags).sorted());
    match model {
        Some(topology) if !diags.has_errors() => Ok(Loaded {
            topology,
            warnings: diags,
        }),
        _ => Err(diags),
    }
}

/// The most problems reported for one file: the first ones (in file order,
/// errors first) and a line saying how many more there are. A file with
/// thousands of mistakes is reported in bounded time.
pub const MAX_DIAGNOSTICS: usize = 50;

fn capped(mut d: Diagnostics) -> Diagnostics {
    if d.0.len() > MAX_DIAGNOSTICS {
        let more = d.0.len() - MAX_DIAGNOSTICS;
        let errors = d.0[MAX_DIAGNOSTICS..].iter().filter(|x| x.is_error()).count();
        d.0.truncate(MAX_DIAGNOSTICS);
        let summary = format!("… and {more} more problems ({errors} of them errors) not shown");
        d.0.push(if errors > 0 {
            Diagnostic::error(summary).hint("fix the ones above first")
        } else {
            Diagnostic::warning(summary)
        });
    }
    d
}
