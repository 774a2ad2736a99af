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
        && !s.split('/').any(|c| c == "..")
}

/// A path in one spelling (`/a//b/./c/` is `/a/b/c`): steps on one file are
/// compared, and recorded, by their paths.
pub fn normal_path(p: &str) -> String {
    if !p.starts_with('/') {
        return p.to_string();
    }
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_have_one_spelling() {
        for p in [
            "/etc/x.conf",
            "/etc//x.conf",
            "/etc/./x.conf",
            "//etc/x.conf/",
            "/etc/x.conf/.",
        ] {
            assert_eq!(normal_path(p), "/etc/x.conf", "{p}");
        }
        assert_eq!(normal_path("/"), "/");
        assert!(!is_safe_path("/etc/../x") && !is_safe_path("etc/x"));
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
