//! Store bodies read chunk by chunk: chunk sizes, page-cache reads against blocking reads,
//! the inline bound, digests.

use super::*;
use http_body_util::BodyExt;

/// The unit tests' in-memory values: read on the blocking pool, like a disk that never says.
impl ChunkSource for std::io::Cursor<Vec<u8>> {}

/// A source whose reads without waiting give `nowait[i]` bytes on the i-th call (0: would
/// wait), after which it says it would wait; counts blocking reads.
struct Scripted {
    data: std::io::Cursor<Vec<u8>>,
    nowait: Vec<usize>,
    calls: usize,
    blocking_reads: Arc<std::sync::atomic::AtomicUsize>,
}

impl Read for Scripted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.blocking_reads.fetch_add(1, Ordering::Relaxed);
        self.data.read(buf)
    }
}

impl ChunkSource for Scripted {
    fn read_cached(&mut self, out: &mut Vec<u8>, max: usize) -> std::io::Result<Option<usize>> {
        let n = self.nowait.get(self.calls).copied().unwrap_or(0).min(max);
        self.calls += 1;
        if n == 0 {
            return Ok(None);
        }
        let start = out.len();
        out.resize(start + n, 0);
        self.data.read_exact(&mut out[start..])?;
        Ok(Some(n))
    }
}

async fn frames(mut body: ProxyBody) -> (Vec<usize>, Vec<u8>, Option<String>) {
    let (mut sizes, mut got) = (Vec::new(), Vec::new());
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                let chunk = f.into_data().unwrap();
                sizes.push(chunk.len());
                got.extend_from_slice(&chunk);
            }
            Err(e) => return (sizes, got, Some(e.to_string())),
        }
    }
    (sizes, got, None)
}

/// Chunks read without waiting, in part or in whole, and the rest read blocking, make the
/// same frames in the same order; a chunk whole in memory takes no blocking read.
#[tokio::test]
async fn chunks_in_memory_are_read_at_once_and_the_rest_on_a_blocking_thread() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let digest = xxhash_rust::xxh3::xxh3_64(&data);
    let k = 1024;
    // (reads without waiting, blocking reads expected): all in memory; none; the first
    // chunk whole, then 1,000 bytes of the second before it would wait.
    for (nowait, blocking) in [
        (vec![usize::MAX; 8], false),
        (vec![], true),
        (vec![16 * k, 1000, 0], true),
    ] {
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let src = Scripted {
            data: std::io::Cursor::new(data.clone()),
            nowait: nowait.clone(),
            calls: 0,
            blocking_reads: reads.clone(),
        };
        let body = ProxyBody::from_reader(src, data.len() as u64, digest, || panic!("not corrupt"));
        let (sizes, got, err) = frames(body).await;
        assert_eq!(err, None, "{nowait:?}");
        assert_eq!(sizes, [16 * k, 32 * k, 50_848], "{nowait:?}");
        assert!(got == data, "{nowait:?}: bytes differ");
        let reads = reads.load(Ordering::Relaxed);
        assert_eq!(reads > 0, blocking, "{nowait:?}: {reads} blocking reads");
    }
}

/// A value over [`INLINE_BODY`] is read on the blocking pool only, even all in memory.
#[tokio::test]
async fn a_value_over_the_inline_bound_is_read_on_blocking_threads_only() {
    for (len, inline) in [(INLINE_BODY, true), (INLINE_BODY + 1, false)] {
        let data: Vec<u8> = (0..len).map(|i| (i % 249) as u8).collect();
        let digest = xxhash_rust::xxh3::xxh3_64(&data);
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let src = Scripted {
            data: std::io::Cursor::new(data.clone()),
            nowait: vec![usize::MAX; 64],
            calls: 0,
            blocking_reads: reads.clone(),
        };
        let body = ProxyBody::from_reader(src, len, digest, || panic!("not corrupt"));
        let (_, got, err) = frames(body).await;
        assert_eq!(err, None);
        assert!(got == data, "{len}: bytes differ");
        assert_eq!(reads.load(Ordering::Relaxed) == 0, inline, "{len}");
    }
}

/// A value whose bytes in memory do not match its digest fails the body, and `on_corrupt`
/// still runs (on a blocking thread).
#[tokio::test]
async fn a_damaged_value_read_without_waiting_fails_and_is_reported() {
    let data = vec![7u8; 40 * 1024];
    let (tx, rx) = std::sync::mpsc::channel();
    let src = Scripted {
        data: std::io::Cursor::new(data.clone()),
        nowait: vec![usize::MAX; 4],
        calls: 0,
        blocking_reads: Arc::default(),
    };
    let body = ProxyBody::from_reader(src, data.len() as u64, 12345, move || {
        tx.send(std::thread::current().name().map(str::to_owned))
            .unwrap();
    });
    let (sizes, _, err) = frames(body).await;
    assert_eq!(sizes, [16 * 1024], "the last chunk is held back");
    assert!(err.unwrap().contains("digest"));
    let thread = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    assert_ne!(thread, std::thread::current().name().map(str::to_owned));
}

/// A real value file just written (in the page cache): streamed whole and verified.
#[tokio::test]
async fn a_value_file_in_the_page_cache_streams_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cache = crate::store::Cache::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    cache.set(b"k", &data, None, None).unwrap();
    let rec = cache.record(b"k").unwrap().unwrap();
    let digest = xxhash_rust::xxh3::xxh3_64(&data);
    let body = ProxyBody::from_reader(rec.into_reader(), data.len() as u64, digest, || {
        panic!("not corrupt")
    });
    let (_, got, err) = frames(body).await;
    assert_eq!(err, None);
    assert!(got == data, "bytes differ");
}

/// A value file is read 16 KiB first, then in chunks twice the last, up to 256 KiB: a
/// client that takes nothing after the first frame holds 16 KiB, not 256 KiB.
#[tokio::test]
async fn file_chunks_start_small_and_double_to_the_largest() {
    let data: Vec<u8> = (0..(1u32 << 20) + 7).map(|i| (i % 251) as u8).collect();
    let digest = xxhash_rust::xxh3::xxh3_64(&data);
    let mut body = ProxyBody::from_reader(
        std::io::Cursor::new(data.clone()),
        data.len() as u64,
        digest,
        || panic!("not corrupt"),
    );
    let mut sizes = Vec::new();
    let mut got = Vec::new();
    while let Some(frame) = body.frame().await {
        let chunk = frame.unwrap().into_data().unwrap();
        sizes.push(chunk.len());
        got.extend_from_slice(&chunk);
    }
    let k = 1024;
    assert_eq!(
        sizes,
        [
            16 * k,
            32 * k,
            64 * k,
            128 * k,
            256 * k,
            256 * k,
            256 * k,
            16 * k + 7
        ]
    );
    assert_eq!(got, data);
}
