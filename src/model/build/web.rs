//! The web server every real server runs (server, docroot) and each real
//! server's page, rendered from its template.

use super::Cx;
use crate::model::{Host, Provider, Role, TEMPLATE_FUEL, Web, WebServer, is_safe_path};
use crate::spec::TopologySpec;

pub(super) fn build_web(cx: &mut Cx, spec: &TopologySpec) -> Web {
    let server = spec
        .web
        .server
        .as_ref()
        .map(|s| s.value)
        .unwrap_or(match spec.provider.as_ref().map(|p| p.value) {
            Some(Provider::Ssh) => WebServer::Apache2,
            _ => WebServer::Busybox,
        });
    let docroot = match &spec.web.docroot {
        Some(d) if !is_safe_path(&d.value) => {
            cx.error(
                d.span,
                format!("`{}` is not a usable directory", d.value),
                "use an absolute path of letters, digits, `/._-+`",
            );
            d.value.clone()
        }
        Some(d) => d.value.clone(),
        None => "/var/www/html".into(),
    };
    Web {
        server,
        docroot,
        docroot_declared: spec.web.docroot.is_some(),
    }
}

/// Web pages for real servers (and an error for a `page` on any other host).
pub(super) fn render_pages(cx: &mut Cx, spec: &TopologySpec, hosts: &mut [Host]) {
    let page_template = spec.web.page.as_ref();
    for (hi, (name, hspec)) in spec.hosts.iter().enumerate() {
        let host = &hosts[hi];
        if host.role != Role::RealServer {
            if let Some(p) = &hspec.page {
                cx.error(
                    p.span,
                    format!(
                        "`page` is only for real servers, and `{}` is a {}",
                        host.name,
                        host.role.as_str()
                    ),
                    "remove it",
                );
            }
            continue;
        }
        let (template, span) = match (&hspec.page, page_template) {
            (Some(p), _) | (None, Some(p)) => (p.value.as_str(), Some(p.span)),
            (None, None) => (crate::assets::PAGE_TEMPLATE, None),
        };
        match render_page(template, &spec.lab.value, host) {
            Ok(page) => hosts[hi].page = Some(page),
            Err(e) => {
                let span = span.unwrap_or(name.span);
                cx.error(
                    span,
                    format!("page template for `{}` does not render: {e}", host.name),
                    "the page template sees `lab`, `host.name` and `host.address`",
                );
            }
        }
    }
}

fn render_page(template: &str, lab: &str, host: &Host) -> Result<String, minijinja::Error> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // A page is a few lines; a template that loops for ever runs out of fuel.
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.render_str(
        template,
        minijinja::context! {
            lab => lab,
            host => minijinja::context! {
                name => host.name.clone(),
                address => host.primary_address().map(|a| a.to_string()).unwrap_or_default(),
            },
        },
    )
}
