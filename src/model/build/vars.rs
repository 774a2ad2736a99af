//! What a host's own steps bring from outside the topology's text: the
//! variables its templates see (lab, groups, host) and the files its steps
//! name (`src:` and user templates, read relative to the topology file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;

use super::Cx;
use crate::diag::Span;
use crate::spec::{Name, TopologySpec};

/// The largest file a step's `src:` or `template:` may name.
pub const MAX_STEP_FILE_BYTES: u64 = 1 << 20;

/// Every group names hosts of the topology; every variable name is one a
/// template can write.
pub(super) fn check_groups_and_names(cx: &mut Cx, spec: &TopologySpec) {
    let mut all: Vec<&IndexMap<Name, serde_yaml::Value>> = vec![&spec.vars];
    for (g, group) in &spec.groups {
        for h in &group.hosts {
            if !spec.hosts.keys().any(|k| k.value == h.value) {
                let names: Vec<String> = spec.hosts.keys().map(|k| k.value.clone()).collect();
                cx.error(
                    h.span,
                    format!(
                        "group `{}` names host `{}`, which the topology does not have",
                        g.value, h.value
                    ),
                    crate::diag::did_you_mean(&h.value, names.iter().map(String::as_str)).map_or_else(
                        || "a group lists hosts of `hosts:`".into(),
                        |n| format!("did you mean `{n}`?"),
                    ),
                );
            }
        }
        all.push(&group.vars);
    }
    all.extend(spec.hosts.values().map(|h| &h.vars));
    for vars in all {
        for k in vars.keys() {
            let ok = k
                .value
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                cx.error(
                    k.span,
                    format!("variable name `{}` cannot be written in a template", k.value),
                    "letters, digits and `_`, not starting with a digit (e.g. `listen_port`)",
                );
            }
        }
    }
}

/// A host's variables: the lab's, then each group's that lists it (in file
/// order), then its own; a later one replaces an earlier one.
pub(super) fn host_vars(spec: &TopologySpec, host: &str) -> BTreeMap<String, serde_yaml::Value> {
    let mut out = BTreeMap::new();
    let mut put = |vars: &IndexMap<Name, serde_yaml::Value>| {
        for (k, v) in vars {
            out.insert(k.value.clone(), v.clone());
        }
    };
    put(&spec.vars);
    for group in spec.groups.values() {
        if group.hosts.iter().any(|h| h.value == host) {
            put(&group.vars);
        }
    }
    if let Some((_, h)) = spec.hosts.iter().find(|(k, _)| k.value == host) {
        put(&h.vars);
    }
    out
}

/// A file step's content as the topology gives it: `content:` and a `src:`
/// file (read now, next to the topology file) are taken as they are unless
/// the step says `render: true`; `template:` naming a file rather than one
/// of lvslab's templates is read now and rendered at compile time with the
/// host's variables. The step's mapping then carries the text: `content`
/// (with `raw: true` when it is not to be rendered), or `template_source`
/// with `template` kept as its name.
pub(super) fn read_step_files(cx: &mut Cx, span: Span, step: &mut serde_yaml::Mapping) {
    let Some(serde_yaml::Value::Mapping(params)) = step.get_mut("file") else {
        return;
    };
    // What lvslab itself puts in a file step's parameters below.
    for internal in ["raw", "template_source"] {
        if params.contains_key(internal) {
            cx.error(
                span,
                format!("unknown parameter `{internal}` in a file step"),
                "a file step takes `path`, one of `content`, `src` or `template`, and `mode`, `validate`, `render`, `lstrip_blocks`",
            );
            return;
        }
    }
    let render = match params.remove("render") {
        None => false,
        Some(serde_yaml::Value::Bool(b)) => b,
        Some(_) => {
            cx.error(
                span,
                "`render` is true or false",
                "`render: true` renders the content as a template",
            );
            return;
        }
    };
    if params.contains_key("content") && !render {
        params.insert("raw".into(), true.into());
    }
    let dir = topology_dir(&cx.file.path);
    if let Some(src) = params.remove("src") {
        let Some(src) = src.as_str() else {
            cx.error(
                span,
                "`src` is a path",
                "a file next to the topology, e.g. `src: files/motd`",
            );
            return;
        };
        if params.contains_key("content") || params.contains_key("template") {
            cx.error(
                span,
                "a file step has one of `content`, `src` or `template`",
                "keep the one that gives its content",
            );
            return;
        }
        if let Some(text) = read(cx, span, &dir, src, "src") {
            params.insert("content".into(), text.into());
            params.insert("raw".into(), (!render).into());
        }
        return;
    }
    let Some(name) = params.get("template").and_then(|t| t.as_str()).map(str::to_string) else {
        return;
    };
    // One of lvslab's own, unless the topology's directory has a file of
    // that name: the user's own file is what they mean.
    if crate::assets::TEMPLATES.iter().any(|(n, _)| *n == name) && !dir.join(&name).exists() {
        return;
    }
    if let Some(text) = read(cx, span, &dir, &name, "template") {
        params.insert("template_source".into(), text.into());
    }
}

fn topology_dir(path: &str) -> PathBuf {
    Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn read(cx: &mut Cx, span: Span, dir: &Path, rel: &str, what: &str) -> Option<String> {
    // Only what lies next to the topology: a topology from someone else
    // cannot send this machine's other files (keys, say) to its hosts.
    let inside = Path::new(rel)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
    if !inside {
        cx.error(
            span,
            format!("{what} `{rel}` is not inside the topology's directory"),
            "name a file below the topology file's directory, without `..` or a leading `/`",
        );
        return None;
    }
    let path = dir.join(rel);
    let shown = path.display().to_string();
    // A symbolic link on the way (the file or a directory) may point out of
    // the directory: where the path really leads must be inside too.
    if let (Ok(real), Ok(top)) = (path.canonicalize(), dir.canonicalize())
        && !real.starts_with(&top)
    {
        cx.error(
            span,
            format!(
                "{what} `{rel}` leads out of the topology's directory (to {})",
                real.display()
            ),
            "a symbolic link below the topology's directory must point inside it: copy the file there instead",
        );
        return None;
    }
    let meta = std::fs::metadata(&path);
    let text = match meta {
        Ok(m) if !m.is_file() => Err("not a regular file".to_string()),
        Ok(m) if m.len() > MAX_STEP_FILE_BYTES => Err(format!("larger than {MAX_STEP_FILE_BYTES} bytes")),
        Ok(_) => std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| String::from_utf8(b).map_err(|_| "not text (UTF-8)".to_string())),
        Err(e) => Err(e.to_string()),
    };
    match text {
        Ok(t) if t.contains('\0') => {
            cx.error(span, format!("{what} {shown}: has NUL bytes"), "steps write text files");
            None
        }
        Ok(t) => Some(t),
        Err(why) => {
            let hint = if what == "template" {
                let builtin: Vec<&str> = crate::assets::TEMPLATES.iter().map(|(n, _)| *n).collect();
                format!(
                    "a `template:` is a file next to the topology, or one of lvslab's: {}",
                    builtin.join(", ")
                )
            } else {
                "`src:` is relative to the topology file's directory".to_string()
            };
            cx.error(span, format!("{what} {shown}: {why}"), hint);
            None
        }
    }
}
