//! Spec → model: parse, resolve, default and check everything, collecting every
//! problem (with its position and a hint) instead of stopping at the first.
//!
//! [`build`] runs the stages in order, one file per concern: [`networks`],
//! [`addresses`] (interfaces, VIP reservation, assignment), [`hosts`] (with
//! [`ssh`]), [`web`], [`ha`], [`services`] (with [`real_servers`] and
//! [`keepalived`]), [`nat`], [`storage`], [`verify`], [`checks`], [`mgmt`].
//! Diagnostics are sorted at the end, stably: the order of the stages is part
//! of the output for problems found at one position.

mod addresses;
mod checks;
mod ha;
mod hosts;
mod keepalived;
mod mgmt;
mod nat;
mod networks;
mod real_servers;
mod services;
mod ssh;
mod storage;
mod vars;
mod verify;
mod web;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::{Host, HostId, Mode, Network, Protocol, Role, Service, ServiceKey, Topology, is_simple_name};
use crate::diag::{Diagnostic, Diagnostics, SourceFile, Span, did_you_mean};
use crate::spec::{self, Spanned, TopologySpec};

struct Cx {
    file: Arc<SourceFile>,
    diags: Diagnostics,
}

impl Cx {
    fn error(&mut self, span: Span, msg: impl Into<String>, hint: impl Into<String>) {
        let d = Diagnostic::error(msg).at(&self.file, span).hint(hint);
        self.diags.push(d);
    }

    fn warn(&mut self, span: Span, msg: impl Into<String>, hint: impl Into<String>) {
        let d = Diagnostic::warning(msg).at(&self.file, span).hint(hint);
        self.diags.push(d);
    }

    fn ipv4(&mut self, s: &Spanned<String>, what: &str) -> Option<Ipv4Addr> {
        match s.value.trim().parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                let hint = if s.value.contains(':') {
                    "IPv6 labs are not supported yet; use an IPv4 address".to_string()
                } else if s.value.contains('/') {
                    format!(
                        "write the address without a prefix length: {}",
                        s.value.split('/').next().unwrap_or("")
                    )
                } else {
                    "write an IPv4 address such as 192.168.4.10".to_string()
                };
                self.error(s.span, format!("`{}` is not a valid {what}", s.value), hint);
                None
            }
        }
    }

    /// An optional number checked against its range; `default` when absent or out of range.
    fn range_or(
        &mut self,
        v: Option<&Spanned<i64>>,
        (lo, hi): (i64, i64),
        what: &str,
        hint: &str,
        default: i64,
    ) -> i64 {
        v.and_then(|v| self.range(v, lo, hi, what, hint)).unwrap_or(default)
    }

    fn range(&mut self, v: &Spanned<i64>, lo: i64, hi: i64, what: &str, hint: &str) -> Option<i64> {
        if (lo..=hi).contains(&v.value) {
            Some(v.value)
        } else {
            self.error(v.span, format!("{what} {} is out of range {lo}..={hi}", v.value), hint);
            None
        }
    }

    fn name(&mut self, n: &spec::Name, what: &str) {
        if !is_simple_name(&n.value) {
            self.error(
                n.span,
                format!("{what} name `{}` is not usable", n.value),
                "use lowercase letters, digits and `-`, starting with a letter, at most 32 characters (it becomes part of namespace and file names)",
            );
        }
    }
}

fn lookup<'a, T>(cx: &mut Cx, names: &'a BTreeMap<String, T>, r: &spec::Name, what: &str) -> Option<&'a T> {
    match names.get(&r.value) {
        Some(t) => Some(t),
        None => {
            let hint = match did_you_mean(&r.value, names.keys().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "known {what}s: {}",
                    names.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            cx.error(r.span, format!("unknown {what} `{}`", r.value), hint);
            None
        }
    }
}

/// What the stages after host assembly resolve names against: the hosts
/// (by name and by id) and the networks.
#[derive(Clone, Copy)]
struct Known<'a> {
    host_ids: &'a BTreeMap<String, HostId>,
    hosts: &'a [Host],
    networks: &'a [Network],
}

/// A service as far as its real servers and keepalived settings are checked
/// against it.
struct ServiceHead<'a> {
    known: Known<'a>,
    name: &'a str,
    mode: Mode,
    /// The service's port (None for a firewall mark).
    port: Option<u16>,
    key: ServiceKey,
    protocol: Protocol,
    directors: &'a [HostId],
    /// True if keepalived manages the service's directors.
    keepalived: bool,
}

/// Build the validated model. Returns the model only when there are no errors;
/// warnings are returned either way.
pub fn build(spec: &TopologySpec, file: &Arc<SourceFile>) -> (Option<Topology>, Diagnostics) {
    let mut cx = Cx {
        file: Arc::clone(file),
        diags: Diagnostics::default(),
    };
    let topo = build_inner(spec, &mut cx);
    let diags = std::mem::take(&mut cx.diags).sorted();
    if diags.has_errors() {
        (None, diags)
    } else {
        (Some(topo), diags)
    }
}

/// The stages in order (each one's diagnostics come after the previous one's).
fn build_inner(spec: &TopologySpec, cx: &mut Cx) -> Topology {
    cx.name(&spec.lab, "lab");
    let nets = networks::build_networks(cx, spec);
    let host_ids: BTreeMap<String, HostId> = spec
        .hosts
        .keys()
        .enumerate()
        .map(|(i, name)| (name.value.clone(), HostId(i)))
        .collect();
    // Addresses: declared ones, then VIPs reserved, then the rest assigned.
    let mut addressing = addresses::declared(cx, spec, &nets);
    let vips = addresses::reserve_vips(cx, spec);
    addresses::assign(cx, spec, &nets.list, &mut addressing, &vips.reserved);
    vars::check_groups_and_names(cx, spec);
    let mut hosts = hosts::build_hosts(cx, spec, &nets.list, addressing.pending);
    let web = web::build_web(cx, spec);
    let known = Known {
        host_ids: &host_ids,
        hosts: &hosts,
        networks: &nets.list,
    };
    // HA before services: it decides who owns the IPVS services.
    let ha = spec.ha.as_ref().map(|h| ha::build_ha(cx, h, &vips.vrrp, known));
    let services = services::build_services(cx, spec, vips.service, known, ha.as_ref());
    nat::check_vip_collisions(cx, spec, &hosts, &services);
    nat::route_replies_through_directors(cx, spec, &mut hosts, &nets.list, &services, ha.as_ref());
    web::render_pages(cx, spec, &mut hosts);
    let known = Known {
        host_ids: &host_ids,
        hosts: &hosts,
        networks: &nets.list,
    };
    let storage = spec
        .storage
        .as_ref()
        .and_then(|st| storage::build_storage(cx, st, known, &services));
    let verify = verify::build_verify(cx, spec, known, &services);
    let checks = checks::build_checks(cx, &spec.checks, &host_ids);
    let mgmt = spec
        .mgmt
        .as_ref()
        .and_then(|m| mgmt::build_mgmt(cx, m, &nets.list, hosts.len()));
    required_roles(cx, spec, &hosts, &services);
    Topology {
        lab: spec.lab.value.clone(),
        description: spec.description.clone(),
        mode: spec.mode.as_ref().map(|m| m.value),
        provider: spec.provider.as_ref().map(|p| p.value),
        networks: nets.list,
        hosts,
        services,
        web,
        ha,
        storage,
        verify,
        mgmt,
        checks,
        source: Arc::clone(&cx.file),
    }
}

/// Roles that must exist.
fn required_roles(cx: &mut Cx, spec: &TopologySpec, hosts: &[Host], services: &[Service]) {
    if spec.mode.is_none() && (!spec.services.is_empty() || spec.ha.is_some()) {
        cx.error(
            spec.lab.span,
            "services are declared but the lab has no `mode:`",
            "add `mode: nat`, `mode: dr` or `mode: tun`",
        );
    }
    if !services.is_empty() && !hosts.iter().any(|h| h.role == Role::Director) {
        cx.error(
            spec.lab.span,
            "services are declared but no host has `role: director`",
            "add a director host",
        );
    }
}

#[cfg(test)]
mod tests {
    //! Helpers for the stages' tests: a topology from YAML text.

    /// The model of `text`, or its diagnostics as text.
    pub(super) fn load(text: &str) -> Result<crate::Loaded, String> {
        crate::load_str("t.yaml", text.to_string()).map_err(|d| d.to_string())
    }

    /// The diagnostics of `text` (errors and warnings) as text.
    pub(super) fn diagnostics(text: &str) -> String {
        match load(text) {
            Ok(l) => l.warnings.to_string(),
            Err(d) => d,
        }
    }
}
