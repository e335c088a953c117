//! The attach protocol between a container's monitor and `berth run`/`start -a`
//! clients, over a unix socket: frames of one type byte, a 4-byte
//! little-endian length and the payload.

use std::io::{Read, Write};

/// Frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Client to monitor: bytes for the container's stdin.
    Stdin = 0,
    /// Monitor to client: the container's stdout.
    Stdout = 1,
    /// Monitor to client: the container's stderr.
    Stderr = 2,
    /// Client to monitor: close the container's stdin.
    CloseStdin = 3,
    /// Client to monitor: terminal size (rows u16, cols u16, little-endian).
    Resize = 4,
    /// Monitor to client: the container runs (payload: pid as i32).
    Started = 5,
    /// Monitor to client: the container ended (payload: exit code i32, oom byte).
    Exited = 6,
    /// Monitor to client: starting failed (payload: exit code i32, message).
    Failed = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            0 => Kind::Stdin,
            1 => Kind::Stdout,
            2 => Kind::Stderr,
            3 => Kind::CloseStdin,
            4 => Kind::Resize,
            5 => Kind::Started,
            6 => Kind::Exited,
            7 => Kind::Failed,
            _ => return None,
        })
    }
}

/// Largest payload accepted (a bound for untrusted peers).
pub const MAX_FRAME: usize = 1 << 20;

/// Write one frame.
pub fn write_frame(w: &mut impl Write, kind: Kind, payload: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(5 + payload.len());
    buf.push(kind as u8);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
    w.write_all(&buf)
}

/// Read one frame; `None` on a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> std::io::Result<Option<(Kind, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let kind = Kind::from_u8(head[0])
        .ok_or_else(|| std::io::Error::other(format!("unknown attach frame type {}", head[0])))?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "attach frame of {len} bytes is too large"
        )));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((kind, payload)))
}

/// Incremental frame decoder for non-blocking readers.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Add bytes read from the peer.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Take the next complete frame, if any. An invalid frame is an error.
    pub fn next_frame(&mut self) -> std::io::Result<Option<(Kind, Vec<u8>)>> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::other("attach frame too large"));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let kind = Kind::from_u8(self.buf[0])
            .ok_or_else(|| std::io::Error::other("unknown attach frame type"))?;
        let payload = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some((kind, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, Kind::Stdout, b"hello").unwrap();
        write_frame(&mut buf, Kind::Exited, &7i32.to_le_bytes()).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((Kind::Stdout, b"hello".to_vec()))
        );
        assert_eq!(read_frame(&mut r).unwrap().unwrap().0, Kind::Exited);
        assert_eq!(read_frame(&mut r).unwrap(), None);
        let mut d = Decoder::default();
        d.push(&buf[..3]);
        assert!(d.next_frame().unwrap().is_none());
        d.push(&buf[3..]);
        assert_eq!(d.next_frame().unwrap().unwrap().1, b"hello".to_vec());
        assert_eq!(d.next_frame().unwrap().unwrap().0, Kind::Exited);
    }

    #[test]
    fn bad_frames_are_errors() {
        let mut r = &[9u8, 0, 0, 0, 0][..];
        assert!(read_frame(&mut r).is_err());
        let mut big = vec![1u8];
        big.extend_from_slice(&(u32::MAX).to_le_bytes());
        assert!(read_frame(&mut &big[..]).is_err());
    }
}
