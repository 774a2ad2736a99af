//! Storage: a storage host sharing a network with every real server, and
//! the directories it exports and they mount.

use std::collections::BTreeSet;

use super::{Cx, Known, lookup};
use crate::model::{HostId, Role, Service, Storage, SyncMode, is_safe_path};
use crate::spec::{self, Spanned};

pub(super) fn build_storage(
    cx: &mut Cx,
    st: &Spanned<spec::StorageSpec>,
    known: Known<'_>,
    services: &[Service],
) -> Option<Storage> {
    let (host_ids, hosts) = (known.host_ids, known.hosts);
    let id = *lookup(cx, host_ids, &st.host, "host")?;
    let host = &hosts[id.0];
    if host.role != Role::Storage {
        cx.error(
            st.host.span,
            format!("`{}` is a {}, not a storage host", host.name, host.role.as_str()),
            "the storage host needs `role: storage`",
        );
    }
    for p in [&st.export, &st.mount] {
        if !is_safe_path(&p.value) {
            cx.error(
                p.span,
                format!("`{}` is not a usable directory", p.value),
                "use an absolute path of letters, digits, `/._-+`",
            );
        }
    }
    // The storage host must share a network with every real server.
    let real_servers: BTreeSet<HostId> = services
        .iter()
        .flat_map(|s| s.real_servers.iter().map(|r| r.host))
        .collect();
    let mut address = None;
    for rs in real_servers {
        let rh = &hosts[rs.0];
        match host.interfaces.iter().find(|i| rh.interface_on(i.network).is_some()) {
            Some(i) => {
                address.get_or_insert(i.address);
            }
            None => cx.error(
                st.host.span,
                format!(
                    "storage host `{}` shares no network with real server `{}`",
                    host.name, rh.name
                ),
                "put the storage host on the real servers' network",
            ),
        }
    }
    Some(Storage {
        host: id,
        address: address.or(host.primary_address())?,
        export: st.export.value.clone(),
        mount: st.mount.value.clone(),
        sync: st.sync.as_ref().map_or(SyncMode::Nfs, |s| s.value),
    })
}
