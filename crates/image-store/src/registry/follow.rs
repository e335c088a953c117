//! Reading a blob while it downloads: a [`Follower`] reads the ingest file as the
//! download writes it, waiting for more bytes, so a layer can be unpacked during its
//! download instead of after it.
//!
//! The follower ends (EOF) only once the blob has been verified and committed; if the
//! download fails or stops, its reads fail. So whatever reads it to the end has read
//! exactly the bytes of the verified blob.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex};

/// How far the download has got.
enum End {
    /// Still downloading.
    Open,
    /// Committed: the file holds the whole verified blob.
    Done,
    /// The download failed or stopped.
    Failed,
}

struct State {
    /// Bytes at the start of the file that are written and readable.
    available: u64,
    end: End,
}

struct Feed {
    state: Mutex<State>,
    more: Condvar,
}

/// Reads a downloading blob from its first byte; blocks until more is written, returns
/// EOF once the blob is committed, fails if the download does.
pub struct Follower {
    file: File,
    pos: u64,
    feed: Arc<Feed>,
}

impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let available = {
            let mut s = self
                .feed
                .state
                .lock()
                .map_err(|_| io::Error::other("download state poisoned"))?;
            loop {
                if s.available > self.pos {
                    break s.available;
                }
                match s.end {
                    End::Done => return Ok(0),
                    End::Failed => {
                        return Err(io::Error::other("the download of this blob failed"))
                    }
                    End::Open => {
                        s = self
                            .feed
                            .more
                            .wait(s)
                            .map_err(|_| io::Error::other("download state poisoned"))?;
                    }
                }
            }
        };
        let want = usize::try_from(available - self.pos).map_or(buf.len(), |n| n.min(buf.len()));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the ingest file is shorter than what was written to it",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// The download's side: tells the follower how much is written and how it ended.
/// Dropped without [`Feeder::done`], the follower fails.
pub(super) struct Feeder {
    feed: Arc<Feed>,
}

impl Feeder {
    /// A feeder and its follower over `file` (the ingest data, opened for reading),
    /// whose first `available` bytes are already written.
    pub(super) fn new(file: File, available: u64) -> (Feeder, Follower) {
        let feed = Arc::new(Feed {
            state: Mutex::new(State {
                available,
                end: End::Open,
            }),
            more: Condvar::new(),
        });
        let follower = Follower {
            file,
            pos: 0,
            feed: feed.clone(),
        };
        (Feeder { feed }, follower)
    }

    fn set(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.feed.state.lock() {
            f(&mut s);
        }
        self.feed.more.notify_all();
    }

    /// The first `n` bytes of the file are written (flushed to the file).
    pub(super) fn written(&self, n: u64) {
        self.set(|s| s.available = s.available.max(n));
    }

    /// The blob is verified and committed; the follower reads to its end.
    pub(super) fn done(self) {
        self.set(|s| s.end = End::Done);
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.set(|s| {
            if matches!(s.end, End::Open) {
                s.end = End::Failed;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn follows_the_writes_and_ends_only_when_done() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data");
        let mut w = File::create(&p).unwrap();
        w.write_all(b"abc").unwrap();
        let (feeder, mut follower) = Feeder::new(File::open(&p).unwrap(), 3);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            follower.read_to_end(&mut got).map(|_| got)
        });
        for chunk in [&b"def"[..], b"ghi"] {
            std::thread::sleep(std::time::Duration::from_millis(20));
            w.write_all(chunk).unwrap();
            feeder.written(w.metadata().unwrap().len());
        }
        // Written bytes beyond what was announced are not read.
        w.write_all(b"unannounced").unwrap();
        feeder.done();
        assert_eq!(reader.join().unwrap().unwrap(), b"abcdefghi");
    }

    #[test]
    fn a_failed_download_fails_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data");
        std::fs::write(&p, b"partial").unwrap();
        let (feeder, mut follower) = Feeder::new(File::open(&p).unwrap(), 7);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            follower.read_to_end(&mut got)
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(feeder);
        let e = reader.join().unwrap().unwrap_err();
        assert!(
            e.to_string().contains("download of this blob failed"),
            "{e}"
        );
    }
}
