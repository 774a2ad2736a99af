//! The picture as a Mermaid flowchart (renders in GitHub and GitLab
//! Markdown): networks as subroutine nodes, hosts as boxes, an edge per
//! interface, VRRP pairs dotted.

use std::fmt::Write as _;

use super::Picture;

/// A Mermaid node id: letters, digits and `_` only.
fn id(prefix: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{prefix}_{clean}")
}

/// Text inside `"…"`: quotes and markup characters as entities.
fn text(s: &str) -> String {
    s.replace('&', "#amp;")
        .replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

pub fn render(p: &Picture) -> String {
    let mut s = String::from("flowchart TB\n");
    let _ = writeln!(s, "  %% {}", text(&p.title));
    for n in &p.networks {
        let _ = writeln!(s, "  {}[[\"{} {}\"]]", id("net", &n.name), text(&n.name), text(&n.cidr));
    }
    for h in &p.hosts {
        let mut label = format!("<b>{}</b>", text(&h.name));
        for l in &h.lines {
            label.push_str("<br/>");
            label.push_str(&text(l));
        }
        let _ = writeln!(s, "  {}[\"{label}\"]", id("host", &h.name));
    }
    for h in &p.hosts {
        for (net, iface, addr) in &h.links {
            if let Some(n) = p.networks.get(*net) {
                let _ = writeln!(
                    s,
                    "  {} ---|\"{} {}\"| {}",
                    id("host", &h.name),
                    text(iface),
                    text(addr),
                    id("net", &n.name)
                );
            }
        }
    }
    for (name, members) in &p.vrrp {
        for pair in members.windows(2) {
            let _ = writeln!(
                s,
                "  {} -.-|\"{}\"| {}",
                id("host", &p.hosts[pair[0]].name),
                text(name),
                id("host", &p.hosts[pair[1]].name)
            );
        }
    }
    for (role, colour) in [
        ("client", "#dbeafe"),
        ("director", "#fde68a"),
        ("real_server", "#bbf7d0"),
        ("storage", "#e9d5ff"),
        ("router", "#e0e7ff"),
    ] {
        let _ = writeln!(s, "  classDef {role} fill:{colour},stroke:#374151");
    }
    for h in &p.hosts {
        let _ = writeln!(s, "  class {} {}", id("host", &h.name), h.role.as_str());
    }
    s
}
