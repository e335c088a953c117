//! Reading a blob while it downloads: a [`Follower`] reads the blob as the download
//! receives it, waiting for more bytes, so a layer can be unpacked during its
//! download instead of after it.
//!
//! The download hands each received chunk to the follower in memory (a refcounted
//! [`Bytes`], no copy), as long as the chunks the follower has not taken yet stay
//! within a byte budget. What the follower finds no chunk for (chunks over the
//! budget, a resumed prefix) it reads from the ingest file, and only up to what the
//! download announced as flushed to it.
//!
//! The follower ends (EOF) only once the blob has been verified; if the download
//! fails or stops, its reads fail. Chunks are the very bytes written to (and hashed
//! by) the ingest, so whatever reads the follower to the end has read exactly the
//! bytes of the verified blob.

use bytes::{Buf, Bytes};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Default byte budget of the chunks queued for one blob's follower. Small on purpose:
/// a queued chunk keeps its buffer from the HTTP client, which then reads into fresh
/// memory; at 32 MiB the page faults of that memory (4k -> 16k per bench pull) cost
/// more than the file reads the queue saves. A follower further behind reads the file.
pub(super) const QUEUE_BUDGET: usize = 4 << 20;
/// The follower's buffer for reads from the ingest file.
const FILE_BUFFER: usize = 256 << 10;

/// How far the download has got.
enum End {
    /// Still downloading.
    Open,
    /// Verified: the file holds the whole blob, flushed.
    Done,
    /// The download failed or stopped.
    Failed,
}

struct State {
    /// Bytes at the start of the file that are flushed and readable from it.
    flushed: u64,
    /// Received chunks the follower has not taken, as (offset, bytes): ascending,
    /// not overlapping, possibly with gaps between them.
    queue: VecDeque<(u64, Bytes)>,
    /// Bytes in `queue`.
    queued: usize,
    /// Most bytes `queue` may hold.
    budget: usize,
    /// The follower waits for news (the feeder wakes it only then).
    waiting: bool,
    end: End,
}

struct Feed {
    state: Mutex<State>,
    more: Condvar,
}

impl Feed {
    fn lock(&self) -> io::Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| io::Error::other("download state poisoned"))
    }
}

/// Where the follower's next bytes come from.
enum Next {
    /// These bytes, starting at the follower's position.
    Chunk(Bytes),
    /// This many bytes, to read from the file at the follower's position.
    File(u64),
    /// The verified blob is read to its end.
    End,
}

/// Reads a downloading blob from its first byte; blocks until more is received,
/// returns EOF once the blob is verified, fails if the download does.
///
/// Implements [`BufRead`] without a copy of its own: `fill_buf` returns the rest of
/// the received chunk at the position, or of its buffer read from the file.
pub struct Follower {
    file: File,
    pos: u64,
    feed: Arc<Feed>,
    /// The unread rest of the chunk at `pos` (empty when there is none).
    chunk: Bytes,
    /// Bytes read from the file: `buf[at..len]` are those at `pos`.
    buf: Vec<u8>,
    at: usize,
    len: usize,
}

impl Follower {
    /// Where the bytes at the position come from; waits for them when `wait`, else
    /// returns `None` if there are none yet (or none ever: the next waiting call
    /// tells EOF or the failure).
    fn next(&self, wait: bool) -> io::Result<Option<Next>> {
        let pos = self.pos;
        let mut s = self.feed.lock()?;
        loop {
            // Chunks wholly behind the position (read from the file meanwhile).
            while let Some((off, c)) = s.queue.front() {
                if off + c.len() as u64 > pos {
                    break;
                }
                let n = c.len();
                s.queue.pop_front();
                s.queued -= n;
            }
            let front = s.queue.front().map(|(off, _)| *off);
            if front.is_some_and(|off| off <= pos) {
                let (off, mut c) = s.queue.pop_front().expect("a front chunk");
                s.queued -= c.len();
                c.advance((pos - off) as usize);
                return Ok(Some(Next::Chunk(c)));
            }
            // A gap before the next chunk (or no chunk): the file, where flushed.
            let limit = front.map_or(s.flushed, |off| off.min(s.flushed));
            if limit > pos {
                return Ok(Some(Next::File(limit - pos)));
            }
            if !wait {
                return Ok(None);
            }
            match s.end {
                End::Done if front.is_none() => return Ok(Some(Next::End)),
                End::Done => {
                    return Err(io::Error::other(format!(
                        "the verified blob's bytes from {pos} were never flushed"
                    )))
                }
                End::Failed => return Err(io::Error::other("the download of this blob failed")),
                End::Open => {
                    s.waiting = true;
                    s = self
                        .feed
                        .more
                        .wait(s)
                        .map_err(|_| io::Error::other("download state poisoned"))?;
                    s.waiting = false;
                }
            }
        }
    }

    /// Read into `out` from the file at the position, at most `avail` bytes (all
    /// flushed).
    fn pread(&self, out: &mut [u8], avail: u64) -> io::Result<usize> {
        let want = usize::try_from(avail).map_or(out.len(), |n| n.min(out.len()));
        let n = self.file.read_at(&mut out[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the ingest file is shorter than what was written to it",
            ));
        }
        Ok(n)
    }

    /// Fill the file buffer from the position, at most `avail` bytes.
    fn fill_from_file(&mut self, avail: u64) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.is_empty() {
            buf = vec![0; FILE_BUFFER];
        }
        let r = self.pread(&mut buf, avail);
        self.buf = buf;
        self.at = 0;
        self.len = r?;
        Ok(())
    }

    /// The unread bytes at the position that are already at hand.
    fn at_hand(&self) -> &[u8] {
        if self.chunk.is_empty() {
            &self.buf[self.at..self.len]
        } else {
            &self.chunk
        }
    }
}

impl Read for Follower {
    /// Copies what is at hand and every further chunk (or file bytes) available
    /// without waiting; waits only when nothing is.
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < out.len() {
            if self.at_hand().is_empty() {
                match self.next(n == 0)? {
                    Some(Next::Chunk(c)) => self.chunk = c,
                    // Large reads from the file go straight into `out`.
                    Some(Next::File(avail)) if out.len() - n >= FILE_BUFFER => {
                        let k = self.pread(&mut out[n..], avail)?;
                        self.pos += k as u64;
                        n += k;
                        continue;
                    }
                    Some(Next::File(avail)) => self.fill_from_file(avail)?,
                    Some(Next::End) | None => break,
                }
            }
            let src = self.at_hand();
            let k = src.len().min(out.len() - n);
            out[n..n + k].copy_from_slice(&src[..k]);
            self.consume(k);
            n += k;
        }
        Ok(n)
    }
}

impl BufRead for Follower {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.at_hand().is_empty() {
            match self.next(true)? {
                Some(Next::Chunk(c)) => self.chunk = c,
                Some(Next::File(avail)) => self.fill_from_file(avail)?,
                Some(Next::End) | None => {}
            }
        }
        Ok(self.at_hand())
    }

    fn consume(&mut self, amt: usize) {
        let amt = if self.chunk.is_empty() {
            let amt = amt.min(self.len - self.at);
            self.at += amt;
            amt
        } else {
            let amt = amt.min(self.chunk.len());
            self.chunk.advance(amt);
            amt
        };
        self.pos += amt as u64;
    }
}

/// The download's side: hands the follower the received chunks, tells it how much
/// is flushed to the file and how the download ended. Dropped without
/// [`Feeder::done`], the follower fails.
pub(super) struct Feeder {
    feed: Arc<Feed>,
}

impl Feeder {
    /// A feeder and its follower over `file` (the ingest data, opened for reading),
    /// whose first `flushed` bytes are already written, queueing up to
    /// [`QUEUE_BUDGET`] bytes of chunks.
    pub(super) fn new(file: File, flushed: u64) -> (Feeder, Follower) {
        Feeder::with_budget(file, flushed, QUEUE_BUDGET)
    }

    /// [`Feeder::new`] with a queue of at most `budget` bytes.
    pub(super) fn with_budget(file: File, flushed: u64, budget: usize) -> (Feeder, Follower) {
        let feed = Arc::new(Feed {
            state: Mutex::new(State {
                flushed,
                queue: VecDeque::new(),
                queued: 0,
                budget,
                waiting: false,
                end: End::Open,
            }),
            more: Condvar::new(),
        });
        let follower = Follower {
            file,
            pos: 0,
            feed: feed.clone(),
            chunk: Bytes::new(),
            buf: Vec::new(),
            at: 0,
            len: 0,
        };
        (Feeder { feed }, follower)
    }

    /// Change the state; wake the follower if it waits (and when the state is
    /// poisoned, so that its wait fails instead of lasting).
    fn set<R>(&self, f: impl FnOnce(&mut State) -> R) -> Option<R> {
        let Ok(mut s) = self.feed.state.lock() else {
            self.feed.more.notify_all();
            return None;
        };
        let r = f(&mut s);
        let wake = s.waiting;
        drop(s);
        if wake {
            self.feed.more.notify_all();
        }
        Some(r)
    }

    /// `chunk`, the blob's bytes at `offset`, is received: the caller writes exactly
    /// these bytes there. Queued for the follower (a refcount, no copy) unless that
    /// would exceed the budget or the chunk does not follow the queued ones; returns
    /// whether it was queued (if not, the follower reads these bytes from the file
    /// once they are announced by [`Feeder::written`]).
    pub(super) fn received(&self, offset: u64, chunk: &Bytes) -> bool {
        self.set(|s| {
            let follows = s
                .queue
                .back()
                .is_none_or(|(off, c)| off + c.len() as u64 <= offset);
            let fits = s.queued + chunk.len() <= s.budget;
            if chunk.is_empty() || !follows || !fits || !matches!(s.end, End::Open) {
                return false;
            }
            s.queued += chunk.len();
            s.queue.push_back((offset, chunk.clone()));
            true
        })
        .unwrap_or(false)
    }

    /// The first `n` bytes of the file are written (flushed to the file).
    pub(super) fn written(&self, n: u64) {
        self.set(|s| s.flushed = s.flushed.max(n));
    }

    /// The blob is verified: it is the first bytes announced by [`Feeder::written`],
    /// all of them; the follower reads to its end.
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

    /// A file holding `bytes`, opened for reading.
    fn file_with(dir: &tempfile::TempDir, bytes: &[u8]) -> File {
        let p = dir.path().join("data");
        std::fs::write(&p, bytes).unwrap();
        File::open(&p).unwrap()
    }

    /// Reads `follower` to its end on another thread; the receiver gets the result.
    fn read_all_later(mut follower: Follower) -> std::sync::mpsc::Receiver<io::Result<Vec<u8>>> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let _ = tx.send(follower.read_to_end(&mut got).map(|_| got));
        });
        rx
    }

    const SHORT: std::time::Duration = std::time::Duration::from_millis(50);

    // In these tests the chunks differ from the file's bytes at their offsets (never
    // so in a pull), to show where each byte was read from.

    #[test]
    fn queued_chunks_are_read_from_memory_and_end_only_when_done() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing flushed: the file is not read at all.
        let (feeder, follower) = Feeder::new(file_with(&dir, b""), 0);
        let rx = read_all_later(follower);
        assert!(feeder.received(0, &Bytes::from_static(b"ABC")));
        assert!(feeder.received(3, &Bytes::from_static(b"DEF")));
        assert!(rx.recv_timeout(SHORT).is_err(), "no EOF before done");
        feeder.done();
        assert_eq!(rx.recv().unwrap().unwrap(), b"ABCDEF");
    }

    #[test]
    fn gaps_between_chunks_are_read_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A resumed prefix of 4 bytes, then chunks with a gap at 8..12.
        let (feeder, mut follower) = Feeder::new(file_with(&dir, b"abcdefghijklmnop"), 4);
        assert!(feeder.received(4, &Bytes::from_static(b"EFGH")));
        assert!(feeder.received(12, &Bytes::from_static(b"MNOP")));
        let mut got = [0u8; 8];
        follower.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abcdEFGH");
        // The gap is not flushed yet: the follower waits for it.
        let rx = read_all_later(follower);
        assert!(
            rx.recv_timeout(SHORT).is_err(),
            "the unflushed gap is not read"
        );
        feeder.written(12);
        feeder.written(16);
        feeder.done();
        assert_eq!(rx.recv().unwrap().unwrap(), b"ijklMNOP");
    }

    #[test]
    fn chunks_over_the_budget_are_read_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (feeder, mut follower) =
            Feeder::with_budget(file_with(&dir, b"abcdefghijklmnop"), 0, 8);
        assert!(feeder.received(0, &Bytes::from_static(b"ABCD")));
        assert!(feeder.received(4, &Bytes::from_static(b"EFGH")));
        assert!(
            !feeder.received(8, &Bytes::from_static(b"IJKL")),
            "over budget"
        );
        feeder.written(12);
        let mut got = [0u8; 12];
        follower.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ABCDEFGHijkl");
        // What the follower took no longer counts against the budget.
        assert!(feeder.received(12, &Bytes::from_static(b"MNOP")));
        feeder.written(16);
        feeder.done();
        let mut rest = Vec::new();
        follower.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"MNOP");
    }

    #[test]
    fn a_read_takes_every_chunk_at_hand() {
        let dir = tempfile::tempdir().unwrap();
        let (feeder, mut follower) = Feeder::new(file_with(&dir, b""), 0);
        for (i, c) in [&b"ab"[..], b"cd", b"ef"].into_iter().enumerate() {
            assert!(feeder.received(2 * i as u64, &Bytes::from_static(c)));
        }
        let mut got = [0u8; 64];
        assert_eq!(follower.read(&mut got).unwrap(), 6);
        assert_eq!(&got[..6], b"abcdef");
    }

    #[test]
    fn fill_buf_hands_out_chunks_and_file_bytes_without_copies() {
        let dir = tempfile::tempdir().unwrap();
        let (feeder, mut follower) = Feeder::new(file_with(&dir, b"abcdefgh"), 2);
        let chunk = Bytes::from_static(b"CDEF");
        assert!(feeder.received(2, &chunk));
        // The file bytes before the chunk, then the chunk itself.
        assert_eq!(follower.fill_buf().unwrap(), b"ab");
        follower.consume(1);
        assert_eq!(follower.fill_buf().unwrap(), b"b");
        follower.consume(1);
        let got = follower.fill_buf().unwrap();
        assert_eq!(got, b"CDEF");
        assert_eq!(got.as_ptr(), chunk.as_ptr(), "the chunk's own bytes");
        follower.consume(4);
        feeder.written(8);
        feeder.done();
        assert_eq!(follower.fill_buf().unwrap(), b"gh");
        follower.consume(2);
        assert_eq!(follower.fill_buf().unwrap(), b"", "EOF");
    }

    #[test]
    fn a_dropped_feeder_fails_the_reader_after_the_queued_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (feeder, mut follower) = Feeder::new(file_with(&dir, b""), 0);
        assert!(feeder.received(0, &Bytes::from_static(b"ABC")));
        drop(feeder);
        let mut got = [0u8; 3];
        follower.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ABC");
        let e = follower.read(&mut got).unwrap_err();
        assert!(
            e.to_string().contains("download of this blob failed"),
            "{e}"
        );
        assert!(follower.fill_buf().is_err());
    }

    #[test]
    fn random_chunks_and_reads_give_the_blob() {
        // A download as pull.rs does it: chunks queued while they fit, the file
        // flushed and announced in steps, mixed Read and BufRead on the other side.
        let mut seed = 0x9e37_79b9_u64;
        let mut rand = move |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let blob: Vec<u8> = (0..600_000).map(|i| (i * 31 % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data");
        let mut w = io::BufWriter::with_capacity(50_000, File::create(&p).unwrap());
        let (feeder, mut follower) = Feeder::with_budget(File::open(&p).unwrap(), 0, 40_000);
        let sizes: Vec<usize> = (0..64).map(|_| 1 + rand(20_000)).collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            for (i, &n) in sizes.iter().cycle().enumerate() {
                if i % 2 == 0 {
                    let mut buf = vec![0u8; n];
                    match follower.read(&mut buf).unwrap() {
                        0 => break,
                        k => got.extend_from_slice(&buf[..k]),
                    }
                } else {
                    let b = follower.fill_buf().unwrap();
                    if b.is_empty() {
                        break;
                    }
                    let k = b.len().min(n);
                    got.extend_from_slice(&b[..k]);
                    follower.consume(k);
                }
            }
            got
        });
        let (mut have, mut flushed) = (0, 0);
        while have < blob.len() {
            let n = (1 + rand(30_000)).min(blob.len() - have);
            let chunk = Bytes::copy_from_slice(&blob[have..have + n]);
            feeder.received(have as u64, &chunk);
            w.write_all(&chunk).unwrap();
            have += n;
            if have - flushed >= 64_000 {
                w.flush().unwrap();
                flushed = have;
                feeder.written(flushed as u64);
            }
            if rand(4) == 0 {
                std::thread::yield_now();
            }
        }
        w.flush().unwrap();
        feeder.written(have as u64);
        feeder.done();
        assert!(reader.join().unwrap() == blob);
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
