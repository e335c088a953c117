//! Volumes, bind mounts and tmpfs mounts through the docker-style command
//! line, with real containers of the busybox test image.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use berth_integration::{assets, privileged, text, Engine};
use serde_json::Value;

/// Import `bbx`: busybox plus `/srv` holding a file (0640), a symlink, an
/// owned subdirectory (1000:1000, 0750) with a file, and `VOLUME /srv`.
fn import_owned_image(e: &Engine) {
    let dir = e.tmp.path().join("bbx-rootfs");
    let status = Command::new("cp")
        .arg("-a")
        .arg(assets().join("busybox-rootfs"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let srv = dir.join("srv");
    std::fs::create_dir_all(srv.join("owned")).unwrap();
    std::fs::write(srv.join("file"), "image content\n").unwrap();
    std::fs::write(srv.join("owned/inner"), "inner\n").unwrap();
    std::os::unix::fs::symlink("file", srv.join("link")).unwrap();
    let sh = |cmd: &str| {
        let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
        assert!(st.success(), "{cmd}");
    };
    let s = srv.to_str().unwrap();
    sh(&format!(
        "chmod 0640 {s}/file && chown -R 1000:1000 {s}/owned && chmod 0750 {s}/owned && chmod 0755 {s}"
    ));
    let tar = e.tmp.path().join("bbx.tar");
    sh(&format!(
        "tar -C {} --numeric-owner -cf {} .",
        dir.display(),
        tar.display()
    ));
    e.ok(&[
        "import",
        "--change",
        "VOLUME /srv",
        "--change",
        "CMD [\"sh\"]",
        tar.to_str().unwrap(),
        "bbx",
    ]);
}

fn volumes(e: &Engine) -> Vec<String> {
    e.ok(&["volume", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn named_volume_outlives_containers_and_prunes_without_volumes() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "--name",
        "writer",
        "-v",
        "data:/data",
        "bb",
        "sh",
        "-c",
        "printf 'bytes\\001\\n' > /data/f",
    ]);
    let m = &e.inspect("writer")["Mounts"][0];
    assert_eq!(m["Type"], "volume");
    assert_eq!(m["Name"], "data");
    assert_eq!(m["Destination"], "/data");
    assert_eq!(m["Driver"], "local");
    assert_eq!(m["RW"], true);
    let mountpoint = m["Source"].as_str().unwrap().to_string();
    assert!(mountpoint.ends_with("/volumes/data/_data"), "{mountpoint}");
    e.ok(&["rm", "-v", "writer"]);
    assert_eq!(volumes(&e), vec!["data"], "rm -v keeps named volumes");
    let out = e.ok(&["run", "--rm", "-v", "data:/data", "bb", "cat", "/data/f"]);
    assert_eq!(out, "bytes\u{1}\n");
    // Unused now: both prunes without --volumes keep it.
    e.ok(&["create", "--name", "stopped", "bb", "true"]);
    e.ok(&["container", "prune", "-f"]);
    e.ok(&["system", "prune", "-f"]);
    assert_eq!(volumes(&e), vec!["data"]);
    // `system prune --volumes` takes every unused volume, named or anonymous.
    e.ok(&["create", "--name", "anon", "-v", "/anon", "bb", "true"]);
    assert_eq!(volumes(&e).len(), 2);
    e.ok(&["rm", "anon"]);
    let out = e.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(out.contains("Deleted Volumes:"), "{out}");
    assert!(volumes(&e).is_empty(), "{out}");
    e.ok(&["volume", "create", "data"]);
    // In use (even by a stopped container): neither prune -a nor rm takes it.
    e.ok(&["create", "--name", "user", "-v", "data:/data", "bb", "true"]);
    // ps finds the containers using a volume, by name or by mount path.
    let names = |filter: &str| e.ok(&["ps", "-a", "--format", "{{.Names}}", "-f", filter]);
    assert_eq!(names("volume=data"), "user\n");
    assert_eq!(names("volume=/data"), "user\n");
    assert_eq!(names("volume=other"), "");
    e.ok(&["volume", "prune", "-a", "-f"]);
    assert_eq!(volumes(&e), vec!["data"]);
    let out = e.run(&["volume", "rm", "-f", "data"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("in use"),
        "{}",
        text(&out.stderr)
    );
    e.ok(&["rm", "user"]);
    let out = e.ok(&["volume", "prune", "-a", "-f"]);
    assert!(out.contains("data"), "{out}");
    assert!(volumes(&e).is_empty());
    assert!(!std::path::Path::new(&mountpoint).exists());
    // `volume prune` without -a keeps named volumes (Docker 23+), -a takes them.
    e.ok(&["volume", "create", "again"]);
    e.ok(&["volume", "prune", "-f"]);
    assert_eq!(volumes(&e), vec!["again"]);
    e.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(volumes(&e).is_empty());
    e.assert_no_mounts();
}

#[test]
fn volume_commands_and_filters() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    assert_eq!(
        e.ok(&["volume", "create", "--label", "team=a", "v1"])
            .trim(),
        "v1"
    );
    // Create of an existing volume returns it.
    assert_eq!(e.ok(&["volume", "create", "v1"]).trim(), "v1");
    let anon = e.ok(&["volume", "create"]).trim().to_string();
    assert_eq!(anon.len(), 64);
    let v: Value = serde_json::from_str(&e.ok(&["volume", "inspect", "v1"])).unwrap();
    assert_eq!(v[0]["Name"], "v1");
    assert_eq!(v[0]["Driver"], "local");
    assert_eq!(v[0]["Scope"], "local");
    assert_eq!(v[0]["Labels"]["team"], "a");
    assert!(v[0]["Mountpoint"]
        .as_str()
        .unwrap()
        .ends_with("/volumes/v1/_data"));
    assert!(v[0]["CreatedAt"].as_str().unwrap().ends_with('Z'));
    e.ok(&["create", "--name", "cc", "-v", "v1:/x", "bb", "true"]);
    assert_eq!(
        e.ok(&["volume", "ls", "-q", "--filter", "dangling=true"])
            .trim(),
        anon
    );
    assert_eq!(
        e.ok(&["volume", "ls", "-q", "--filter", "dangling=false"])
            .trim(),
        "v1"
    );
    assert_eq!(
        e.ok(&["volume", "ls", "-q", "--filter", "label=team=a"])
            .trim(),
        "v1"
    );
    assert_eq!(
        e.ok(&["volume", "ls", "-q", "--filter", "name=v"]).trim(),
        "v1"
    );
    // One key's values are alternatives.
    let both = e.ok(&[
        "volume",
        "ls",
        "-q",
        "-f",
        "name=v1",
        "-f",
        &format!("name={anon}"),
    ]);
    assert_eq!(both.lines().count(), 2, "{both}");
    e.fails(&["volume", "ls", "-f", "dangling=maybe"], "true or false");
    let json = e.ok(&["volume", "ls", "--format", "json", "--filter", "name=v1"]);
    let line: Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(line["Name"], "v1");
    assert!(e.ok(&["volume", "ls"]).starts_with("DRIVER"));
    // rm -f skips missing volumes, never in-use ones.
    assert_eq!(
        e.run(&["volume", "rm", "-f", "nosuch"]).status.code(),
        Some(0)
    );
    assert_eq!(e.run(&["volume", "rm", "nosuch"]).status.code(), Some(125));
    e.ok(&["rm", "cc"]);
    e.ok(&["volume", "rm", "v1", &anon]);
    assert!(volumes(&e).is_empty());
}

#[test]
fn bind_mounts_rw_ro_and_files() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let host = e.tmp.path().join("host");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("f"), "old\n").unwrap();
    let spec = format!("{}:/h", host.display());
    e.ok(&[
        "run",
        "--rm",
        "-v",
        &spec,
        "bb",
        "sh",
        "-c",
        "echo new > /h/f",
    ]);
    assert_eq!(std::fs::read_to_string(host.join("f")).unwrap(), "new\n");
    let ro = format!("{spec}:ro");
    let out = e.run(&["run", "--rm", "-v", &ro, "bb", "sh", "-c", "echo x > /h/f"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(host.join("f")).unwrap(), "new\n");
    // --mount readonly as well.
    let m = format!("type=bind,source={},target=/h,readonly", host.display());
    let out = e.run(&["run", "--rm", "--mount", &m, "bb", "touch", "/h/g"]);
    assert!(text(&out.stderr).contains("Read-only file system"));
    // A file bind mount.
    let file = format!("{}:/etc/motd", host.join("f").display());
    assert_eq!(
        e.ok(&["run", "--rm", "-v", &file, "bb", "cat", "/etc/motd"]),
        "new\n"
    );
    // -v creates a missing host directory.
    let missing = e.tmp.path().join("made/by/v");
    let spec = format!("{}:/m", missing.display());
    e.ok(&["run", "--name", "cb", "-v", &spec, "bb", "touch", "/m/x"]);
    assert!(missing.join("x").exists());
    let m = &e.inspect("cb")["Mounts"][0];
    assert_eq!(m["Type"], "bind");
    assert_eq!(m["Source"], missing.to_str().unwrap());
    assert_eq!(m["Propagation"], "rprivate");
    e.ok(&["rm", "cb"]);
    e.assert_no_mounts();
}

#[test]
fn copy_up_keeps_content_owners_modes_once() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    import_owned_image(&e);
    let script = "stat -c '%n %u:%g %a' /srv /srv/file /srv/owned /srv/owned/inner; readlink /srv/link; cat /srv/file";
    let in_volume = e.ok(&["run", "--rm", "-v", "cu:/srv", "bbx", "sh", "-c", script]);
    assert_eq!(
        in_volume,
        "/srv 0:0 755\n/srv/file 0:0 640\n/srv/owned 1000:1000 750\n/srv/owned/inner 1000:1000 644\nfile\nimage content\n"
    );
    // On the host too, with the link a link.
    let data = e.root().join("volumes/cu/_data");
    let meta = std::fs::metadata(data.join("owned")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1000, 1000, 0o750)
    );
    assert!(std::fs::symlink_metadata(data.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Changed, then emptied: a second container does not copy again.
    e.ok(&[
        "run",
        "--rm",
        "-v",
        "cu:/srv",
        "bbx",
        "sh",
        "-c",
        "echo changed > /srv/file; rm -rf /srv/owned /srv/link",
    ]);
    let out = e.ok(&[
        "run",
        "--rm",
        "-v",
        "cu:/srv",
        "bbx",
        "sh",
        "-c",
        "ls /srv; cat /srv/file",
    ]);
    assert_eq!(out, "file\nchanged\n");
    e.ok(&[
        "run",
        "--rm",
        "-v",
        "cu:/srv",
        "bbx",
        "rm",
        "-f",
        "/srv/file",
    ]);
    let out = e.ok(&["run", "--rm", "-v", "cu:/srv", "bbx", "ls", "-A", "/srv"]);
    assert_eq!(out, "", "no second copy-up into an emptied volume");
    // A non-empty volume is not copied into; nocopy turns copy-up off.
    e.ok(&["run", "--rm", "-v", "pre:/x", "bb", "touch", "/x/mine"]);
    let out = e.ok(&["run", "--rm", "-v", "pre:/srv", "bbx", "ls", "/srv"]);
    assert_eq!(out, "mine\n");
    let out = e.ok(&[
        "run",
        "--rm",
        "-v",
        "nc:/srv:nocopy",
        "bbx",
        "ls",
        "-A",
        "/srv",
    ]);
    assert_eq!(out, "");
    let out = e.ok(&[
        "run",
        "--rm",
        "--mount",
        "source=nc2,target=/srv,volume-nocopy",
        "bbx",
        "ls",
        "-A",
        "/srv",
    ]);
    assert_eq!(out, "");
    // Symlinks in the image stay symlinks (busybox's /bin).
    let out = e.ok(&["run", "--rm", "-v", "bin:/bin", "bb", "readlink", "/bin/ls"]);
    assert!(out.trim().ends_with("busybox"), "{out}");
}

#[test]
fn image_volumes_are_anonymous_and_go_with_rm_v() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    import_owned_image(&e);
    e.ok(&["create", "--name", "ca", "bbx", "true"]);
    let vols = volumes(&e);
    assert_eq!(vols.len(), 1, "{vols:?}");
    assert_eq!(vols[0].len(), 64);
    let m = &e.inspect("ca")["Mounts"][0];
    assert_eq!(m["Destination"], "/srv");
    assert_eq!(m["Name"], vols[0].as_str());
    // Copy-up into the anonymous volume.
    e.ok(&["start", "ca"]);
    e.ok(&["wait", "ca"]);
    let data = e.root().join("volumes").join(&vols[0]).join("_data/file");
    assert_eq!(std::fs::read_to_string(data).unwrap(), "image content\n");
    // A mount on that path replaces the image's VOLUME.
    e.ok(&["create", "--name", "cb", "-v", "named:/srv", "bbx", "true"]);
    assert_eq!(volumes(&e).len(), 2);
    // --volumes-from shares a's anonymous volume, read-only with :ro.
    let out = e.run(&[
        "run",
        "--rm",
        "--volumes-from",
        "ca:ro",
        "bb",
        "sh",
        "-c",
        "cat /srv/file; touch /srv/x",
    ]);
    assert_eq!(text(&out.stdout), "image content\n");
    assert!(text(&out.stderr).contains("Read-only file system"));
    assert_eq!(volumes(&e).len(), 2, "--rm kept the shared volume");
    e.ok(&["rm", "-v", "ca", "cb"]);
    assert_eq!(
        volumes(&e),
        vec!["named"],
        "rm -v removes anonymous volumes only"
    );
    // run --rm removes its anonymous volumes.
    e.ok(&["run", "--rm", "-v", "/scratch", "bbx", "true"]);
    assert_eq!(volumes(&e), vec!["named"]);
}

#[test]
fn tmpfs_mounts_have_a_size_and_forget_on_restart() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    let out = e.run(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,target=/t,tmpfs-size=1m",
        "bb",
        "sh",
        "-c",
        "dd if=/dev/zero of=/t/big bs=1k count=2048",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("No space left on device"),
        "{}",
        text(&out.stderr)
    );
    e.ok(&[
        "run",
        "-d",
        "--name",
        "tt",
        "--mount",
        "type=tmpfs,dst=/t,tmpfs-mode=1777",
        "bb",
        "sleep",
        "300",
    ]);
    e.ok(&["exec", "tt", "sh", "-c", "echo kept > /t/f"]);
    assert_eq!(e.ok(&["exec", "tt", "stat", "-c", "%a", "/t"]), "1777\n");
    e.ok(&["restart", "-t", "1", "tt"]);
    let out = e.run(&["exec", "tt", "cat", "/t/f"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "tmpfs content survived a restart"
    );
    // A volume of the local driver on tmpfs: mounted while used, gone after.
    e.ok(&[
        "volume",
        "create",
        "--opt",
        "type=tmpfs",
        "--opt",
        "device=tmpfs",
        "--opt",
        "o=size=1m",
        "tv",
    ]);
    e.ok(&[
        "run", "-d", "--name", "uu", "-v", "tv:/tv", "bb", "sleep", "300",
    ]);
    let out = e.run(&[
        "exec",
        "uu",
        "dd",
        "if=/dev/zero",
        "of=/tv/big",
        "bs=1k",
        "count=2048",
    ]);
    assert!(text(&out.stderr).contains("No space left on device"));
    e.ok(&["rm", "-f", "tt", "uu"]);
    e.assert_no_mounts();
}

#[test]
fn two_containers_share_a_volume() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&[
        "run",
        "-d",
        "--name",
        "one",
        "-v",
        "shared:/s",
        "bb",
        "sleep",
        "300",
    ]);
    e.ok(&[
        "run",
        "-d",
        "--name",
        "two",
        "--mount",
        "source=shared,target=/s",
        "bb",
        "sleep",
        "300",
    ]);
    e.ok(&["exec", "one", "sh", "-c", "echo from-one > /s/a"]);
    assert_eq!(e.ok(&["exec", "two", "cat", "/s/a"]), "from-one\n");
    e.ok(&["exec", "two", "sh", "-c", "echo from-two > /s/b"]);
    assert_eq!(e.ok(&["exec", "one", "cat", "/s/b"]), "from-two\n");
    let out = e.run(&["volume", "rm", "shared"]);
    assert_eq!(out.status.code(), Some(125));
    e.ok(&["rm", "-f", "one", "two"]);
    e.ok(&["volume", "rm", "shared"]);
}

#[test]
fn bad_input_is_one_line_exit_125_and_changes_nothing() {
    if !privileged() {
        return;
    }
    let e = Engine::with_busybox();
    e.ok(&["volume", "create", "keep"]);
    e.ok(&["create", "--name", "user", "-v", "keep:/k", "bb", "true"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "-v", "data:relative", "bb", "true"],
            "must be absolute",
        ),
        (&["run", "-v", "relative", "bb", "true"], "must be absolute"),
        (
            &["run", "-v", "a::/x", "bb", "true"],
            "invalid volume specification",
        ),
        (
            &["run", "-v", ":/x", "bb", "true"],
            "invalid volume specification",
        ),
        (
            &["run", "-v", "/x:", "bb", "true"],
            "invalid volume specification",
        ),
        (
            &["run", "-v", "a:/b:ro:z", "bb", "true"],
            "invalid volume specification",
        ),
        (&["run", "-v", "vol:/x:bogus", "bb", "true"], "invalid mode"),
        (
            &[
                "run",
                "--mount",
                "type=volume,src=v,dst=/x,color=red",
                "bb",
                "true",
            ],
            "unexpected key",
        ),
        (
            &[
                "run",
                "--mount",
                "type=bind,src=/no/such/dir,dst=/x",
                "bb",
                "true",
            ],
            "does not exist",
        ),
        (
            &["run", "--mount", "type=bind,dst=/x", "bb", "true"],
            "Source",
        ),
        (
            &["run", "--mount", "type=volume,src=v,dst=rel", "bb", "true"],
            "must be absolute",
        ),
        (
            &["run", "-v", "bad$name:/x", "bb", "true"],
            "invalid characters",
        ),
        (
            &["run", "-v", "ok1:/x", "-v", "ok2:/x", "bb", "true"],
            "duplicate mount point",
        ),
        (&["volume", "create", "bad$name"], "invalid characters"),
        (
            &["volume", "create", "--opt", "colour=red", "x1"],
            "invalid option",
        ),
        (&["volume", "rm", "keep"], "in use"),
        (
            &["run", "--volumes-from", "nosuch", "bb", "true"],
            "no such container",
        ),
    ];
    for (args, needle) in cases {
        let out = e.run(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} lacks {needle:?}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    }
    assert_eq!(volumes(&e), vec!["keep"], "no volume created or removed");
    let ps = e.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(ps.trim(), "user", "no container created");
    assert!(!std::path::Path::new("/no/such/dir").exists());
}
