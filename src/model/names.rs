//! Grammars for names and paths that end up in shell commands, interface names
//! and file names. A value that passes these needs no quoting, but the
//! compiler quotes anyway (defence in depth).

/// Lab, host and network names: lowercase letters, digits and `-`, starting
/// with a letter, at most 32 characters. Usable in namespace and file names.
pub fn is_simple_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && s.len() <= 32
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-'))
        && !s.ends_with('-')
}

/// Linux interface names: 1 to 15 bytes, no `/`, `:`, whitespace, not `.` or `..`.
pub fn is_interface_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Absolute paths made of safe characters, without `..` components.
pub fn is_safe_path(s: &str) -> bool {
    s.starts_with('/')
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+'))
        && !s.split('/').any(|c| c == ".." || c == ".")
        // One spelling per path (`/a//b` is `/a/b`): steps on one file are
        // compared by their paths.
        && !s.trim_end_matches('/').contains("//")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_have_one_spelling() {
        assert!(is_safe_path("/etc/x.conf") && is_safe_path("/srv/d/") && is_safe_path("/"));
        for p in ["/etc//x.conf", "/etc/./x.conf", "/etc/x/.", "/etc/../x", "etc/x"] {
            assert!(!is_safe_path(p), "{p}");
        }
    }

    #[test]
    fn grammars() {
        assert!(is_simple_name("web1"));
        assert!(!is_simple_name("Web1"));
        assert!(!is_simple_name("1web"));
        assert!(!is_simple_name("web-"));
        assert!(!is_simple_name("a$(x)"));
        assert!(is_interface_name("eth0"));
        assert!(is_interface_name("tunl0"));
        assert!(!is_interface_name("averyveryverylongname"));
        assert!(!is_interface_name("eth 0"));
        assert!(is_safe_path("/var/www/html"));
        assert!(!is_safe_path("var/www"));
        assert!(!is_safe_path("/var/../etc"));
        assert!(!is_safe_path("/tmp/$(x)"));
    }
}
