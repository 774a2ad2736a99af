//! The picture for Graphviz (`dot -Tsvg`): networks and hosts as nodes, an
//! edge per interface labelled with its name and address, VRRP pairs dashed.

use std::fmt::Write as _;

use super::Picture;

/// A DOT string literal.
fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn render(p: &Picture) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "graph {} {{", q(&p.title));
    let _ = writeln!(s, "  label={}; labelloc=t; fontname=\"Helvetica\";", q(&p.title));
    let _ = writeln!(
        s,
        "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=11];"
    );
    for n in &p.networks {
        let _ = writeln!(
            s,
            "  {} [label={}, shape=box, style=filled, fillcolor=\"#e5e7eb\"];",
            q(&format!("net:{}", n.name)),
            q(&format!("{} {}", n.name, n.cidr))
        );
    }
    for h in &p.hosts {
        let mut label = h.name.clone();
        for l in &h.lines {
            label.push('\n');
            label.push_str(l);
        }
        let _ = writeln!(
            s,
            "  {} [label={}, fillcolor=\"{}\"];",
            q(&h.name),
            q(&label),
            super::svg_fill(h.role)
        );
    }
    for h in &p.hosts {
        for (net, iface, addr) in &h.links {
            if let Some(n) = p.networks.get(*net) {
                let _ = writeln!(
                    s,
                    "  {} -- {} [label={}, fontsize=10];",
                    q(&h.name),
                    q(&format!("net:{}", n.name)),
                    q(&format!("{iface} {addr}"))
                );
            }
        }
    }
    for (name, members) in &p.vrrp {
        for pair in members.windows(2) {
            let _ = writeln!(
                s,
                "  {} -- {} [style=dashed, color=\"#b45309\", label={}, fontsize=10];",
                q(&p.hosts[pair[0]].name),
                q(&p.hosts[pair[1]].name),
                q(name)
            );
        }
    }
    if !p.legend.is_empty() {
        let _ = writeln!(
            s,
            "  legend [shape=note, style=filled, fillcolor=\"#ffffff\", label={}];",
            q(&p.legend.join("\n"))
        );
    }
    s.push_str("}\n");
    s
}
