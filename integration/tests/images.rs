//! Images: load, tag, push, pull, login, save/load, import, rmi, against a real
//! registry (Debian's docker-registry on 127.0.0.1) and a misbehaving fake one.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_integration::fake_registry::{digest_of, FakeRegistry, Route};
use berth_integration::registry::LocalRegistry;
use berth_integration::{assets, privileged, read_json, text, Engine};
use serde_json::{json, Value};

/// Load the busybox OCI test image; returns its image id.
fn load_busybox(e: &Engine) -> String {
    let tar = e.busybox_oci_tar();
    let out = e.ok(&["load", "-i", tar.to_str().unwrap()]);
    out.lines()
        .find_map(|l| l.strip_prefix("Loaded image ID: "))
        .unwrap_or_else(|| panic!("no image id in {out:?}"))
        .trim()
        .to_string()
}

fn pushed_digest(out: &str) -> String {
    out.split("digest: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in {out:?}"))
        .to_string()
}

/// The busybox test image's blobs: (manifest bytes, config bytes, layer bytes).
fn busybox_blobs() -> (Vec<u8>, Vec<u8>, Vec<u8>, Value) {
    let layout = assets().join("busybox-oci");
    let index = read_json(&layout.join("index.json"));
    let blob = |d: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let config = blob(m["config"]["digest"].as_str().unwrap());
    let layer = blob(m["layers"][0]["digest"].as_str().unwrap());
    (manifest, config, layer, m)
}

/// A copy of the busybox OCI layout with another config (same layer), as a tar.
fn second_image_tar(e: &Engine) -> std::path::PathBuf {
    let dir = e.tmp.path().join("second-oci");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(assets().join("busybox-oci"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let (_, config, _, mut manifest) = busybox_blobs();
    let mut config: Value = serde_json::from_slice(&config).unwrap();
    config["config"]["Cmd"] = json!(["echo", "second"]);
    let config = serde_json::to_vec(&config).unwrap();
    let write = |data: &[u8]| {
        let d = digest_of(data);
        std::fs::write(
            dir.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
            data,
        )
        .unwrap();
        d
    };
    manifest["config"]["digest"] = json!(write(&config));
    manifest["config"]["size"] = json!(config.len());
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let mdigest = write(&manifest);
    let mut index = read_json(&dir.join("index.json"));
    index["manifests"][0]["digest"] = json!(mdigest);
    index["manifests"][0]["size"] = json!(manifest.len());
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let tar = e.tmp.path().join("second.tar");
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    tar
}

#[test]
fn push_pull_round_trip_shares_layers() {
    if !privileged() {
        return;
    }
    let registry = LocalRegistry::start(None);
    let local = Engine::new();
    let id = load_busybox(&local);
    let name = format!("{}/test/busybox:1", registry.addr);
    local.ok(&["tag", &id, &name]);
    let digest = pushed_digest(&local.ok(&["push", "-q", &name]));
    // The same image under another repository of that registry: its blobs are
    // mounted from test/busybox, and the manifest digest is the same.
    let copy = format!("{}/test/copy:1", registry.addr);
    local.ok(&["tag", &name, &copy]);
    assert_eq!(pushed_digest(&local.ok(&["push", "-q", &copy])), digest);
    // A second image with the same layer and another config.
    let second = second_image_tar(&local);
    let out = local.ok(&["load", "-i", second.to_str().unwrap()]);
    let second_id = out
        .split("Loaded image ID: ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let name2 = format!("{}/test/other:2", registry.addr);
    local.ok(&["tag", &second_id, &name2]);
    local.ok(&["push", "-q", &name2]);

    let fresh = Engine::new();
    fresh.ok(&["pull", "-q", &name]);
    let inspect: Value = serde_json::from_str(&fresh.ok(&["image", "inspect", &name])).unwrap();
    assert_eq!(
        inspect[0]["Manifest"],
        json!(digest),
        "pulled the pushed manifest"
    );
    assert_eq!(inspect[0]["Id"], json!(id));
    let ids = fresh.ok(&["images", "-q"]);
    assert_eq!(ids.lines().count(), 1, "images lists it once: {ids}");
    let blobs = fresh.blobs();
    assert_eq!(blobs.len(), 3, "manifest, config, layer: {blobs:?}");
    let snapshots = fresh.snapshot_dirs();
    assert_eq!(snapshots.len(), 1, "one layer, one snapshot: {snapshots:?}");
    assert!(
        snapshots[0].join("bin/busybox").is_file(),
        "the layer is unpacked"
    );
    assert!(blobs.iter().all(|(_, ok)| *ok), "every blob verifies");

    fresh.ok(&["pull", "-q", &name2]);
    let blobs = fresh.blobs();
    assert_eq!(blobs.len(), 5, "the shared layer is stored once: {blobs:?}");
    assert_eq!(fresh.snapshot_dirs().len(), 1, "and unpacked once");

    let out = fresh.ok(&["rmi", &name]);
    assert!(out.contains("Untagged:"), "{out}");
    assert_eq!(
        fresh.blobs().len(),
        3,
        "the layer stays while the other image uses it"
    );
    fresh.ok(&["rmi", &name2]);
    assert!(
        fresh.blobs().is_empty(),
        "nothing left after the last image goes"
    );
    assert_eq!(fresh.ok(&["images", "-q"]).trim(), "");
}

#[test]
fn login_is_needed_for_a_protected_registry() {
    if !privileged() {
        return;
    }
    let registry = LocalRegistry::start(Some(("berth", "s3cret")));
    let e = Engine::new();
    let id = load_busybox(&e);
    let name = format!("{}/private/busybox:1", registry.addr);
    e.ok(&["tag", &id, &name]);
    let out = e.run(&["push", "-q", &name]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).to_lowercase().contains("unauthorized"),
        "{}",
        text(&out.stderr)
    );

    let mut login = e.command(&["login", "-u", "berth", "--password-stdin", &registry.addr]);
    login
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = login.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Login Succeeded"));
    let auth_file = e.tmp.path().join("config/berth/auth.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&auth_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "credentials file must be private");

    e.ok(&["push", "-q", &name]);
    e.ok(&["rmi", &name]);
    e.ok(&["pull", "-q", &name]);

    let out = e.ok(&["logout", &registry.addr]);
    assert!(out.contains("Removing login credentials"), "{out}");
    assert!(!std::fs::read_to_string(&auth_file)
        .unwrap()
        .contains(&registry.addr));
    e.ok(&["rmi", &name]);
    let out = e.run(&["pull", "-q", &name]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).to_lowercase().contains("unauthorized"));
}

#[test]
fn bad_registry_answers_fail_cleanly() {
    if !privileged() {
        return;
    }
    let (manifest, config, layer, m) = busybox_blobs();
    let mtype = "application/vnd.oci.image.manifest.v1+json";
    let layer_digest = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let config_digest = m["config"]["digest"].as_str().unwrap().to_string();
    let mut corrupt = layer.clone();
    corrupt[1000] ^= 0xff;
    let mut routes = HashMap::new();
    routes.insert(
        "/v2/".to_string(),
        Route::ok("application/json", b"{}".to_vec()),
    );
    for repo in ["corrupt", "truncated"] {
        routes.insert(
            format!("/v2/{repo}/manifests/latest"),
            Route::ok(mtype, manifest.clone()),
        );
        routes.insert(
            format!("/v2/{repo}/blobs/{config_digest}"),
            Route::ok("application/octet-stream", config.clone()),
        );
    }
    routes.insert(
        format!("/v2/corrupt/blobs/{layer_digest}"),
        Route::ok("application/octet-stream", corrupt),
    );
    let mut truncated = Route::ok("application/octet-stream", layer.clone());
    truncated.truncate_at = Some(layer.len() / 2);
    routes.insert(format!("/v2/truncated/blobs/{layer_digest}"), truncated);
    routes.insert(
        "/v2/garbage/manifests/latest".to_string(),
        Route::ok(mtype, b"{this is not a manifest".to_vec()),
    );
    let fake = FakeRegistry::start(routes);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let e = Engine::new();
    let cases = [
        (
            format!("{}/corrupt:latest", fake.addr),
            layer_digest.clone(),
        ),
        (
            format!("{}/truncated:latest", fake.addr),
            layer_digest.clone(),
        ),
        (
            format!("{}/garbage:latest", fake.addr),
            "manifest".to_string(),
        ),
        (
            format!("{}/missing:latest", fake.addr),
            "not found".to_string(),
        ),
        (format!("{closed}/refused:latest"), closed.clone()),
    ];
    for (name, needle) in cases {
        let out = e.run(&["pull", "-q", &name]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{name}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{name}: not one line: {stderr}"
        );
        assert!(
            stderr.to_lowercase().contains(&needle.to_lowercase()),
            "{name}: {stderr:?} does not name {needle:?}"
        );
        assert!(
            e.blobs().is_empty(),
            "{name}: blobs left behind: {:?}",
            e.blobs()
        );
        assert_eq!(e.ok(&["images", "-q"]).trim(), "", "{name}: image recorded");
        // Layers are unpacked while they download: a failed download leaves no snapshot.
        assert_eq!(
            e.snapshots(),
            Vec::<String>::new(),
            "{name}: snapshots left"
        );
    }
}

/// Routes of a fake registry serving `big:latest`, an image of one uncompressed
/// layer `layer`; returns them with the layer's digest.
fn one_layer_image(layer: Vec<u8>) -> (HashMap<String, Route>, String) {
    let layer_digest = digest_of(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
    }))
    .unwrap();
    let config_digest = digest_of(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}]
    }))
    .unwrap();
    let mut routes = HashMap::new();
    routes.insert(
        "/v2/".to_string(),
        Route::ok("application/json", b"{}".to_vec()),
    );
    routes.insert(
        "/v2/big/manifests/latest".to_string(),
        Route::ok("application/vnd.oci.image.manifest.v1+json", manifest),
    );
    routes.insert(
        format!("/v2/big/blobs/{config_digest}"),
        Route::ok("application/octet-stream", config),
    );
    routes.insert(
        format!("/v2/big/blobs/{layer_digest}"),
        Route::ok("application/octet-stream", layer),
    );
    (routes, layer_digest)
}

#[test]
fn killed_pull_resumes() {
    if !privileged() {
        return;
    }
    // A 12 MiB layer (a tar of one random file) served slowly, so the pull can be killed in the middle.
    let e = Engine::new();
    let layer = random_tar(&e, 12 << 20);
    let layer_bytes = layer.clone();
    let (mut routes, layer_digest) = one_layer_image(layer);
    let route = format!("/v2/big/blobs/{layer_digest}");
    if let Some(slow) = routes.get_mut(&route) {
        slow.throttle = Some(Duration::from_millis(15));
    }
    let fake = FakeRegistry::start(routes);
    let name = format!("{}/big:latest", fake.addr);
    let mut child = e.command(&["pull", "-q", &name]).spawn().unwrap();
    let ingest = e.root().join("content/ingest");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let partial: u64 = walk_sizes(&ingest);
        if partial > 2 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the pull never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        e.ok(&["images", "-q"]).trim().is_empty(),
        "a killed pull records no image"
    );
    // Faster the second time.
    fake.set(&route, Route::ok("application/octet-stream", layer_bytes));
    e.ok(&["pull", "-q", &name]);
    let ranged = fake.requests.lock().unwrap().iter().any(|(line, range)| {
        line.contains(layer_digest.as_str()) && range.as_deref().is_some_and(|r| r != "bytes=0-")
    });
    assert!(ranged, "the second pull resumed with a Range request");
    assert!(e.blobs().iter().all(|(_, ok)| *ok), "every blob verifies");
    assert_eq!(e.blobs().len(), 3);
}

/// A tmpfs mounted over a directory for the length of a test.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0755").as_str()),
        )
        .expect("mount tmpfs");
        Tmpfs(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        nix::mount::mount(
            None::<&str>,
            &self.0,
            None::<&str>,
            nix::mount::MsFlags::MS_REMOUNT,
            Some(format!("size={size}").as_str()),
        )
        .expect("resize tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A pull onto a full disk fails with one clear line and loses nothing: the image
/// already there stays whole, the failed pull leaves no image record and no
/// snapshot, and once there is room the same pull completes with every blob whole.
#[test]
fn pull_onto_a_full_disk_fails_cleanly() {
    if !privileged() {
        return;
    }
    let e = Engine::new();
    // The whole state directory on a 20 MiB tmpfs: the 12 MiB layer's blob fits,
    // the blob and its unpacked copy do not.
    let root = e.root();
    let config = std::fs::read(root.join("config.json")).unwrap();
    let disk = Tmpfs::mount(&root, "20m");
    std::fs::write(root.join("config.json"), config).unwrap();
    let busybox = load_busybox(&e);
    let (images, blobs, snapshots) = (e.ok(&["images", "-q"]), e.blobs(), e.snapshot_dirs());
    let (routes, _) = one_layer_image(random_tar(&e, 12 << 20));
    let fake = FakeRegistry::start(routes);
    let name = format!("{}/big:latest", fake.addr);

    e.fails(&["pull", "-q", &name], "No space left on device");
    assert_eq!(e.ok(&["images", "-q"]), images, "no image recorded");
    assert_eq!(e.snapshot_dirs(), snapshots, "no snapshot left");
    let now = e.blobs();
    assert!(
        now.iter().all(|(_, ok)| *ok),
        "every blob verifies: {now:?}"
    );
    assert!(blobs.iter().all(|b| now.contains(b)), "no blob lost");
    e.ok(&["image", "inspect", &busybox]);

    disk.resize("64m");
    e.ok(&["pull", "-q", &name]);
    assert_eq!(e.ok(&["images", "-q"]).lines().count(), 2);
    assert!(e.blobs().iter().all(|(_, ok)| *ok), "every blob verifies");
    drop(disk);
}

/// A tar holding one file of `size` pseudo-random bytes.
fn random_tar(e: &Engine, size: usize) -> Vec<u8> {
    let dir = e.tmp.path().join("random-layer");
    std::fs::create_dir_all(&dir).unwrap();
    let mut data = vec![0u8; size];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(dir.join("random.bin"), data).unwrap();
    let tar = e.tmp.path().join("random-layer.tar");
    let status = std::process::Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-C"])
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .arg("random.bin")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(tar).unwrap()
}

fn walk_sizes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            total += walk_sizes(&entry.path());
        } else {
            total += meta.len();
        }
    }
    total
}

#[test]
fn save_load_and_import() {
    if !privileged() {
        return;
    }
    let e = Engine::new();
    let id = load_busybox(&e);
    e.ok(&["tag", &id, "saved/busybox:1"]);
    for format in ["docker", "oci"] {
        let archive = e.tmp.path().join(format!("saved-{format}.tar"));
        e.ok(&[
            "save",
            "--format",
            format,
            "-o",
            archive.to_str().unwrap(),
            "saved/busybox:1",
        ]);
        let other = Engine::new();
        let out = other.ok(&["load", "-i", archive.to_str().unwrap()]);
        assert!(
            out.contains("Loaded image: saved/busybox:1"),
            "{format}: {out}"
        );
        let inspect: Value =
            serde_json::from_str(&other.ok(&["image", "inspect", "saved/busybox:1"])).unwrap();
        assert_eq!(
            inspect[0]["Id"],
            json!(id),
            "{format}: same image id after the round trip"
        );
        // `save | gzip` loads too, as with `docker load`.
        let gz = std::process::Command::new("gzip")
            .args(["-k", "-f", archive.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(gz.success());
        let zipped = archive.with_extension("tar.gz");
        let third = Engine::new();
        let out = third.ok(&["load", "-i", zipped.to_str().unwrap()]);
        assert!(
            out.contains("Loaded image: saved/busybox:1"),
            "{format} gzip: {out}"
        );
    }
    let xz = e.tmp.path().join("x.tar.xz");
    std::fs::write(
        &xz,
        [&[0xfd, b'7', b'z', b'X', b'Z', 0][..], b"..."].concat(),
    )
    .unwrap();
    e.fails(&["load", "-i", xz.to_str().unwrap()], "xz-compressed");
    if Path::new("/usr/bin/skopeo").exists() {
        let archive = e.tmp.path().join("skopeo.tar");
        let oci = format!("oci:{}:latest", assets().join("busybox-oci").display());
        let out = std::process::Command::new("skopeo")
            .args([
                "copy",
                &oci,
                &format!("docker-archive:{}:sk/busybox:1", archive.display()),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo: {}", text(&out.stderr));
        let other = Engine::new();
        let out = other.ok(&["load", "-i", archive.to_str().unwrap()]);
        assert!(out.contains("sk/busybox:1"), "{out}");
        assert!(other.ok(&["images"]).contains("sk/busybox"));
    } else {
        eprintln!("skopeo not installed: skipping the skopeo archive check");
    }
    let rootfs_tar = assets().join("busybox-rootfs.tar");
    let out = e.ok(&[
        "import",
        "--change",
        "CMD [\"sh\", \"-c\", \"echo imported\"]",
        rootfs_tar.to_str().unwrap(),
        "imported:1",
    ]);
    assert!(out.trim().starts_with("sha256:"), "{out}");
    let inspect: Value = serde_json::from_str(&e.ok(&["image", "inspect", "imported:1"])).unwrap();
    assert_eq!(
        inspect[0]["Config"]["Cmd"],
        json!(["sh", "-c", "echo imported"])
    );
    let rows = e.ok(&["images", "--format", "json"]);
    assert_eq!(
        rows.lines().count(),
        2,
        "saved/busybox and imported (tagging ended the dangling entry): {rows}"
    );
    let out = e.run(&["rmi", "no-such-image:9"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("no-such-image"));
}

#[test]
fn skopeo_interoperates() {
    if !privileged() {
        return;
    }
    if !Path::new("/usr/bin/skopeo").exists() {
        eprintln!("skipped: skopeo is not installed (cargo xtask test installs it)");
        return;
    }
    let skopeo = |args: &[&str]| {
        let out = std::process::Command::new("skopeo")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let registry = LocalRegistry::start(None);
    let e = Engine::new();
    let id = load_busybox(&e);
    let pushed = format!("{}/interop/berth:1", registry.addr);
    e.ok(&["tag", &id, &pushed]);
    let digest = pushed_digest(&e.ok(&["push", "-q", &pushed]));
    // What berth pushed, skopeo reads and copies.
    let info: Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{pushed}"),
    ]))
    .unwrap();
    assert_eq!(info["Digest"], json!(digest));
    let copied = format!("{}/interop/copied:1", registry.addr);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{pushed}"),
        &format!("docker://{copied}"),
    ]);
    // What skopeo pushed, berth pulls.
    let from_skopeo = format!("{}/interop/skopeo:1", registry.addr);
    let oci = format!("oci:{}:latest", assets().join("busybox-oci").display());
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &oci,
        &format!("docker://{from_skopeo}"),
    ]);
    let fresh = Engine::new();
    fresh.ok(&["pull", "-q", &copied]);
    fresh.ok(&["pull", "-q", &from_skopeo]);
    assert!(fresh.blobs().iter().all(|(_, ok)| *ok));
    // An oci-archive made by skopeo loads.
    let archive = e.tmp.path().join("skopeo-oci.tar");
    skopeo(&[
        "copy",
        &oci,
        &format!("oci-archive:{}:sk/oci:1", archive.display()),
    ]);
    let out = fresh.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains("Loaded image: sk/oci:1"), "{out}");
}

/// As Docker's: `run` and `create` pull an image that is not here (saying so
/// on stderr, the container's output alone on stdout), `--pull always` pulls
/// anyway, `--pull never` does not; a pull that fails creates nothing.
#[test]
fn run_pulls_a_missing_image() {
    if !privileged() {
        return;
    }
    let registry = LocalRegistry::start(None);
    let local = Engine::new();
    let id = load_busybox(&local);
    let name = format!("{}/test/runme:1", registry.addr);
    local.ok(&["tag", &id, &name]);
    local.ok(&["push", "-q", &name]);

    let e = Engine::new();
    let out = e.run(&["run", "--rm", "--network", "none", &name, "echo", "hi"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "hi\n");
    assert!(
        stderr.starts_with(&format!("Unable to find image '{name}' locally\n")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("Status: Downloaded newer image for {name}")),
        "{stderr}"
    );
    assert_eq!(e.ok(&["images", "-q"]).trim(), &id[7..19]);
    // Here now: no pull, nothing on stderr.
    let out = e.run(&["run", "--rm", "--network", "none", &name, "true"]);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (Some(0), String::new())
    );
    let out = e.run(&[
        "create",
        "-q",
        "--pull",
        "always",
        "--network",
        "none",
        &name,
    ]);
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (Some(0), String::new())
    );

    drop(registry);
    let containers = e.ok(&["ps", "-a", "-q"]);
    let blobs = e.blobs();
    let out = e.run(&[
        "run",
        "--pull",
        "always",
        "--network",
        "none",
        &name,
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let absent = format!("{}/test/absent:1", local_closed_addr());
    e.fails(&["create", "--pull", "never", &absent], "berth pull");
    let out = e.run(&["run", "--network", "none", &absent, "true"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.starts_with("Unable to find image"), "{stderr}");
    assert_eq!(e.ok(&["ps", "-a", "-q"]), containers, "nothing created");
    assert_eq!(e.blobs(), blobs, "nothing stored");
    // The image that is here still runs without the registry.
    assert_eq!(
        e.ok(&["run", "--rm", "--network", "none", &name, "echo", "ok"]),
        "ok\n"
    );
}

/// A loopback address where nothing listens.
fn local_closed_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}
