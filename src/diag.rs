//! Diagnostics: errors and warnings about a user's file, rendered like rustc's
//! (`file:line:col`, the offending line, a caret under the value and a `hint:`).
//!
//! Rendering is plain text with no colour so the exact messages can be pinned by
//! snapshot tests.

use std::fmt;
use std::sync::Arc;

/// An error and its causes on one line, outermost first (`a: b: c`), as
/// `{:#}` prints an `anyhow::Error`: the way an error with a `#[source]` is
/// turned into text anywhere it is not returned.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A source file kept in memory so diagnostics can quote its lines.
#[derive(Debug, Default)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
    /// Where the file's secret values are (and what they are), once parsed:
    /// a message never shows them, whatever the line or message.
    pub secrets: std::sync::OnceLock<Vec<SecretValue>>,
}

impl SourceFile {
    pub fn new(path: impl Into<String>, text: impl Into<String>) -> Self {
        SourceFile {
            path: path.into(),
            text: text.into(),
            secrets: std::sync::OnceLock::new(),
        }
    }
}

/// A secret value in a source file: its span (the first line of the value)
/// and the value itself, which may run over several lines.
#[derive(Debug, Clone)]
pub struct SecretValue {
    pub span: Span,
    pub value: String,
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
        let secrets = self.location.as_ref().and_then(|(file, _)| file.secrets.get());
        writeln!(f, "{label}: {}", mask_values(secrets, &self.message))?;
        if let Some((file, span)) = &self.location {
            let line_no = span.line.to_string();
            let pad = " ".repeat(line_no.len());
            writeln!(f, "{pad}--> {}:{}:{}", file.path, span.line, span.col + 1)?;
            if let Some(text) = file.text.lines().nth(span.line.saturating_sub(1) as usize) {
                // Cut to a window first: a megabyte-long line is never worked over whole.
                let (text, col, start) = window(&text.replace('\t', " "), span.col as usize);
                let text = mask_line(file, span.line, &text, start);
                writeln!(f, "{pad} |")?;
                writeln!(f, "{line_no} | {text}")?;
                let width = text.chars().count().saturating_sub(col);
                let len = (span.len as usize).clamp(1, width.max(1));
                writeln!(f, "{pad} | {}{}", " ".repeat(col), "^".repeat(len))?;
            }
        }
        if let Some(hint) = &self.hint {
            let pad = match &self.location {
                Some((_, span)) => " ".repeat(span.line.to_string().len()),
                None => String::new(),
            };
            writeln!(f, "{pad} = hint: {}", mask_values(secrets, hint))?;
        }
        Ok(())
    }
}

/// Keys whose values are secrets: no message ever shows them.
pub const SECRET_KEYS: [&str; 1] = ["auth_pass"];

/// The longest source line quoted whole; a longer one is shown as a window
/// around the caret.
const MAX_QUOTED: usize = 120;

/// The part of a long line around `col`, and the caret's column in it.
fn window(line: &str, col: usize) -> (String, usize, usize) {
    let n = line.chars().count();
    if n <= MAX_QUOTED {
        return (line.to_string(), col, 0);
    }
    let start = col.saturating_sub(MAX_QUOTED / 2).min(n.saturating_sub(MAX_QUOTED));
    let mut out: String = line.chars().skip(start).take(MAX_QUOTED).collect();
    let mut caret = col - start.min(col);
    if start > 0 {
        out.insert(0, '…');
        caret += 1;
    }
    if start + MAX_QUOTED < n {
        out.push('…');
    }
    // Where the window starts in the line, in characters (the `…` counts as one).
    (out, caret, start.saturating_sub(usize::from(start > 0)))
}

/// Replace every character of a secret in a source line with `*`: by the
/// secrets' spans (values on their own line, block scalars, quoted or `?`
/// keys), by value, and by key for a file whose secrets are not known yet (a
/// syntax error). The length stays, so carets still line up.
fn mask_line(file: &SourceFile, line_no: u32, line: &str, start: usize) -> String {
    let mut chars: Vec<char> = line.chars().collect();
    let star = |c: &mut char| {
        if !c.is_whitespace() {
            *c = '*';
        }
    };
    for s in file.secrets.get().into_iter().flatten() {
        let lines = s.value.lines().count().max(1) as u32;
        if line_no == s.span.line {
            chars
                .iter_mut()
                .skip((s.span.col as usize).saturating_sub(start))
                .for_each(star);
        } else if line_no > s.span.line && line_no <= s.span.line + lines {
            chars.iter_mut().for_each(star);
        }
    }
    // The value of a key like `auth_pass:` may stand on the next line, and a
    // file that did not parse has no known secrets yet: mask that line too.
    let previous = line_no
        .checked_sub(2)
        .and_then(|i| file.text.lines().nth(i as usize))
        .map(str::trim_end);
    if previous.is_some_and(|p| p.contains("pas") && p.ends_with(':')) {
        chars.iter_mut().for_each(star);
    }
    let masked: String = chars.into_iter().collect();
    mask_values(file.secrets.get(), &mask_secrets(&masked))
}

/// Replace any occurrence of a secret value (or of a line of it) in a text
/// with `*`.
fn mask_values(secrets: Option<&Vec<SecretValue>>, text: &str) -> String {
    let mut out = text.to_string();
    for s in secrets.into_iter().flatten() {
        for part in s.value.lines().map(str::trim).filter(|p| !p.is_empty()) {
            out = out.replace(part, &"*".repeat(part.chars().count()));
        }
    }
    out
}

/// Replace the value of any secret key on a source line with `*`, keeping the
/// line's length so carets still line up.
fn mask_secrets(line: &str) -> String {
    let mut out = line.to_string();
    for key in ["pas"] {
        let mut from = 0;
        while let Some(pos) = out[from..].find(key).map(|p| p + from) {
            let after = pos + key.len();
            let rest = &out[after..];
            // `pass`, and the rest of the key (`auth_pass`, `auth_passs`, `"auth_pass"`).
            let key_rest = |c: &usize| {
                rest[..*c]
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '"' | '\''))
            };
            let Some(colon) = rest.find(':').filter(key_rest) else {
                from = after;
                continue;
            };
            let start = after + colon + 1;
            let end = out.len();
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
        let file = Arc::new(SourceFile::new("t.yaml", "a: 1\nweight: 70000\n"));
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
        assert_eq!(mask_secrets("{ auth_pass: abc, x: 1 }"), "{ auth_pass: **** ** * *");
        // Any key with `pass` in it (a typo'd `auth_passs` too): over-masking is safe.
        assert_eq!(mask_secrets("auth_passs: abc"), "auth_passs: ***");
        assert_eq!(mask_secrets("role: client"), "role: client");
    }

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(did_you_mean("adress", ["address", "role"]), Some("address"));
        assert_eq!(did_you_mean("zzz", ["address", "role"]), None);
    }
}
