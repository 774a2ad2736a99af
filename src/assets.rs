//! Playbooks and templates, embedded at build time so the binary is self-contained.
//! The files under `playbooks/` and `templates/` are the source of truth.

/// Playbooks in the order their plays are applied (within a phase, a host's
/// steps keep this order).
pub const PLAYBOOKS: &[(&str, &str)] = &[
    ("playbooks/packages.yaml", include_str!("../playbooks/packages.yaml")),
    ("playbooks/common.yaml", include_str!("../playbooks/common.yaml")),
    ("playbooks/router.yaml", include_str!("../playbooks/router.yaml")),
    (
        "playbooks/real_server.yaml",
        include_str!("../playbooks/real_server.yaml"),
    ),
    ("playbooks/storage.yaml", include_str!("../playbooks/storage.yaml")),
    ("playbooks/director.yaml", include_str!("../playbooks/director.yaml")),
];

/// Templates by name, as file steps refer to them (`template: keepalived.conf.j2`).
pub const TEMPLATES: &[(&str, &str)] = &[
    ("keepalived.conf.j2", include_str!("../templates/keepalived.conf.j2")),
    ("exports.j2", include_str!("../templates/exports.j2")),
    ("rsyncd.conf.j2", include_str!("../templates/rsyncd.conf.j2")),
];

/// The default web page of a real server (the topology's `web.page` overrides it).
pub const PAGE_TEMPLATE: &str = include_str!("../templates/page.html.j2");
