//! Messages between the runtime and a container process it is setting up.
//!
//! Frames are a 4-byte little-endian length and a JSON [`Msg`]; file
//! descriptors (the pty master) travel separately with SCM_RIGHTS. Both ends
//! are close-on-exec, so a successful `execve` in the child shows up as
//! end-of-file on the runtime's side.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, SysContext};

/// A message on a sync channel.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Msg {
    /// Proceed (runtime to child: the cgroup is joined; `start` to init: exec now).
    Go,
    /// The child is set up and waits; `pty` says whether a pty master fd follows.
    Ready {
        /// A pty master follows as SCM_RIGHTS.
        pty: bool,
    },
    /// The child failed; it exits with `code` after sending this.
    Failed {
        /// One-line description.
        message: String,
        /// Exit code (127 command not found, 126 not runnable, 1 otherwise).
        code: i32,
        /// Whether the failure was "command not found".
        not_found: Option<String>,
        /// The path and reason of a command that cannot be run.
        #[serde(default)]
        not_runnable: Option<(String, String)>,
    },
}

impl Msg {
    /// The message describing `err`.
    pub(crate) fn failed(err: &Error) -> Msg {
        let not_found = match err {
            Error::CommandNotFound(name) => Some(name.clone()),
            _ => None,
        };
        let not_runnable = match err {
            Error::CommandNotRunnable { path, reason } => Some((path.clone(), reason.clone())),
            _ => None,
        };
        Msg::Failed {
            message: err.to_string(),
            code: err.exit_code(),
            not_found,
            not_runnable,
        }
    }

    /// Turn a `Failed` message back into an error.
    pub(crate) fn into_error(self) -> Error {
        match self {
            Msg::Failed {
                not_found: Some(name),
                ..
            } => Error::CommandNotFound(name),
            Msg::Failed {
                not_runnable: Some((path, reason)),
                ..
            } => Error::CommandNotRunnable { path, reason },
            Msg::Failed { message, .. } => Error::Init(message),
            other => Error::Init(format!("unexpected message from container: {other:?}")),
        }
    }
}

/// One end of a sync channel.
pub(crate) struct Channel {
    stream: UnixStream,
}

impl Channel {
    /// A connected pair (both ends close-on-exec).
    pub(crate) fn pair() -> Result<(Channel, Channel)> {
        let (a, b) = UnixStream::pair().ctx(|| "create sync socket pair".into())?;
        Ok((Channel { stream: a }, Channel { stream: b }))
    }

    /// The socket's descriptor (kept open when the init closes what it inherited).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.stream)
    }

    /// Wrap an accepted or connected stream.
    pub(crate) fn from_stream(stream: UnixStream) -> Channel {
        Channel { stream }
    }

    /// Send one message.
    pub(crate) fn send(&mut self, msg: &Msg) -> Result<()> {
        let body = serde_json::to_vec(msg).map_err(|e| Error::Io {
            context: "encode sync message".into(),
            source: e.into(),
        })?;
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.stream
            .write_all(&frame)
            .ctx(|| "write to sync socket".into())
    }

    /// Receive one message; `None` on end-of-file.
    pub(crate) fn recv(&mut self) -> Result<Option<Msg>> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e).ctx(|| "read from sync socket".into()),
        }
        let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
        self.stream
            .read_exact(&mut body)
            .ctx(|| "read from sync socket".into())?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| Error::Io {
                context: "decode sync message".into(),
                source: e.into(),
            })
    }

    /// Send a file descriptor.
    pub(crate) fn send_fd(&self, fd: BorrowedFd<'_>) -> Result<()> {
        send_fd(self.stream.as_raw_fd(), fd)
    }

    /// Receive a file descriptor.
    pub(crate) fn recv_fd(&self) -> Result<OwnedFd> {
        recv_fd(self.stream.as_raw_fd())
    }
}

/// Send `fd` over the unix socket `sock` with one byte of payload.
pub(crate) fn send_fd(sock: RawFd, fd: BorrowedFd<'_>) -> Result<()> {
    let fds = [fd.as_raw_fd()];
    let iov = [IoSlice::new(b"F")];
    sendmsg::<()>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .ctx(|| "send file descriptor".into())?;
    Ok(())
}

/// Receive one file descriptor from the unix socket `sock`.
pub(crate) fn recv_fd(sock: RawFd) -> Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .ctx(|| "receive file descriptor".into())?;
    for cmsg in msg.cmsgs().ctx(|| "receive file descriptor".into())? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us; we own it.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(Error::Init(
        "container process closed the channel before sending its terminal".into(),
    ))
}
