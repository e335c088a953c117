//! `diff`, `commit` and `export`: a container's filesystem changes, listed,
//! made into an image, or written out as a tar.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use berth_engine::containers::commit::CommitOptions;
use berth_engine::containers::Containers;
use clap::Args;

/// `diff` flags.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The container.
    container: String,
}

/// `commit` flags.
#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author of the image (as `Name <email>`).
    #[arg(short, long)]
    author: Option<String>,
    /// Dockerfile instruction to apply to the image's config (CMD, ENTRYPOINT,
    /// ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME); repeatable.
    #[arg(short, long)]
    change: Vec<String>,
    /// Commit message (the history entry's comment).
    #[arg(short, long)]
    message: Option<String>,
    /// Freeze the container while its changes are read (--pause=false: do not).
    #[arg(short, long, num_args = 0..=1, require_equals = true, default_value_t = true, default_missing_value = "true", action = clap::ArgAction::Set)]
    pause: bool,
    /// The container.
    container: String,
    /// Name of the new image (REPOSITORY[:TAG]); without it the image is dangling.
    name: Option<String>,
}

/// `export` flags.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to this file instead of stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// The container.
    container: String,
}

/// `diff`: one `A|C|D PATH` line per change.
pub fn diff(containers: &Containers, args: DiffArgs) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    for c in containers.changes(&args.container)? {
        writeln!(out, "{} {}", c.kind.letter(), c.path.display())?;
    }
    Ok(0)
}

/// `commit`: prints the new image's id.
pub fn commit(containers: &Containers, args: CommitArgs) -> anyhow::Result<i32> {
    let opts = CommitOptions {
        name: args.name,
        changes: crate::image_cmd::parse_changes(&args.change)?,
        message: args.message,
        author: args.author,
        pause: args.pause,
    };
    let id = containers.commit(&args.container, &opts)?;
    println!("{id}");
    Ok(0)
}

/// `export`: the container's filesystem as a tar, to `-o FILE` or stdout.
pub fn export(containers: &Containers, args: ExportArgs) -> anyhow::Result<i32> {
    write_archive(args.output.as_deref(), |w| {
        Ok(containers.export(&args.container, w)?)
    })?;
    Ok(0)
}

/// Write an archive to `path`, whole or not at all (a partial file is removed
/// on failure), or to stdout unless it is a terminal.
pub(crate) fn write_archive(
    path: Option<&Path>,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let Some(path) = path else {
        let mut stdout = std::io::stdout().lock();
        if stdout.is_terminal() {
            bail!("refusing to write an archive to a terminal: use -o FILE or redirect stdout");
        }
        write(&mut stdout)?;
        return Ok(stdout.flush()?);
    };
    // A device, fifo or symlink to one (say /dev/stdout) is written as it is:
    // nothing to rename over it.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        write(&mut file)?;
        return Ok(file.flush()?);
    }
    // A fresh name next to the target, never an existing file or symlink.
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.berth-partial-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    ));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    let result = (|| {
        let mut writer = std::io::BufWriter::new(file);
        write(&mut writer)?;
        writer
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
