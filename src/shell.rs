//! Shell quoting. Every value that reaches a shell command goes through
//! [`quote`] unless it is made only of characters that are never special.

/// Quote `s` for a POSIX shell: unchanged if it is made of safe characters,
/// otherwise wrapped in single quotes (with embedded `'` written as `'\''`).
pub fn quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | ':' | '=' | ',' | '+' | '@' | '%' | '-')
        });
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A here-document delimiter that does not occur as a line of `content`.
pub fn heredoc_delimiter(content: &str) -> String {
    let mut delim = "LVSLAB_EOF".to_string();
    let mut n = 0;
    while content.lines().any(|l| l == delim) {
        n += 1;
        delim = format!("LVSLAB_EOF_{n}");
    }
    delim
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote("/var/www/html"), "/var/www/html");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn delimiter_avoids_content() {
        assert_eq!(heredoc_delimiter("x\nLVSLAB_EOF\n"), "LVSLAB_EOF_1");
        assert_eq!(heredoc_delimiter("x"), "LVSLAB_EOF");
    }
}
