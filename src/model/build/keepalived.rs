//! A service's keepalived-only settings: health check, sorry server,
//! delay_loop, quorum, inhibit_on_failure (each an error without keepalived).

use std::net::Ipv4Addr;

use super::{Cx, ServiceHead, lookup};
use crate::model::{CheckKind, HealthCheck, Mode, Protocol, ServiceKey};
use crate::spec::{self, Spanned};

/// The settings, defaults filled in.
pub(super) struct Keepalived {
    pub(super) health_check: Option<HealthCheck>,
    pub(super) sorry_server: Option<(Ipv4Addr, u16)>,
    pub(super) delay_loop: u32,
    pub(super) quorum: Option<u32>,
    pub(super) inhibit_on_failure: bool,
}

pub(super) fn settings(cx: &mut Cx, head: &ServiceHead<'_>, s: &Spanned<spec::ServiceSpec>) -> Keepalived {
    let udp = match head.key {
        ServiceKey::Udp(_) => true,
        ServiceKey::Fwmark(_) => head.protocol == Protocol::Udp,
        ServiceKey::Tcp(_) => false,
    };
    let health_check = s.health_check.as_ref().map(|h| health_check(cx, head, udp, h));
    let sorry_server = s.sorry_server.as_ref().and_then(|ss| sorry_server(cx, head, ss));
    let inhibit = s.inhibit_on_failure.as_ref().map(|i| (i.span, i.value));
    for (field, span) in [
        ("delay_loop", s.delay_loop.as_ref().map(|v| v.span)),
        ("quorum", s.quorum.as_ref().map(|v| v.span)),
        (
            "inhibit_on_failure",
            inhibit.filter(|(_, on)| *on).map(|(span, _)| span),
        ),
    ] {
        if let (Some(span), false) = (span, head.keepalived) {
            cx.error(
                span,
                format!("`{field}` is a keepalived setting, and this service has no keepalived"),
                "add an `ha:` section, or remove it",
            );
        }
    }
    let delay_loop = cx.range_or(
        s.delay_loop.as_ref(),
        (1, 3600),
        "delay_loop",
        "seconds between health checks",
        6,
    ) as u32;
    let quorum = s
        .quorum
        .as_ref()
        .and_then(|q| cx.range(q, 1, 65535, "quorum", "minimum total weight of healthy real servers"))
        .map(|q| q as u32);
    Keepalived {
        health_check,
        sorry_server,
        delay_loop,
        quorum,
        inhibit_on_failure: inhibit.is_some_and(|(_, on)| on),
    }
}

fn health_check(cx: &mut Cx, head: &ServiceHead<'_>, udp: bool, h: &Spanned<spec::HealthCheckSpec>) -> HealthCheck {
    if !head.keepalived {
        cx.error(
            h.span,
            "health checks are run by keepalived, and this service has none",
            "add an `ha:` section whose members are this service's directors",
        );
    }
    if udp && matches!(h.kind.value, CheckKind::Http | CheckKind::Tcp) {
        cx.error(
            h.kind.span,
            format!(
                "a `{}` health check connects over TCP, and service {} is UDP: keepalived would find every real server down",
                match h.kind.value {
                    CheckKind::Http => "http",
                    _ => "tcp",
                },
                head.name
            ),
            "use `type: misc` with a script that asks the UDP service, or leave the health check out",
        );
    }
    build_check(cx, h)
}

/// The sorry server's address and port; None after an error.
fn sorry_server(cx: &mut Cx, head: &ServiceHead<'_>, ss: &Spanned<spec::SorryServerSpec>) -> Option<(Ipv4Addr, u16)> {
    if !head.keepalived {
        cx.error(
            ss.span,
            "a sorry server is keepalived's, and this service has none",
            "add an `ha:` section whose members are this service's directors",
        );
    }
    let addr = match (&ss.host, &ss.address) {
        (Some(h), None) => {
            let id = *lookup(cx, head.known.host_ids, h, "host")?;
            head.known.hosts[id.0].primary_address()?
        }
        (None, Some(a)) => cx.ipv4(a, "address")?,
        _ => {
            cx.error(
                ss.span,
                "a sorry server needs exactly one of `host` or `address`",
                "e.g. `sorry_server: { host: storage, port: 80 }`",
            );
            return None;
        }
    };
    let given = ss.port.as_ref().and_then(|p| {
        cx.range(p, 1, 65535, "port", "ports are 1..=65535")
            .map(|v| (v as u16, p.span))
    });
    // The sorry server is forwarded to like a real server: a firewall
    // mark's or an all-ports service's packets keep their port (0 in
    // IPVS), and outside NAT no port can be mapped.
    let p = match (head.key, given) {
        (ServiceKey::Fwmark(_), _) | (ServiceKey::Tcp(0) | ServiceKey::Udp(0), _) => 0,
        (ServiceKey::Tcp(sp) | ServiceKey::Udp(sp), Some((gp, span))) if head.mode != Mode::Nat && gp != sp => {
            cx.error(
                span,
                format!(
                    "sorry server port {gp} differs from service port {sp} in {} mode",
                    head.mode.as_str().to_uppercase()
                ),
                "the sorry server gets the packet unchanged, so it answers on the service's port: remove `port` (only NAT can map ports)",
            );
            sp
        }
        (ServiceKey::Tcp(_) | ServiceKey::Udp(_), Some((gp, _))) => gp,
        (ServiceKey::Tcp(sp) | ServiceKey::Udp(sp), None) => sp,
    };
    Some((addr, p))
}

/// The URL path of an HTTP check (`/` when not given); an error for any
/// HTTP-only field of another kind of check.
fn http_path(cx: &mut Cx, h: &Spanned<spec::HealthCheckSpec>) -> String {
    let kind = h.kind.value;
    let path = match &h.path {
        Some(p) if !p.value.starts_with('/') || p.value.chars().any(|c| c.is_whitespace() || c == '"') => {
            cx.error(
                p.span,
                format!("`{}` is not a usable URL path", p.value),
                "start it with `/`, without spaces or quotes",
            );
            p.value.clone()
        }
        Some(p) => p.value.clone(),
        None => "/".into(),
    };
    if kind != CheckKind::Http {
        for (field, v) in [
            ("path", h.path.as_ref().map(|p| p.span)),
            ("status_code", h.status_code.as_ref().map(|p| p.span)),
            ("digest", h.digest.as_ref().map(|p| p.span)),
        ] {
            if let Some(span) = v {
                cx.error(span, format!("`{field}` is only for `type: http` checks"), "remove it");
            }
        }
    }
    path
}

fn build_check(cx: &mut Cx, h: &Spanned<spec::HealthCheckSpec>) -> HealthCheck {
    let kind = h.kind.value;
    let secs = |cx: &mut Cx, v: &Option<Spanned<i64>>, what: &str, default: u32| {
        v.as_ref()
            .and_then(|v| cx.range(v, 1, 3600, what, "seconds"))
            .map_or(default, |v| v as u32)
    };
    let path = http_path(cx, h);
    let script = h.script.as_ref().map(|s| {
        if s.value.chars().any(|c| c == '"' || c == '\n') {
            cx.error(
                s.span,
                "a MISC_CHECK script cannot contain quotes or newlines",
                "put the logic in a script file and name it here",
            );
        }
        s.value.clone()
    });
    if kind == CheckKind::Misc && script.is_none() {
        cx.error(
            h.kind.span,
            "a `misc` check needs a `script`",
            "e.g. `script: /usr/local/bin/check-web`",
        );
    }
    if let (Some(_), Some(c)) = (&h.digest, &h.status_code) {
        cx.error(c.span, "`status_code` and `digest` are alternatives", "use one of them");
    }
    HealthCheck {
        kind,
        path,
        status_code: h
            .status_code
            .as_ref()
            .and_then(|c| cx.range(c, 100, 599, "status_code", "HTTP status codes are 100..=599"))
            .map(|c| c as u16),
        digest: h.digest.as_ref().map(|d| {
            if d.value.len() != 32 || !d.value.chars().all(|c| c.is_ascii_hexdigit()) {
                cx.error(
                    d.span,
                    "digest must be an MD5 sum (32 hex digits)",
                    "compute it with `genhash` or `curl -s URL | md5sum`",
                );
            }
            d.value.clone()
        }),
        script,
        connect_timeout: secs(cx, &h.connect_timeout, "connect_timeout", 3),
        retry: h
            .retry
            .as_ref()
            .and_then(|r| cx.range(r, 0, 100, "retry", "attempts"))
            .map_or(3, |r| r as u32),
        delay_before_retry: secs(cx, &h.delay_before_retry, "delay_before_retry", 3),
    }
}
