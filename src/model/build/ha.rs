//! HA: VRRP instances (router ids, authentication, the network their VIPs
//! live on, preemption, track scripts) and their members (directors with
//! distinct priorities and an interface on that network).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::{Cx, Known, lookup};
use crate::diag::Span;
use crate::model::{Ha, NetId, Role, Secret, TrackScript, VrrpInstance, VrrpMember, VrrpState};
use crate::spec::{self, Spanned};

pub(super) fn build_ha(
    cx: &mut Cx,
    ha: &Spanned<spec::HaSpec>,
    vrrp_vips: &[Vec<(Ipv4Addr, Span)>],
    known: Known<'_>,
) -> Ha {
    let mut instances = Vec::new();
    let mut vrids: BTreeMap<u8, String> = BTreeMap::new();
    if ha.instances.is_empty() {
        cx.error(
            ha.span,
            "`ha` has no VRRP instances",
            "add an instance with its VIPs and members",
        );
    }
    for (inst, vips) in ha.instances.iter().zip(vrrp_vips) {
        instances.push(instance(cx, inst, vips, known, &mut vrids));
    }
    Ha { instances }
}

fn instance(
    cx: &mut Cx,
    inst: &spec::VrrpInstanceSpec,
    vips: &[(Ipv4Addr, Span)],
    known: Known<'_>,
    vrids: &mut BTreeMap<u8, String>,
) -> VrrpInstance {
    check_instance_name(cx, &inst.name);
    let vrid = cx
        .range(
            &inst.virtual_router_id,
            1,
            255,
            "virtual_router_id",
            "VRRP router ids are 1..=255",
        )
        .unwrap_or(1) as u8;
    if let Some(other) = vrids.insert(vrid, inst.name.value.clone()) {
        cx.error(
            inst.virtual_router_id.span,
            format!("virtual_router_id {vrid} is already used by instance {other}"),
            "each VRRP instance needs its own virtual_router_id",
        );
    }
    let advert_int = cx.range_or(
        inst.advert_int.as_ref(),
        (1, 255),
        "advert_int",
        "seconds between adverts",
        1,
    ) as u32;
    let auth_pass = auth_pass(cx, inst);
    let network = vips_network(cx, inst, vips, known);
    let nopreempt = inst.nopreempt.as_ref().is_some_and(|n| n.value);
    if let (true, Some(d)) = (nopreempt, &inst.preempt_delay) {
        cx.error(
            d.span,
            format!(
                "instance {} has both `nopreempt` and `preempt_delay`: keepalived refuses them together",
                inst.name.value
            ),
            "choose one: `nopreempt` (a recovered MASTER never takes the VIP back) or `preempt_delay` (it takes it back after that many seconds)",
        );
    }
    let members = Members {
        inst,
        nopreempt,
        network,
        known,
    }
    .build(cx);
    check_member_count(cx, inst);
    VrrpInstance {
        name: inst.name.value.clone(),
        virtual_router_id: vrid,
        advert_int,
        auth_pass,
        vips: vips.iter().map(|(a, _)| *a).collect(),
        network: network.unwrap_or(NetId(0)),
        nopreempt,
        preempt_delay: inst
            .preempt_delay
            .as_ref()
            .and_then(|p| cx.range(p, 0, 1000, "preempt_delay", "seconds"))
            .map(|p| p as u32),
        unicast: inst.unicast.unwrap_or(false),
        track_script: inst.track_script.as_ref().and_then(|ts| track_script(cx, ts)),
        members,
    }
}

fn check_instance_name(cx: &mut Cx, name: &spec::Name) {
    if !name
        .value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        || name.value.is_empty()
    {
        cx.error(
            name.span,
            format!("`{}` is not a usable VRRP instance name", name.value),
            "use letters, digits, `_` and `-`, e.g. VI_1",
        );
    }
}

/// The password: `auth_pass`, or the variable `auth_pass_env` names.
fn auth_pass(cx: &mut Cx, inst: &spec::VrrpInstanceSpec) -> Option<Secret> {
    let from_env = match (&inst.auth_pass, &inst.auth_pass_env) {
        (Some(_), Some(e)) => {
            cx.error(
                e.span,
                "both auth_pass and auth_pass_env are given",
                "keep one: auth_pass_env names an environment variable holding the password",
            );
            None
        }
        (None, Some(e)) => auth_pass_from_env(cx, e),
        _ => None,
    };
    inst.auth_pass.as_ref().or(from_env.as_ref()).map(|p| {
        if p.value.is_empty()
            || !p
                .value
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\'' && c != '#' && c != '!')
        {
            cx.error(
                p.span,
                "auth_pass has characters keepalived.conf cannot hold",
                "use letters, digits and punctuation other than quotes, `#` and `!`",
            );
        } else if p.value.len() > 8 {
            cx.warn(
                p.span,
                format!(
                    "auth_pass is {} characters long; keepalived uses only the first 8",
                    p.value.len()
                ),
                "shorten it to 8 characters so both sides obviously agree",
            );
        }
        Secret::new(p.value.clone())
    })
}

fn auth_pass_from_env(cx: &mut Cx, e: &Spanned<String>) -> Option<Spanned<String>> {
    let valid = !e.value.is_empty()
        && !e.value.starts_with(|c: char| c.is_ascii_digit())
        && e.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        cx.error(
            e.span,
            format!("`{}` is not an environment variable name", e.value),
            "use letters, digits and `_`, e.g. VRRP_PASS",
        );
        return None;
    }
    match std::env::var(&e.value) {
        Ok(v) => Some(Spanned { value: v, span: e.span }),
        Err(_) => {
            cx.error(
                e.span,
                format!("the environment variable {} (auth_pass_env) is not set", e.value),
                format!("export {}=<password>; the password stays out of the lab file", e.value),
            );
            None
        }
    }
}

/// All VIPs of an instance live on one network.
fn vips_network(
    cx: &mut Cx,
    inst: &spec::VrrpInstanceSpec,
    vips: &[(Ipv4Addr, Span)],
    known: Known<'_>,
) -> Option<NetId> {
    let mut network = None;
    for (vip, span) in vips {
        match known.networks.iter().position(|n| n.cidr.contains(*vip)) {
            Some(n) if network.is_none() || network == Some(NetId(n)) => network = Some(NetId(n)),
            Some(_) => cx.error(
                *span,
                format!("VIP {vip} is on another network than the instance's first VIP"),
                "split the VIPs into one instance per network (use a sync group for NAT)",
            ),
            None => cx.error(
                *span,
                format!("VIP {vip} is on no lab network"),
                "a VRRP VIP must be inside a network the directors are on",
            ),
        }
    }
    if vips.is_empty() {
        cx.error(
            inst.name.span,
            format!("VRRP instance {} has no VIPs", inst.name.value),
            "list the addresses it moves in `vips`",
        );
    }
    network
}

/// An instance's members, checked one by one.
struct Members<'a> {
    inst: &'a spec::VrrpInstanceSpec,
    nopreempt: bool,
    /// Where the instance's VIPs live (None when they are on no one network).
    network: Option<NetId>,
    known: Known<'a>,
}

impl Members<'_> {
    fn build(&self, cx: &mut Cx) -> Vec<VrrpMember> {
        let mut priorities: BTreeMap<u8, String> = BTreeMap::new();
        self.inst
            .members
            .iter()
            .filter_map(|m| self.member(cx, m, &mut priorities))
            .collect()
    }

    fn member(
        &self,
        cx: &mut Cx,
        m: &spec::VrrpMemberSpec,
        priorities: &mut BTreeMap<u8, String>,
    ) -> Option<VrrpMember> {
        let (inst, known) = (self.inst, self.known);
        let hid = *lookup(cx, known.host_ids, &m.host, "host")?;
        let host = &known.hosts[hid.0];
        if host.role != Role::Director {
            cx.error(
                m.host.span,
                format!(
                    "VRRP member `{}` is a {}, not a director",
                    host.name,
                    host.role.as_str()
                ),
                "only directors run keepalived",
            );
            return None;
        }
        let prio = cx
            .range(
                &m.priority,
                1,
                254,
                "priority",
                "VRRP priorities are 1..=254 (255 is reserved for the address owner)",
            )
            .unwrap_or(1) as u8;
        if let Some(other) = priorities.insert(prio, host.name.clone()) {
            cx.error(
                m.priority.span,
                format!("priority {prio} is also {other}'s in instance {}", inst.name.value),
                "members of one instance need distinct priorities, e.g. 100 and 98",
            );
        }
        self.check_initial_state(cx, m, &host.name);
        let net = self.network?;
        let Some(iface) = host.interface_on(net) else {
            cx.error(
                m.host.span,
                format!(
                    "director `{}` has no interface on network `{}` where instance {}'s VIPs live",
                    host.name, known.networks[net.0].name, inst.name.value
                ),
                "add an interface on that network",
            );
            return None;
        };
        Some(VrrpMember {
            host: hid,
            state: m.state.value,
            priority: prio,
            interface: iface.name.clone(),
            address: iface.address,
        })
    }

    /// Preemption settings need every member to start as BACKUP.
    fn check_initial_state(&self, cx: &mut Cx, m: &spec::VrrpMemberSpec, host: &str) {
        let inst = self.inst;
        if self.nopreempt && m.state.value == VrrpState::Master {
            let span = inst.nopreempt.as_ref().map_or(m.state.span, |_| m.state.span);
            cx.error(
                span,
                format!("`nopreempt` needs initial state BACKUP, but `{host}` starts as MASTER"),
                "keepalived ignores nopreempt on a MASTER: set every member's state to BACKUP and let priority decide",
            );
        }
        if inst.preempt_delay.is_some() && m.state.value == VrrpState::Master {
            cx.error(
                m.state.span,
                format!("`preempt_delay` needs initial state BACKUP, but `{host}` starts as MASTER"),
                "set every member's state to BACKUP",
            );
        }
    }
}

/// Enough members to fail over, and one MASTER at most.
fn check_member_count(cx: &mut Cx, inst: &spec::VrrpInstanceSpec) {
    if inst.members.len() < 2 {
        cx.warn(
            inst.name.span,
            format!(
                "VRRP instance {} has fewer than two members: nothing can fail over",
                inst.name.value
            ),
            "add a second director as BACKUP",
        );
    }
    if inst
        .members
        .iter()
        .filter(|m| m.state.value == VrrpState::Master)
        .count()
        > 1
    {
        cx.error(
            inst.name.span,
            format!("VRRP instance {} has more than one MASTER", inst.name.value),
            "one member starts as MASTER, the others as BACKUP",
        );
    }
}

fn track_script(cx: &mut Cx, ts: &Spanned<spec::TrackScriptSpec>) -> Option<TrackScript> {
    let ts = &ts.value;
    let script = TrackScript {
        run: ts.run.value.clone(),
        interval: cx.range_or(ts.interval.as_ref(), (1, 3600), "interval", "seconds between runs", 2) as u32,
        weight: cx.range_or(
            ts.weight.as_ref(),
            (-253, 253),
            "weight",
            "priority change while it fails",
            -20,
        ) as i32,
        fall: cx.range_or(ts.fall.as_ref(), (1, 100), "fall", "failures before it counts", 2) as u32,
        rise: cx.range_or(
            ts.rise.as_ref(),
            (1, 100),
            "rise",
            "successes before it counts again",
            2,
        ) as u32,
    };
    if ts.run.value.trim().is_empty() || ts.run.value.contains('"') || ts.run.value.contains('\n') {
        cx.error(
            ts.run.span,
            "a track_script command must be one line without double quotes",
            "keepalived quotes it as `script \"...\"`; e.g. `run: pidof -s busybox`",
        );
        return None;
    }
    Some(script)
}

#[cfg(test)]
mod tests {
    use super::super::tests::diagnostics;

    /// Two directors on one network and `instances` under `ha:`.
    fn ha_lab(instances: &str) -> String {
        format!(
            "lab: t\nmode: dr\nnetworks:\n  lan: {{ cidr: 10.0.0.0/24 }}\nhosts:\n  d1:\n    role: director\n    interfaces: [{{ network: lan }}]\n  d2:\n    role: director\n    interfaces: [{{ network: lan }}]\nha:\n  instances:\n{instances}"
        )
    }

    const MEMBERS: &str =
        "      members: [{ host: d1, state: MASTER, priority: 100 }, { host: d2, state: BACKUP, priority: 90 }]\n";

    #[test]
    fn a_well_formed_instance_has_nothing_to_report() {
        let out = diagnostics(&ha_lab(&format!(
            "    - name: VI_1\n      virtual_router_id: 51\n      vips: [10.0.0.100]\n{MEMBERS}"
        )));
        assert_eq!(out, "");
    }

    #[test]
    fn a_virtual_router_id_used_twice_is_an_error_at_the_second() {
        let out = diagnostics(&ha_lab(&format!(
            "    - name: VI_1\n      virtual_router_id: 51\n      vips: [10.0.0.100]\n{MEMBERS}    - name: VI_2\n      virtual_router_id: 51\n      vips: [10.0.0.101]\n{MEMBERS}"
        )));
        assert!(
            out.starts_with("error: virtual_router_id 51 is already used by instance VI_1\n  --> t.yaml:19:26"),
            "{out}"
        );
    }

    #[test]
    fn members_of_one_instance_need_distinct_priorities() {
        let out = diagnostics(&ha_lab(
            "    - name: VI_1\n      virtual_router_id: 51\n      vips: [10.0.0.100]\n      members: [{ host: d1, state: MASTER, priority: 100 }, { host: d2, state: BACKUP, priority: 100 }]\n",
        ));
        assert!(
            out.starts_with("error: priority 100 is also d1's in instance VI_1"),
            "{out}"
        );
    }

    #[test]
    fn nopreempt_needs_every_member_to_start_as_backup() {
        let out = diagnostics(&ha_lab(&format!(
            "    - name: VI_1\n      virtual_router_id: 51\n      nopreempt: true\n      vips: [10.0.0.100]\n{MEMBERS}"
        )));
        assert!(
            out.starts_with("error: `nopreempt` needs initial state BACKUP, but `d1` starts as MASTER"),
            "{out}"
        );
    }

    #[test]
    fn a_vip_outside_every_network_and_a_single_member_are_reported() {
        let out = diagnostics(&ha_lab(
            "    - name: VI_1\n      virtual_router_id: 51\n      vips: [10.9.0.100]\n      members: [{ host: d1, state: MASTER, priority: 100 }]\n",
        ));
        assert!(out.starts_with("error: VIP 10.9.0.100 is on no lab network"), "{out}");
        assert!(
            out.contains("warning: VRRP instance VI_1 has fewer than two members: nothing can fail over"),
            "{out}"
        );
    }
}
