//! The VM's initramfs, written by lvslab itself: a `newc` cpio archive with
//! a static busybox, the virtio/9p/overlay modules (resolved with `modprobe
//! --show-depends`) and an `/init` that mounts this machine's root read-only
//! with a tmpfs overlay.

use std::path::{Path, PathBuf};

use super::*;

/// The initramfs's /init: mount this machine's root over 9p read-only with a
/// tmpfs overlay, the kernel's modules, tmpfs on /tmp and /run, the VM's
/// share, then hand over to the guest script.
pub(super) const INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc; $B mount -t sysfs sys /sys; $B mount -t devtmpfs dev /dev
echo "lvslab-vm: init"
for m in $($B cat /modules.list); do $B insmod /mods/$m 2>/dev/null; done
for x in $($B cat /proc/cmdline); do case $x in lvslab.mods=*) M=${x#*=};; esac; done
fail() { echo "lvslab-vm: $*"; $B sleep 2; $B poweroff -f; }
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=1048576 hostroot /lower || fail "cannot mount this machine's root over 9p"
$B mount -t tmpfs -o size=70% tmpfs /upper; $B mkdir -p /upper/u /upper/w
$B mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot || fail "overlay mount failed"
$B mkdir -p /newroot/usr/lib/modules; $B mount --bind /lower$M /newroot/usr/lib/modules || fail "no modules at $M"
$B mount -t tmpfs tmpfs /newroot/tmp; $B mount -t tmpfs tmpfs /newroot/run
$B mkdir -p /newroot/mnt/lvslab
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=1048576 lvslab /newroot/mnt/lvslab || fail "cannot mount the VM's share"
$B mount --move /proc /newroot/proc; $B mount --move /sys /newroot/sys; $B mount --move /dev /newroot/dev
exec $B switch_root /newroot /bin/bash /mnt/lvslab/guest.sh
"#;

/// One file of a `newc` cpio archive.
pub(super) struct CpioEntry {
    pub(super) name: String,
    pub(super) mode: u32,
    pub(super) rdev: (u32, u32),
    pub(super) data: Vec<u8>,
}

/// Write a `newc` cpio archive (what the kernel unpacks as an initramfs).
pub(super) fn cpio_newc(entries: &[CpioEntry]) -> Vec<u8> {
    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    let trailer = CpioEntry {
        name: "TRAILER!!!".into(),
        mode: 0,
        rdev: (0, 0),
        data: Vec::new(),
    };
    for (ino, e) in entries.iter().chain(std::iter::once(&trailer)).enumerate() {
        let nlink = if e.mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            ino as u32 + 1,
            e.mode,
            0,
            0,
            nlink,
            0,
            e.data.len() as u32,
            0,
            0,
            e.rdev.0,
            e.rdev.1,
            e.name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(e.name.as_bytes());
        out.push(0);
        pad(&mut out);
        out.extend_from_slice(&e.data);
        pad(&mut out);
    }
    out
}

/// A small busybox initramfs that loads the modules for virtio, 9p and
/// overlay (with their dependencies, in load order), cached per kernel.
pub(super) fn build_initramfs(cache: &Path, root: &Path, modules: &Path, release: &str) -> Result<PathBuf, VmError> {
    let busybox_path = which("busybox")?.trim().to_string();
    let mut h = Sha256::new();
    for part in [INIT, &root.display().to_string(), release, &busybox_path] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let name = format!(
        "initramfs-{release}-{:02x}{:02x}{:02x}{:02x}.cpio",
        d[0], d[1], d[2], d[3]
    );
    let path = cache.join("initramfs").join(name);
    if path.exists() {
        return Ok(path);
    }
    // modprobe wants the tree above lib/modules.
    let base = modules
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| failed(format!("{}: unexpected layout", modules.display())))?;
    let mut order: Vec<PathBuf> = Vec::new();
    for m in ["virtio_pci", "virtio_net", "9pnet_virtio", "9p", "overlay"] {
        let out = run(&["modprobe", "-d", path_arg(base)?, "-S", release, "--show-depends", m])?;
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("insmod ") {
                let p = PathBuf::from(rest.split_whitespace().next().unwrap_or_default());
                if !order.contains(&p) {
                    order.push(p);
                }
            } else if !line.starts_with("builtin ") && !line.trim().is_empty() {
                return Err(failed(format!("modprobe --show-depends {m}: {line}")));
            }
        }
    }
    let dir = |name: &str| CpioEntry {
        name: name.into(),
        mode: 0o040755,
        rdev: (0, 0),
        data: Vec::new(),
    };
    let mut entries: Vec<CpioEntry> = ["bin", "mods", "proc", "sys", "dev", "newroot", "lower", "upper"]
        .into_iter()
        .map(dir)
        .collect();
    entries.push(CpioEntry {
        name: "dev/console".into(),
        mode: 0o020600,
        rdev: (5, 1),
        data: Vec::new(),
    });
    let read = |p: &Path| std::fs::read(p).map_err(because(p.display()));
    entries.push(CpioEntry {
        name: "bin/busybox".into(),
        mode: 0o100755,
        rdev: (0, 0),
        data: read(Path::new(&busybox_path))?,
    });
    entries.push(CpioEntry {
        name: "init".into(),
        mode: 0o100755,
        rdev: (0, 0),
        data: INIT.as_bytes().to_vec(),
    });
    let mut list = String::new();
    for p in &order {
        let file = p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (name, data) = if let Some(base) = file.strip_suffix(".xz") {
            (base.to_string(), decompress(&["xz", "-dc"], p)?)
        } else if let Some(base) = file.strip_suffix(".zst") {
            (base.to_string(), decompress(&["zstd", "-dc"], p)?)
        } else {
            (file.clone(), read(p)?)
        };
        list.push_str(&name);
        list.push('\n');
        entries.push(CpioEntry {
            name: format!("mods/{name}"),
            mode: 0o100644,
            rdev: (0, 0),
            data,
        });
    }
    entries.push(CpioEntry {
        name: "modules.list".into(),
        mode: 0o100644,
        rdev: (0, 0),
        data: list.into_bytes(),
    });
    let parent = cache.join("initramfs");
    std::fs::create_dir_all(&parent).map_err(because(parent.display()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, cpio_newc(&entries)).map_err(because(tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(because(path.display()))?;
    Ok(path)
}

pub(super) fn decompress(tool: &[&str], p: &Path) -> Result<Vec<u8>, VmError> {
    let out = Command::new(tool[0])
        .args(&tool[1..])
        .arg(p)
        .stdin(Stdio::null())
        .output()
        .map_err(because(tool[0]))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(failed(format!(
            "{} {}: {}",
            tool.join(" "),
            p.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
