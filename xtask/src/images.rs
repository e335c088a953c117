//! `cargo xtask test-images`: test images built offline from Debian's
//! busybox-static, as a rootfs dir, a rootfs tarball and an OCI image layout.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::util::{ensure_packages, run};

/// Bump when the layout of the generated images changes.
const GENERATOR_VERSION: &str = "1";
const BUSYBOX: &str = "/bin/busybox";

/// Paths of the generated test images.
pub struct TestImages {
    /// The directory holding all of them.
    pub dir: PathBuf,
}

impl TestImages {
    /// Rootfs directory with busybox, its applet links, /etc/passwd and /etc/group.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("busybox-rootfs")
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Build (or reuse, when busybox and the generator are unchanged) the test images under `target`.
pub fn build(target: &Path) -> Result<TestImages> {
    ensure_packages(&[("busybox-static", BUSYBOX)])?;
    let dir = target.join("test-images");
    let busybox = std::fs::read(BUSYBOX).with_context(|| format!("read {BUSYBOX}"))?;
    let stamp = format!("{GENERATOR_VERSION} {}", sha256_hex(&busybox));
    let stamp_file = dir.join("stamp");
    if std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(TestImages { dir });
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let images = TestImages { dir: dir.clone() };
    make_rootfs(&images.rootfs(), &busybox)?;
    let tar_bytes = rootfs_tar(&images.rootfs())?;
    std::fs::write(dir.join("busybox-rootfs.tar"), &tar_bytes)?;
    make_oci_layout(&dir.join("busybox-oci"), &tar_bytes)?;
    std::fs::write(&stamp_file, stamp)?;
    println!("test images in {}", dir.display());
    Ok(images)
}

fn make_rootfs(root: &Path, busybox: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "home",
        "var/tmp", "run",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::set_permissions(
        root.join("var/tmp"),
        std::fs::Permissions::from_mode(0o1777),
    )?;
    std::fs::set_permissions(root.join("root"), std::fs::Permissions::from_mode(0o700))?;
    let bin = root.join("bin/busybox");
    std::fs::write(&bin, busybox)?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    let list = run(std::process::Command::new(BUSYBOX).arg("--list-full"))?;
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if applet == "bin/busybox" {
            continue;
        }
        let link = root.join(applet);
        let depth = Path::new(applet).components().count() - 1;
        let target = format!("{}bin/busybox", "../".repeat(depth));
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(&target, &link)?;
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nberth:x:1000:1000:berth test user:/home/berth:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\ndaemon:x:1:\nberth:x:1000:\nnogroup:x:65534:\n",
    )?;
    std::fs::create_dir_all(root.join("home/berth"))?;
    std::os::unix::fs::chown(root.join("home/berth"), Some(1000), Some(1000))?;
    Ok(())
}

/// A reproducible tar of the rootfs (sorted, mtime 0, owners as on disk).
fn rootfs_tar(root: &Path) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    let mut paths = Vec::new();
    collect(root, root, &mut paths)?;
    paths.sort();
    for rel in paths {
        builder
            .append_path_with_name(root.join(&rel), &rel)
            .with_context(|| format!("tar {}", rel.display()))?;
    }
    Ok(builder.into_inner()?)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        out.push(path.strip_prefix(root)?.to_path_buf());
        if entry.file_type()?.is_dir() {
            collect(root, &path, out)?;
        }
    }
    Ok(())
}

fn write_blob(layout: &Path, data: &[u8]) -> Result<String> {
    let digest = sha256_hex(data);
    let path = layout.join("blobs/sha256").join(&digest);
    std::fs::write(&path, data)?;
    Ok(format!("sha256:{digest}"))
}

fn make_oci_layout(layout: &Path, layer_tar: &[u8]) -> Result<()> {
    std::fs::create_dir_all(layout.join("blobs/sha256"))?;
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let diff_id = format!("sha256:{}", sha256_hex(layer_tar));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(layer_tar)?;
    let layer = gz.finish()?;
    let layer_digest = write_blob(layout, &layer)?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("unsupported architecture {other}"),
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"]
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "cargo xtask test-images (busybox-static)"}]
    });
    let config = serde_json::to_vec(&config)?;
    let config_digest = write_blob(layout, &config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}]
    });
    let manifest = serde_json::to_vec(&manifest)?;
    let manifest_digest = write_blob(layout, &manifest)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
            "platform": {"architecture": arch, "os": "linux"}
        }]
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec_pretty(&index)?,
    )?;
    Ok(())
}
