//! A host's SSH target: its own `ssh` settings over the defaults' over
//! lvslab's (root on the first interface's address, port 22).

use std::net::Ipv4Addr;

use super::Cx;
use crate::model::SshTarget;
use crate::spec::{self, Spanned};

pub(super) fn ssh_target(
    cx: &mut Cx,
    name: &str,
    defaults: Option<&spec::SshSpec>,
    own: Option<&spec::SshSpec>,
    addr: Option<Ipv4Addr>,
) -> SshTarget {
    let pick = |f: &dyn Fn(&spec::SshSpec) -> Option<Spanned<String>>| own.and_then(f).or_else(|| defaults.and_then(f));
    let port = own
        .and_then(|s| s.port.clone())
        .or_else(|| defaults.and_then(|s| s.port.clone()));
    let port = port
        .and_then(|p| cx.range(&p, 1, 65535, "SSH port", "TCP ports are 1..=65535"))
        .unwrap_or(22) as u16;
    let timeout = own
        .and_then(|s| s.connect_timeout.clone())
        .or_else(|| defaults.and_then(|s| s.connect_timeout.clone()));
    let timeout = timeout
        .and_then(|t| cx.range(&t, 1, 600, "connect timeout", "seconds"))
        .unwrap_or(10) as u32;
    if let Some(env) = pick(&|s| s.passphrase_env.clone())
        && (!env.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || env.value.is_empty())
    {
        cx.error(
            env.span,
            format!("`{}` is not an environment variable name", env.value),
            "name the variable that holds the passphrase, e.g. LAB_KEY_PASSPHRASE (never the passphrase itself)",
        );
    }
    SshTarget {
        host: pick(&|s| s.host.clone())
            .map(|s| s.value)
            .unwrap_or_else(|| addr.map_or_else(|| name.to_string(), |a| a.to_string())),
        user: pick(&|s| s.user.clone()).map_or_else(|| "root".into(), |s| s.value),
        port,
        key: pick(&|s| s.key.clone()).map(|s| s.value),
        passphrase_env: pick(&|s| s.passphrase_env.clone()).map(|s| s.value),
        known_hosts: pick(&|s| s.known_hosts.clone()).map(|s| s.value),
        jump: pick(&|s| s.jump.clone()).map(|s| s.value),
        become_root: own
            .and_then(|s| s.become_root)
            .or_else(|| defaults.and_then(|s| s.become_root))
            .unwrap_or(false),
        connect_timeout_secs: timeout,
    }
}
