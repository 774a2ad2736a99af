//! The picture as a self-contained SVG: boxes, bars and lines with their
//! labels as text, a generic sans-serif font, no scripts, no external
//! references. Sizes are computed from the text (an average glyph width), so
//! long names widen their box instead of overflowing it.

use std::fmt::Write as _;

use super::{HostBox, Picture};
use crate::model::Role;

const MARGIN: i32 = 24;
const GAP: i32 = 28;
const LINE_H: i32 = 16;
const GLYPH_W: f64 = 7.2;
const ROW_GAP: i32 = 56;
const NET_H: i32 = 26;
const TITLE_H: i32 = 34;
/// Room under a row for a VRRP bracket and its label.
const VRRP_H: i32 = 34;

/// A role's colour (all formats use the same).
pub fn fill(r: Role) -> &'static str {
    match r {
        Role::Client => "#dbeafe",
        Role::Director => "#fde68a",
        Role::RealServer => "#bbf7d0",
        Role::Storage => "#e9d5ff",
        Role::Router => "#e0e7ff",
        Role::Host => "#f3f4f6",
    }
}

fn text_w(s: &str) -> i32 {
    (s.chars().count() as f64 * GLYPH_W).ceil() as i32
}

/// XML text: `&`, `<`, `>`, quotes escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn box_w(h: &HostBox) -> i32 {
    let widest = std::iter::once(h.name.as_str())
        .chain(h.lines.iter().map(String::as_str))
        .map(text_w)
        .max()
        .unwrap_or(0);
    (widest + 20).max(130)
}

fn box_h(h: &HostBox) -> i32 {
    (h.lines.len() as i32 + 1) * LINE_H + 16
}

/// Where everything goes: each row's top, each box's x.
struct Layout {
    width: i32,
    row_y: std::collections::BTreeMap<i32, i32>,
    box_x: Vec<i32>,
    height: i32,
}

fn layout(p: &Picture) -> Layout {
    let rows = p.rows();
    let row_width = |r: &Vec<&HostBox>| r.iter().map(|h| box_w(h)).sum::<i32>() + GAP * (r.len() as i32 - 1).max(0);
    let widest_row = rows.values().map(row_width).max().unwrap_or(0);
    let widest_net = p
        .networks
        .iter()
        .map(|n| text_w(&format!("{} {}", n.name, n.cidr)) + 40)
        .max()
        .unwrap_or(0);
    let legend_w = p.legend.iter().map(|l| text_w(l)).max().unwrap_or(0);
    // Room on the right for the last box's link label.
    let label_room = text_w("eth10 255.255.255.255");
    let width = (widest_row + label_room)
        .max(widest_net)
        .max(legend_w)
        .max(text_w(&p.title) * 4 / 3)
        .max(360)
        + 2 * MARGIN;
    // Rows top to bottom: networks and host rows interleaved.
    let first = rows.keys().next().copied().unwrap_or(0).min(0);
    let last = rows
        .keys()
        .copied()
        .chain(p.networks.iter().map(|n| n.row))
        .max()
        .unwrap_or(0);
    let mut row_y = std::collections::BTreeMap::new();
    let mut y = MARGIN + TITLE_H;
    for r in first..=last {
        row_y.insert(r, y);
        let h = if r % 2 == 0 {
            if p.networks.iter().any(|n| n.row == r) {
                NET_H
            } else {
                0
            }
        } else {
            let boxes = rows
                .get(&r)
                .map_or(0, |hs| hs.iter().map(|h| box_h(h)).max().unwrap_or(0));
            let vrrp = p.vrrp.iter().any(|(_, m)| m.iter().any(|i| p.hosts[*i].row == r));
            boxes + if vrrp { VRRP_H } else { 0 }
        };
        if h > 0 {
            y += h + ROW_GAP;
        }
    }
    let mut box_x = vec![0; p.hosts.len()];
    for hs in rows.values() {
        let mut x = (width - label_room - row_width(hs)) / 2;
        for h in hs {
            if let Some(i) = p.hosts.iter().position(|b| std::ptr::eq(b, *h)) {
                box_x[i] = x;
            }
            x += box_w(h) + GAP;
        }
    }
    let height = y - ROW_GAP + 20 + p.legend.len() as i32 * LINE_H + MARGIN;
    Layout {
        width,
        row_y,
        box_x,
        height,
    }
}

/// The picture as an SVG document.
pub fn render(p: &Picture) -> String {
    let l = layout(p);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#,
        w = l.width,
        h = l.height
    );
    let _ = writeln!(s, "<title>{}</title>", esc(&p.title));
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{}" height="{}" fill="white"/>"#,
        l.width, l.height
    );
    let _ = writeln!(
        s,
        r#"<text x="{MARGIN}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        MARGIN + 14,
        esc(&p.title)
    );
    links(&mut s, p, &l);
    for n in &p.networks {
        let y = l.row_y.get(&n.row).copied().unwrap_or(0);
        let _ = writeln!(
            s,
            r##"<rect x="{MARGIN}" y="{y}" width="{}" height="{NET_H}" rx="4" fill="#e5e7eb" stroke="#6b7280"/>"##,
            l.width - 2 * MARGIN
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-weight="bold">{} {}</text>"#,
            MARGIN + 10,
            y + 17,
            esc(&n.name),
            esc(&n.cidr)
        );
    }
    for (i, h) in p.hosts.iter().enumerate() {
        let (x, y) = (l.box_x[i], l.row_y.get(&h.row).copied().unwrap_or(0));
        let _ = writeln!(
            s,
            r##"<rect x="{x}" y="{y}" width="{}" height="{}" rx="6" fill="{}" stroke="#374151"/>"##,
            box_w(h),
            box_h(h),
            fill(h.role)
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-weight="bold">{}</text>"#,
            x + 10,
            y + 20,
            esc(&h.name)
        );
        for (k, line) in h.lines.iter().enumerate() {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}">{}</text>"#,
                x + 10,
                y + 20 + LINE_H * (k as i32 + 1),
                esc(line)
            );
        }
    }
    vrrp(&mut s, p, &l);
    let mut y = l.height - MARGIN - p.legend.len() as i32 * LINE_H + 12;
    for line in &p.legend {
        let _ = writeln!(s, r#"<text x="{MARGIN}" y="{y}">{}</text>"#, esc(line));
        y += LINE_H;
    }
    s.push_str("</svg>\n");
    s
}

/// Each interface: a line from its box's edge to its network's bar, labelled
/// with its name and address (drawn first, under the boxes).
fn links(s: &mut String, p: &Picture, l: &Layout) {
    let net_y = |row: i32| l.row_y.get(&row).copied().unwrap_or(0) + NET_H / 2;
    // Links first, under the boxes: from the box's edge to its network's bar.
    for (i, h) in p.hosts.iter().enumerate() {
        let top = l.row_y.get(&h.row).copied().unwrap_or(0);
        let (w, bh) = (box_w(h), box_h(h));
        let n = h.links.len() as i32;
        for (k, (net, iface, addr)) in h.links.iter().enumerate() {
            let Some(bar) = p.networks.get(*net) else { continue };
            let x = l.box_x[i] + w * (k as i32 + 1) / (n + 1);
            let ny = net_y(bar.row);
            let from = if ny < top { top } else { top + bh };
            let _ = writeln!(
                s,
                r##"<line x1="{x}" y1="{from}" x2="{x}" y2="{ny}" stroke="#374151" stroke-width="1.5"/>"##
            );
            let ly = (from + ny) / 2 + 4;
            let label = format!("{iface} {addr}");
            let _ = writeln!(
                s,
                r##"<text x="{}" y="{ly}" fill="#1f2937">{}</text>"##,
                x + 4,
                esc(&label)
            );
        }
    }
}

fn vrrp(s: &mut String, p: &Picture, l: &Layout) {
    // A VRRP instance: a dashed line across the gap between its members
    // (side by side in their row), named under the row.
    for (name, members) in &p.vrrp {
        let mut boxes: Vec<(i32, i32, i32, i32)> = members
            .iter()
            .map(|&i| {
                let h = &p.hosts[i];
                let y = l.row_y.get(&h.row).copied().unwrap_or(0);
                (l.box_x[i], l.box_x[i] + box_w(h), y, y + box_h(h))
            })
            .collect();
        boxes.sort();
        for pair in boxes.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let y = (a.2.max(b.2) + a.3.min(b.3)) / 2;
            let _ = writeln!(
                s,
                r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#b45309" stroke-width="3" stroke-dasharray="5 3"/>"##,
                a.1, b.0
            );
        }
        let (Some(first), Some(last)) = (boxes.first(), boxes.last()) else {
            continue;
        };
        let bottom = boxes.iter().map(|b| b.3).max().unwrap_or(0);
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" fill="#b45309" font-size="11" text-anchor="middle">{}</text>"##,
            (first.0 + last.1) / 2,
            bottom + 16,
            esc(name)
        );
    }
}
