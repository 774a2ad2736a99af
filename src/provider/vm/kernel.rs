//! The VM's kernel: the distribution's package fetched with `apt-get
//! download` (or one given with `--vm-kernel`), unpacked, its modules
//! indexed, and cached under [`super::cache_root`]`/vm`.

use std::path::{Path, PathBuf};

use super::*;

/// A distribution kernel, unpacked, with its modules and an initramfs for it.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `<root>/lib/modules` (holds `<release>/`).
    pub modules: PathBuf,
    pub initramfs: PathBuf,
}

/// The kernel packages behind the distribution's kernel meta package:
/// Debian's `linux-image-amd64` depends on one `linux-image-<release>`;
/// Ubuntu's `linux-image-generic` on an image and its module packages.
pub(super) fn apt_kernel_packages(say: &dyn Fn(&str)) -> Result<Vec<String>, VmError> {
    let arch = run(&["dpkg", "--print-architecture"])?.trim().to_string();
    if arch != "amd64" {
        return Err(failed(format!(
            "the vm provider boots x86_64 kernels with qemu-system-x86_64; this machine is {arch}"
        )));
    }
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let ubuntu = release
        .lines()
        .any(|l| (l.starts_with("ID=") || l.starts_with("ID_LIKE=")) && l.contains("ubuntu"));
    let meta = if ubuntu {
        "linux-image-generic"
    } else {
        "linux-image-amd64"
    };
    let kernel_pkg = regex::Regex::new(r"^linux-(image|modules|modules-extra)-[0-9]")
        .map_err(because("the kernel packages' pattern"))?;
    let depends = |pkg: &str| -> Vec<String> {
        run(&["apt-cache", "depends", pkg])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .map(|p| p.trim().to_string())
            .filter(|p| kernel_pkg.is_match(p))
            .collect()
    };
    let mut first = depends(meta);
    if first.is_empty() && crate::local::is_root() {
        say(&format!("apt-get update (no {meta} in the package lists)"));
        run(&["apt-get", "update", "-qq"])?;
        first = depends(meta);
    }
    if first.is_empty() {
        return Err(failed(format!(
            "cannot find the kernel behind `{meta}` in the package lists: run `apt-get update` as root, \
             or give a kernel package with --vm-kernel FILE.deb"
        )));
    }
    let mut all = first.clone();
    for p in first.iter().filter(|p| p.starts_with("linux-image-")) {
        for d in depends(p) {
            if !all.contains(&d) {
                all.push(d);
            }
        }
    }
    Ok(all)
}

pub(super) fn modules_dir(root: &Path) -> Option<PathBuf> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.is_dir())
}

/// Unpack `.deb`s into `dir/root` and index the modules.
pub(super) fn unpack(dir: &Path, debs: &[PathBuf]) -> Result<(), VmError> {
    let root = dir.join("root");
    for deb in debs {
        run(&["dpkg", "-x", path_arg(deb)?, path_arg(&root)?])?;
    }
    Ok(())
}

pub(super) fn release_of(root: &Path) -> Result<(String, PathBuf), VmError> {
    let mods = modules_dir(root).ok_or_else(|| failed(format!("{}: no lib/modules in this kernel", root.display())))?;
    let mut releases: Vec<String> = std::fs::read_dir(&mods)
        .map_err(because(mods.display()))?
        .flatten()
        .filter(|e| e.path().join("kernel").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    releases.sort();
    let release = releases
        .pop()
        .ok_or_else(|| failed(format!("{}: no kernel modules", mods.display())))?;
    Ok((release, mods))
}

/// The kernel to boot: `user` (a `linux-image-*.deb`, or a directory holding
/// `boot/vmlinuz-<release>` and `lib/modules/<release>`), else the
/// distribution's, downloaded with `apt-get download` (never installed).
/// Both are unpacked and cached.
pub fn prepare_kernel(user: Option<&Path>, say: &dyn Fn(&str)) -> Result<Kernel, VmError> {
    let cache = cache_root().join("vm");
    let root = match user {
        Some(p) if p.is_dir() => p.to_path_buf(),
        Some(p) if p.is_file() => {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let dir = cache.join("kernels").join(format!("user-{name}"));
            if !dir.join("ready").exists() {
                say(&format!("unpacking {}", p.display()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).map_err(because(dir.display()))?;
                unpack(&dir, &[p.to_path_buf()])?;
                finish_unpack(&dir)?;
            }
            dir.join("root")
        }
        Some(p) => {
            return Err(failed(format!(
                "--vm-kernel {}: no such file or directory",
                p.display()
            )));
        }
        None => {
            let pkgs = apt_kernel_packages(say)?;
            let image = pkgs
                .iter()
                .find(|p| p.starts_with("linux-image-"))
                .or(pkgs.first())
                .cloned()
                .ok_or_else(|| failed("no kernel package found"))?;
            let dir = cache.join("kernels").join(image.trim_start_matches("linux-image-"));
            if !dir.join("ready").exists() {
                say(&format!(
                    "fetching {} (apt-get download, not installed)",
                    pkgs.join(" ")
                ));
                let _ = std::fs::remove_dir_all(&dir);
                let debs = dir.join("debs");
                std::fs::create_dir_all(&debs).map_err(because(debs.display()))?;
                let mut argv = vec!["apt-get", "download", "-q"];
                argv.extend(pkgs.iter().map(String::as_str));
                run_in(&argv, Some(&debs)).map_err(|e| {
                    failed(format!(
                        "{e}\n  hint: the VM needs a kernel package from the distribution's mirror; \
                         or give one with --vm-kernel FILE.deb"
                    ))
                })?;
                let files: Vec<PathBuf> = std::fs::read_dir(&debs)
                    .map_err(because(debs.display()))?
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                    .collect();
                unpack(&dir, &files)?;
                let _ = std::fs::remove_dir_all(&debs);
                finish_unpack(&dir)?;
            }
            dir.join("root")
        }
    };
    let (release, modules) = release_of(&root)?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        return Err(failed(format!(
            "{}: missing (not a kernel image package?)",
            vmlinuz.display()
        )));
    }
    if !modules.join(&release).join("modules.dep").exists() {
        run(&["depmod", "-b", path_arg(&root)?, &release])?;
    }
    let initramfs = build_initramfs(&cache, &root, &modules, &release)?;
    Ok(Kernel {
        release,
        vmlinuz,
        modules,
        initramfs,
    })
}

pub(super) fn finish_unpack(dir: &Path) -> Result<(), VmError> {
    let root = dir.join("root");
    let (release, _) = release_of(&root)?;
    run(&["depmod", "-b", path_arg(&root)?, &release])?;
    // Keep the kernel and its modules; drop documentation and the like.
    let _ = std::fs::remove_dir_all(root.join("usr/share"));
    std::fs::write(dir.join("ready"), b"").map_err(because(dir.display()))
}
