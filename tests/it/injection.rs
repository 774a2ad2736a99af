//! Values from a topology that reach a shell must come out harmless. Names and
//! paths are held to strict grammars (see tests/invalid/bad-names.yaml); free
//! text (a web page) only ever reaches a file through a quoted here-document.
//! Here the generated commands are really run, in a temporary directory.

use std::process::Command;

use lvslab::plan::Resource;

const EVIL: &str =
    "it's \"quoted\" $(touch PWNED1) `touch PWNED2` ${HOME}\nLVSLAB_EOF\ntouch PWNED3\n'; touch PWNED4; echo '";

#[test]
fn hostile_page_text_is_written_verbatim_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let docroot = root.join("www");
    let topology = format!(
        r#"
lab: evil
mode: dr
networks:
  lan: {{ cidr: 192.168.4.0/24 }}
web:
  docroot: {docroot}
hosts:
  director:
    role: director
    interfaces: [{{ network: lan }}]
  web1:
    role: real_server
    interfaces: [{{ network: lan }}]
    page: {page}
services:
  - vip: 192.168.4.253
    port: 80
    real_servers: [{{ host: web1 }}]
"#,
        docroot = docroot.display(),
        page = serde_json::to_string(EVIL).unwrap(),
    );
    let t = lvslab::load_str("evil.yaml", topology)
        .unwrap_or_else(|d| panic!("{d}"))
        .topology;
    assert_eq!(t.hosts[1].page.as_deref(), Some(EVIL));
    let plan = lvslab::compile::compile(&t).unwrap();

    // Run the file step's commands exactly as the shell script would, from inside the temp dir.
    let file_step = plan
        .phases
        .iter()
        .flat_map(|p| p.hosts.iter())
        .flat_map(|h| h.steps.iter())
        .find(|s| matches!(&s.resource, Resource::File { path, .. } if path.ends_with("index.html")))
        .expect("page file step");
    let script = file_step.apply.join("\n");
    crate::assert_sh_parses("evil page", &script);
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let written = std::fs::read_to_string(docroot.join("index.html")).unwrap();
    assert_eq!(written, EVIL, "content is verbatim, as up writes it");
    for n in 1..=4 {
        assert!(
            !root.join(format!("PWNED{n}")).exists(),
            "PWNED{n}: page text was executed"
        );
    }

    // And the whole script for that host still parses.
    let (_, script) = lvslab::report::plan_sh(&plan)
        .into_iter()
        .find(|(h, _)| h == "web1")
        .unwrap();
    crate::assert_sh_parses("evil web1", &script);
}

#[test]
fn hostile_names_are_rejected_before_any_command_exists() {
    let t = "lab: x\nmode: dr\nnetworks:\n  lan: { cidr: 192.168.4.0/24 }\nhosts:\n  \"a$(reboot)\":\n    role: client\n    interfaces: [{ network: lan, name: \"eth0;reboot\" }]\nweb:\n  docroot: \"/var/www/$(reboot)\"\n";
    let err = lvslab::load_str("x.yaml", t.to_string())
        .err()
        .expect("invalid")
        .to_string();
    assert!(err.contains("host name `a$(reboot)` is not usable"), "{err}");
    assert!(err.contains("`eth0;reboot` is not a usable interface name"), "{err}");
    assert!(err.contains("`/var/www/$(reboot)` is not a usable directory"), "{err}");
}

#[test]
fn generated_scripts_fill_secrets_from_the_environment_verbatim() {
    use std::collections::BTreeMap;

    use lvslab::model::Secret;
    use lvslab::plan::secret_placeholder;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keepalived.conf");
    let file = Resource::File {
        path: path.display().to_string(),
        content: format!("a\n    auth_pass {}\nb\n", secret_placeholder("vrrp-VI_1")),
        mode: "0640".into(),
        validate: None,
        sha256: String::new(),
    };
    let mut secrets = BTreeMap::new();
    secrets.insert("vrrp-VI_1".to_string(), Secret::new("unused".into()));
    let script = file.apply_for_script(&secrets).join("\n");
    let nasty = r"p&|\1/$x'";

    let missing = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env_remove("LVSLAB_SECRET_VRRP_VI_1")
        .output()
        .unwrap();
    assert!(!missing.status.success(), "an unset secret stops the script");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("LVSLAB_SECRET_VRRP_VI_1"));

    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("LVSLAB_SECRET_VRRP_VI_1", nasty)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("a\n    auth_pass {nasty}\nb\n")
    );
}
