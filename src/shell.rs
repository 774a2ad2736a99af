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

/// A here-document delimiter that does not occur anywhere in `content`, not
/// even as part of a line, and not once NUL bytes are dropped (as sh, dash and
/// busybox drop them): no line the shell reads can end the document early.
pub fn heredoc_delimiter(content: &str) -> String {
    let seen = content.replace('\0', "");
    if !seen.contains("LVSLAB_EOF") {
        return "LVSLAB_EOF".to_string();
    }
    // The numbers already written after `LVSLAB_EOF_` (one pass): the
    // smallest other number's delimiter is no substring of the content, as
    // no number written there starts with it... unless it is a prefix of a
    // longer one, so take one more digit than the longest number seen.
    let mut longest = 0;
    for (i, _) in seen.match_indices("LVSLAB_EOF_") {
        let digits = seen[i + "LVSLAB_EOF_".len()..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        longest = longest.max(digits);
    }
    let mut n: u64 = 1;
    let mut delim = "LVSLAB_EOF_1".to_string();
    while seen.contains(&delim) {
        // At most a few rounds: a number one digit longer than any written.
        n = 10u64.saturating_pow(longest as u32).max(n + 1);
        longest += 1;
        delim = format!("LVSLAB_EOF_{n}");
    }
    delim
}

/// Whether a here-document carries `content` exactly: text without NUL bytes
/// (which shells drop). Other content is written through `base64 -d`.
pub fn heredoc_safe(content: &str) -> bool {
    !content.contains('\0')
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
        // What the shell sees: NUL bytes dropped, so `LVSLAB_EOF\0` is the delimiter line.
        assert_eq!(heredoc_delimiter("x\nLVSLAB_EOF\0\ntouch /pwned\n"), "LVSLAB_EOF_1");
        assert_eq!(heredoc_delimiter("LVSLAB\0_EOF"), "LVSLAB_EOF_1");
        // Not even part of a line.
        assert_eq!(heredoc_delimiter("a LVSLAB_EOF b LVSLAB_EOF_1"), "LVSLAB_EOF_10");
        let many: String = (0..20_000).map(|i| format!("LVSLAB_EOF_{i}\n")).collect();
        assert_eq!(heredoc_delimiter(&many), "LVSLAB_EOF_100000");
        assert!(!heredoc_safe("a\0b") && heredoc_safe("a\tb\r\n"));
    }
}
