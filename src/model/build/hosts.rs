//! Host assembly: interfaces (addressed), gateway, routes, SSH target, the
//! defaults (init, persistence, OS, packages) and the host's own steps.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::Cx;
use super::addresses::PendingIface;
use super::ssh::ssh_target;
use crate::model::{ExtraStep, Host, HostId, Init, Interface, Network, PHASES, Provider, Role, Route};
use crate::spec::{self, Spanned, TopologySpec};

/// What every host's assembly reads besides its own spec.
struct Assembly<'a> {
    spec: &'a TopologySpec,
    networks: &'a [Network],
    init_default: Init,
}

pub(super) fn build_hosts(
    cx: &mut Cx,
    spec: &TopologySpec,
    networks: &[Network],
    pending: Vec<Vec<PendingIface>>,
) -> Vec<Host> {
    let init_default =
        spec.defaults
            .init
            .as_ref()
            .map(|i| i.value)
            .unwrap_or(match spec.provider.as_ref().map(|p| p.value) {
                Some(Provider::Ssh) => Init::Systemd,
                _ => Init::Daemon,
            });
    let at = Assembly {
        spec,
        networks,
        init_default,
    };
    spec.hosts
        .iter()
        .zip(pending)
        .enumerate()
        .map(|(hi, ((name, hspec), ifaces))| at.host(cx, HostId(hi), name, hspec, ifaces))
        .collect()
}

impl Assembly<'_> {
    fn host(
        &self,
        cx: &mut Cx,
        id: HostId,
        name: &spec::Name,
        hspec: &spec::HostSpec,
        ifaces: Vec<PendingIface>,
    ) -> Host {
        let spec = self.spec;
        let interfaces: Vec<Interface> = ifaces
            .into_iter()
            .map(|p| Interface {
                name: p.name,
                network: p.network,
                address: p.address.unwrap_or(Ipv4Addr::UNSPECIFIED),
                prefix: self.networks[p.network.0].cidr.prefix(),
            })
            .collect();
        let gateway = self.gateway(cx, name, hspec, &interfaces);
        let routes = self.routes(cx, name, hspec, &interfaces);
        let ssh = ssh_target(
            cx,
            &name.value,
            spec.defaults.ssh.as_ref(),
            hspec.ssh.as_ref(),
            interfaces.first().map(|i| i.address),
        );
        let on_ssh = spec.provider.as_ref().map(|p| p.value) == Some(Provider::Ssh);
        let init = hspec.init.as_ref().map_or(self.init_default, |i| i.value);
        Host {
            id,
            name: name.value.clone(),
            role: hspec.role.as_ref().map_or(Role::Host, |r| r.value),
            interfaces,
            gateway,
            routes,
            ssh,
            init,
            persist: hspec
                .persist
                .as_ref()
                .or(spec.defaults.persist.as_ref())
                .map_or(on_ssh && init == Init::Systemd, |p| p.value),
            os: hspec.os.as_ref().or(spec.defaults.os.as_ref()).map(|o| o.value),
            own_addresses: hspec
                .own_addresses
                .as_ref()
                .or(spec.defaults.own_addresses.as_ref())
                .map(|o| o.value),
            packages: hspec
                .packages
                .as_ref()
                .or(spec.defaults.packages.as_ref())
                .map_or(on_ssh, |p| p.value),
            page: None,
            extra_steps: extra_steps(cx, &hspec.steps),
            vars: super::vars::host_vars(spec, &name.value),
        }
    }

    /// True if `a` is on a network one of `interfaces` is on.
    fn connected(&self, interfaces: &[Interface], a: Ipv4Addr) -> bool {
        interfaces.iter().any(|i| self.networks[i.network.0].cidr.contains(a))
    }

    fn gateway(
        &self,
        cx: &mut Cx,
        name: &spec::Name,
        hspec: &spec::HostSpec,
        interfaces: &[Interface],
    ) -> Option<Ipv4Addr> {
        hspec.gateway.as_ref().and_then(|g| {
            let a = cx.ipv4(g, "gateway")?;
            if !self.connected(interfaces, a) {
                cx.error(
                    g.span,
                    format!("gateway {a} is not on any network of host `{}`", name.value),
                    "a gateway must be on a directly connected network",
                );
            }
            Some(a)
        })
    }

    fn routes(&self, cx: &mut Cx, name: &spec::Name, hspec: &spec::HostSpec, interfaces: &[Interface]) -> Vec<Route> {
        let mut routes = Vec::new();
        for r in &hspec.routes {
            let to = match r.to.value.trim().parse::<Ipv4Network>() {
                Ok(n) => n,
                Err(_) => {
                    cx.error(
                        r.to.span,
                        format!("`{}` is not an IPv4 network", r.to.value),
                        "write it as ADDRESS/PREFIX, e.g. 192.168.6.0/24",
                    );
                    continue;
                }
            };
            let Some(via) = cx.ipv4(&r.via, "next hop") else {
                continue;
            };
            if !self.connected(interfaces, via) {
                cx.error(
                    r.via.span,
                    format!("next hop {via} is not on any network of host `{}`", name.value),
                    "a route's `via` must be on a directly connected network",
                );
            }
            routes.push(Route { to, via });
        }
        routes
    }
}

/// The host's own steps, each with a known phase and a `why`.
fn extra_steps(cx: &mut Cx, steps: &[Spanned<serde_yaml::Value>]) -> Vec<ExtraStep> {
    let mut out = Vec::new();
    for s in steps {
        let serde_yaml::Value::Mapping(m) = &s.value else {
            cx.error(
                s.span,
                "a step is a mapping",
                "e.g. `- file: { path: /srv/x, content: hi }` with a `why:`",
            );
            continue;
        };
        let mut m = m.clone();
        let Some(phase) = step_phase(cx, s.span, m.remove("phase")) else {
            continue;
        };
        if m.get("why")
            .is_none_or(|w| w.as_str().is_none_or(|w| w.trim().is_empty()))
        {
            cx.error(
                s.span,
                "this step has no `why`",
                "say in one line why the lab needs it: it is shown in every plan",
            );
        }
        super::vars::read_step_files(cx, s.span, &mut m);
        out.push(ExtraStep {
            phase,
            step: m,
            span: s.span,
        });
    }
    out
}

/// A step's phase (`services` when not given); None after an error.
fn step_phase(cx: &mut Cx, span: crate::diag::Span, phase: Option<serde_yaml::Value>) -> Option<&'static str> {
    match phase {
        None => Some("services"),
        Some(serde_yaml::Value::String(p)) => match PHASES.iter().find(|x| **x == p) {
            Some(x) => Some(x),
            None => {
                cx.error(
                    span,
                    format!("unknown phase `{p}`"),
                    format!("phases: {}", PHASES.join(", ")),
                );
                None
            }
        },
        Some(_) => {
            cx.error(span, "`phase` is a name", format!("one of: {}", PHASES.join(", ")));
            None
        }
    }
}
