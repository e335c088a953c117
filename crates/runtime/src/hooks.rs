//! OCI hooks: programs the runtime runs at points of the lifecycle, with the
//! container's state as JSON on their stdin.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

use crate::error::{Error, Result};
use crate::state::State;

/// Run `hooks` in order; the first failure stops the list and is returned.
pub(crate) fn run(kind: &'static str, hooks: Option<&Vec<Hook>>, state: &State) -> Result<()> {
    let Some(hooks) = hooks else { return Ok(()) };
    let input = serde_json::to_vec(state).unwrap_or_default();
    for hook in hooks {
        run_one(kind, hook, &input)?;
    }
    Ok(())
}

fn run_one(kind: &'static str, hook: &Hook, input: &[u8]) -> Result<()> {
    let fail = |reason: String| Error::Hook {
        kind,
        path: hook.path().clone(),
        reason,
    };
    let mut cmd = Command::new(hook.path());
    if let Some(args) = hook.args() {
        if let Some((argv0, rest)) = args.split_first() {
            std::os::unix::process::CommandExt::arg0(&mut cmd, argv0);
            cmd.args(rest);
        }
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(input);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait().map_err(|e| fail(e.to_string()))? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => return Err(fail(format!("exited with {status}"))),
            None => {}
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail("timed out".into()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
