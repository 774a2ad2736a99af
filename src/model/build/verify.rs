//! `verify`: the client that sends the traffic (named, or the first client
//! host), how many requests, and how far the shares may be off.

use super::{Cx, Known, lookup};
use crate::model::{HostId, Role, Service, Verify};
use crate::spec::TopologySpec;

pub(super) fn build_verify(cx: &mut Cx, spec: &TopologySpec, known: Known<'_>, services: &[Service]) -> Verify {
    let client = client(cx, spec, known);
    if client.is_none() && !services.is_empty() && spec.verify.client.is_none() {
        cx.warn(
            spec.lab.span,
            "the lab has no client host: `verify` cannot send traffic",
            "add a host with `role: client` on the VIP's network",
        );
    }
    Verify {
        client,
        requests: spec
            .verify
            .requests
            .as_ref()
            .and_then(|r| {
                cx.range(
                    r,
                    1,
                    100_000,
                    "request count",
                    "verify sends this many requests per service",
                )
            })
            .unwrap_or(60) as u32,
        tolerance: match &spec.verify.tolerance {
            Some(t) if !(0.0..=1.0).contains(&t.value) => {
                cx.error(
                    t.span,
                    format!("tolerance {} is out of range 0..=1", t.value),
                    "a fraction: 0.1 allows each share to be off by ±10%",
                );
                0.1
            }
            Some(t) => t.value,
            None => 0.1,
        },
    }
}

/// The client named (a host with `role: client`), or the first client.
fn client(cx: &mut Cx, spec: &TopologySpec, known: Known<'_>) -> Option<HostId> {
    let hosts = known.hosts;
    match &spec.verify.client {
        Some(c) => lookup(cx, known.host_ids, c, "host").copied().filter(|id| {
            let ok = hosts[id.0].role == Role::Client;
            if !ok {
                cx.error(
                    c.span,
                    format!(
                        "verify client `{}` is a {}, not a client",
                        c.value,
                        hosts[id.0].role.as_str()
                    ),
                    "name a host with `role: client`",
                );
            }
            ok
        }),
        None => hosts.iter().find(|h| h.role == Role::Client).map(|h| h.id),
    }
}
