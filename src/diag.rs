//! Diagnostics: errors and warnings about a user's file, rendered like rustc's
//! (`file:line:col`, the offending line, a caret under the value and a `hint:`).
//!
//! Rendering is plain text with no colour so the exact messages can be pinned by
//! snapshot tests.

use std::fmt;
use std::sync::Arc;

/// A source file kept in memory so diagnostics can quote its lines.
#[derive(Debug)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// A position in a source file: line (1-based), column (0-based, in characters)
/// and the width of the marked text in characters (at least 1 when rendered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Span {
    pub line: u32,
    pub col: u32,
    pub len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub location: Option<(Arc<SourceFile>, Span)>,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            message: message.into(),
            location: None,
            hint: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(message)
        }
    }

    pub fn at(mut self, file: &Arc<SourceFile>, span: Span) -> Self {
        self.location = Some((Arc::clone(file), span));
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        writeln!(f, "{label}: {}", self.message)?;
        if let Some((file, span)) = &self.location {
            let line_no = span.line.to_string();
            let pad = " ".repeat(line_no.len());
            writeln!(f, "{pad}--> {}:{}:{}", file.path, span.line, span.col + 1)?;
            if let Some(text) = file.text.lines().nth(span.line.saturating_sub(1) as usize) {
                let text = mask_secrets(&text.replace('\t', " "));
                writeln!(f, "{pad} |")?;
                writeln!(f, "{line_no} | {text}")?;
                let width = text.chars().count().saturating_sub(span.col as usize);
                let len = (span.len as usize).clamp(1, width.max(1));
                writeln!(f, "{pad} | {}{}", " ".repeat(span.col as usize), "^".repeat(len))?;
            }
        }
        if let Some(hint) = &self.hint {
            let pad = match &self.location {
                Some((_, span)) => " ".repeat(span.line.to_string().len()),
                None => String::new(),
            };
            writeln!(f, "{pad} = hint: {hint}")?;
        }
        Ok(())
    }
}

/// Keys whose values are secrets: a quoted source line never shows them.
const SECRET_KEYS: [&str; 1] = ["auth_pass"];

/// Replace the value of any secret key on a source line with `*`, keeping the
/// line's length so carets still line up.
fn mask_secrets(line: &str) -> String {
    let mut out = line.to_string();
    for key in SECRET_KEYS {
        let mut from = 0;
        while let Some(pos) = out[from..].find(key).map(|p| p + from) {
            let after = pos + key.len();
            let rest = &out[after..];
            let Some(colon) = rest.find(':').filter(|c| rest[..*c].trim().is_empty()) else {
                from = after;
                continue;
            };
            let start = after + colon + 1;
            let end = out[start..].find([',', '}', '#']).map_or(out.len(), |e| start + e);
            let masked: String = out[start..end]
                .chars()
                .map(|c| if c.is_whitespace() { c } else { '*' })
                .collect();
            out.replace_range(start..end, &masked);
            from = end;
        }
    }
    out
}

/// Everything found wrong with one or more files, errors first.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.0.iter().filter(|d| d.is_error()).count()
    }

    pub fn warning_count(&self) -> usize {
        self.0.len() - self.error_count()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    /// Errors before warnings, then in file order (stable within equal positions).
    pub fn sorted(mut self) -> Self {
        self.0.sort_by_key(|d| {
            let pos = d.location.as_ref().map(|(_, s)| (s.line, s.col));
            (d.severity, pos)
        });
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_value() {
        let file = Arc::new(SourceFile {
            path: "t.yaml".into(),
            text: "a: 1\nweight: 70000\n".into(),
        });
        let d = Diagnostic::error("weight 70000 is out of range")
            .at(
                &file,
                Span {
                    line: 2,
                    col: 8,
                    len: 5,
                },
            )
            .hint("weights are 0..=65535");
        assert_eq!(
            d.to_string(),
            "error: weight 70000 is out of range\n --> t.yaml:2:9\n  |\n2 | weight: 70000\n  |         ^^^^^\n  = hint: weights are 0..=65535\n"
        );
    }

    #[test]
    fn never_quotes_a_secret() {
        assert_eq!(
            mask_secrets(r#"      auth_pass: "s3cr3t""#),
            r#"      auth_pass: ********"#
        );
        assert_eq!(mask_secrets("{ auth_pass: abc, x: 1 }"), "{ auth_pass: ***, x: 1 }");
        assert_eq!(mask_secrets("auth_pass_file: /x"), "auth_pass_file: /x");
    }

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(did_you_mean("adress", ["address", "role"]), Some("address"));
        assert_eq!(did_you_mean("zzz", ["address", "role"]), None);
    }
}
