//! A watcher of the raw bytes a client sends on an HTTP/1 connection, for what hyper accepts
//! but a proxy must refuse (RFC 9112 2.2, 6.1): a bare LF as a line ending, and a request
//! carrying both Content-Length and Transfer-Encoding (a smuggling vector).
//!
//! Invariant: it never judges bytes it cannot place. It follows request heads, skips
//! Content-Length bodies and follows chunked ones (chunk sizes, data, trailers), so it stays on
//! for the whole connection; after CONNECT (a tunnel), HTTP/2 or anything it cannot parse it
//! stops (fail open: hyper's own checks still apply), so a body or a tunnel is never mistaken
//! for a head. A bare LF in a chunked body's framing condemns the next head on the connection.
//! The proxy's client sockets and the inner connections of `--mitm` interception both use it
//! (through `activity::Activity`).

use std::collections::VecDeque;

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A line ended with LF alone.
    BareLf,
    /// Both Content-Length and Transfer-Encoding.
    ContentLengthWithTransferEncoding,
    /// Transfer-Encoding other than one `chunked`: `chunked` twice (RFC 9112 6.1: never
    /// applied more than once), or a coding hoard does not decode (`gzip, chunked`), whose
    /// body would reach the origin still coded and without the field that says so.
    TransferCoding,
}

impl Violation {
    /// Stable name (Cache-Status detail, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Violation::BareLf => "bare-lf",
            Violation::ContentLengthWithTransferEncoding => "content-length-with-transfer-encoding",
            Violation::TransferCoding => "transfer-coding",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    /// Inside a Content-Length body: bytes left.
    Skip(u64),
    /// A chunked body: reading a chunk-size line.
    ChunkSize,
    /// Inside a chunk: bytes left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to the empty line.
    Trailers,
    Off,
}

/// Longest prefix of a line kept (enough for a header name and a Content-Length value).
const LINE_PREFIX: usize = 128;
/// Verdicts kept for heads not yet handled (pipelining); more and the watcher stops.
const MAX_PENDING: usize = 64;

/// Follows the request heads of one connection; one verdict per complete head, in order.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    line: Vec<u8>,
    prev_cr: bool,
    request_line: bool,
    bare_lf: bool,
    content_length: Option<Option<u64>>,
    transfer_encoding: bool,
    /// The last Transfer-Encoding line ends with `chunked`.
    chunked: bool,
    /// Codings named by the Transfer-Encoding lines so far, and whether all are `chunked`.
    codings: u32,
    only_chunked: bool,
    /// CONNECT: what follows a successful one is a tunnel.
    connect: bool,
    /// A bare LF was seen in a chunked body's framing: the next head is refused.
    body_bare_lf: bool,
    verdicts: VecDeque<Option<Violation>>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::Head,
            line: Vec::with_capacity(LINE_PREFIX),
            prev_cr: false,
            request_line: true,
            bare_lf: false,
            content_length: None,
            transfer_encoding: false,
            chunked: false,
            codings: 0,
            only_chunked: true,
            connect: false,
            body_bare_lf: false,
            verdicts: VecDeque::new(),
        }
    }
}

impl Scanner {
    /// Feed bytes as they are read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Skip(n) => {
                    let k = n.min(data.len() as u64);
                    data = &data[k as usize..];
                    self.state = if n == k {
                        State::Head
                    } else {
                        State::Skip(n - k)
                    };
                }
                State::Head => {
                    // A whole line (or the rest of the data) at once: request heads are
                    // most of what a client sends, and most of their bytes are not `\n`.
                    match memchr::memchr(b'\n', data) {
                        Some(i) => {
                            self.head_bytes(&data[..i]);
                            self.head_line_end();
                            data = &data[i + 1..];
                        }
                        None => {
                            self.head_bytes(data);
                            return;
                        }
                    }
                }
                State::ChunkData(n) => {
                    let k = n.min(data.len() as u64);
                    data = &data[k as usize..];
                    self.state = if n == k {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(n - k)
                    };
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    if let Some(line) = self.body_line_byte(data[0]) {
                        self.body_line(&line);
                    }
                    data = &data[1..];
                }
            }
        }
    }

    /// One byte of a line of chunked framing; the line (without CR/LF) when it ends.
    fn body_line_byte(&mut self, b: u8) -> Option<Vec<u8>> {
        if b != b'\n' {
            self.prev_cr = b == b'\r';
            if b != b'\r' && self.line.len() < LINE_PREFIX {
                self.line.push(b);
            }
            return None;
        }
        if !self.prev_cr {
            self.body_bare_lf = true;
        }
        self.prev_cr = false;
        Some(std::mem::take(&mut self.line))
    }

    fn body_line(&mut self, line: &[u8]) {
        self.state = match self.state {
            State::ChunkSize => {
                let size = line.split(|&c| c == b';').next().unwrap_or_default();
                let size = size.trim_ascii();
                let parsed = (!size.is_empty() && size.len() <= 16)
                    .then(|| std::str::from_utf8(size).ok())
                    .flatten()
                    .and_then(|s| u64::from_str_radix(s, 16).ok());
                match parsed {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Off, // hyper refuses it; nothing more to follow
                }
            }
            State::ChunkEnd if line.is_empty() => State::ChunkSize,
            State::Trailers if line.is_empty() => {
                self.request_line = true;
                State::Head
            }
            State::Trailers => State::Trailers,
            _ => State::Off,
        };
    }

    /// The verdict on the oldest complete head not yet taken (`None`: nothing to say).
    pub fn take(&mut self) -> Option<Violation> {
        self.verdicts.pop_front().flatten()
    }

    /// Bytes of a head line with no `\n` among them: the line keeps its first
    /// [`LINE_PREFIX`] bytes other than CR.
    fn head_bytes(&mut self, part: &[u8]) {
        let Some(&last) = part.last() else {
            return; // nothing new: a CR at the end of the previous part still counts
        };
        self.prev_cr = last == b'\r';
        let room = LINE_PREFIX.saturating_sub(self.line.len());
        self.line
            .extend(part.iter().copied().filter(|&c| c != b'\r').take(room));
    }

    /// The `\n` ending a head line.
    fn head_line_end(&mut self) {
        if !self.prev_cr {
            self.bare_lf = true;
        }
        self.prev_cr = false;
        let mut line = std::mem::take(&mut self.line);
        self.head_line(&line);
        line.clear();
        self.line = line; // its capacity serves the next line
    }

    fn head_line(&mut self, line: &[u8]) {
        if line.is_empty() {
            if !self.request_line {
                self.end_head();
            }
            return; // empty lines before a request line are ignored (RFC 9112 2.2)
        }
        if self.request_line {
            self.request_line = false;
            if line.starts_with(b"PRI * HTTP/2.0") {
                self.state = State::Off;
            } else if line.starts_with(b"CONNECT ") {
                self.connect = true;
            }
            return;
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            return;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            self.content_length = match self.content_length {
                None => Some(v),
                Some(prev) if prev == v => Some(v),
                Some(_) => Some(None),
            };
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
            self.chunked = value
                .rsplit(|&c| c == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            for coding in value.split(|&c| c == b',').map(<[u8]>::trim_ascii) {
                if !coding.is_empty() {
                    self.codings += 1;
                    self.only_chunked &= coding.eq_ignore_ascii_case(b"chunked");
                }
            }
        }
        // `Upgrade` needs no special case: hoard never switches protocols on a request (it
        // drops Upgrade when forwarding), so what follows is still HTTP/1.1.
    }

    fn end_head(&mut self) {
        let verdict = if self.bare_lf || std::mem::take(&mut self.body_bare_lf) {
            Some(Violation::BareLf)
        } else if self.content_length.is_some() && self.transfer_encoding {
            Some(Violation::ContentLengthWithTransferEncoding)
        } else if self.transfer_encoding && !(self.codings == 1 && self.only_chunked) {
            Some(Violation::TransferCoding)
        } else {
            None
        };
        self.verdicts.push_back(verdict);
        self.state = match (self.content_length, self.transfer_encoding) {
            _ if self.verdicts.len() > MAX_PENDING || self.connect => State::Off,
            // A violation closes the connection: nothing after it is answered.
            _ if verdict.is_some() => State::Off,
            (None, true) if self.chunked => State::ChunkSize,
            (_, true) | (Some(None), _) => State::Off,
            (Some(Some(n)), false) if n > 0 => State::Skip(n),
            _ => State::Head,
        };
        self.request_line = true;
        self.bare_lf = false;
        self.content_length = None;
        self.transfer_encoding = false;
        self.chunked = false;
        self.codings = 0;
        self.only_chunked = true;
        self.connect = false;
    }
}

#[cfg(test)]
mod tests {
    use super::{Scanner, Violation};

    fn verdicts(chunks: &[&[u8]]) -> Vec<Option<Violation>> {
        let mut s = Scanner::default();
        for c in chunks {
            s.feed(c);
        }
        s.verdicts.into_iter().collect()
    }

    macro_rules! scan {
        ($name:ident, [$($chunk:expr),*], $want:expr) => {
            #[test]
            fn $name() {
                assert_eq!(verdicts(&[$($chunk.as_bytes()),*]), $want);
            }
        };
    }

    use Violation::*;
    scan!(clean_get, ["GET / HTTP/1.1\r\nHost: a\r\n\r\n"], vec![None]);
    scan!(
        split_anywhere,
        ["GET / HTTP/1.1\r", "\nHost: a\r\n\r", "\n"],
        vec![None]
    );
    scan!(bare_lf, ["GET / HTTP/1.1\nHost: a\n\n"], vec![Some(BareLf)]);
    scan!(
        one_bare_lf,
        ["GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"],
        vec![Some(BareLf)]
    );
    scan!(
        cl_and_te,
        ["POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
        vec![Some(ContentLengthWithTransferEncoding)]
    );
    scan!(
        body_with_bare_lf_is_skipped,
        [
            "POST / HTTP/1.1\r\ncontent-length: 3\r\n\r\na\nb",
            "GET / HTTP/1.1\r\n\r\n"
        ],
        vec![None, None]
    );
    scan!(
        pipelined,
        ["GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\nX: y\n\n"],
        vec![None, Some(BareLf)]
    );
    scan!(
        follows_a_chunked_body,
        [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "5;ext=1\r\nab\ncd\r\n0\r\nX-Trailer: 1\r\n\r\n",
            "GET /next HTTP/1.1\nHost: a\n\n"
        ],
        vec![None, Some(BareLf)]
    );
    scan!(
        clean_request_after_a_chunked_body,
        [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        ],
        vec![None, None]
    );
    scan!(
        chunked_twice_in_one_line,
        ["POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"],
        vec![Some(TransferCoding)]
    );
    scan!(
        chunked_on_two_lines,
        ["POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"],
        vec![Some(TransferCoding)]
    );
    scan!(
        a_coding_before_chunked,
        ["POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"],
        vec![Some(TransferCoding)]
    );
    scan!(
        bare_lf_in_chunk_framing_condemns_the_next_head,
        [
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\n0\n\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        ],
        vec![None, Some(BareLf)]
    );
    scan!(
        follows_after_an_upgrade_request,
        [
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.1\nHost: a\n\n"
        ],
        vec![None, Some(BareLf)]
    );
    scan!(
        stops_after_connect,
        ["CONNECT a:443 HTTP/1.1\r\n\r\n\n\n\n\n"],
        vec![None]
    );
    scan!(
        h2_preface_stops,
        ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\n\n"],
        vec![]
    );

    /// A line longer than the prefix kept is skipped whole; the lines after it are judged.
    #[test]
    fn a_long_line_does_not_hide_the_next_ones() {
        let long = format!(
            "POST / HTTP/1.1\r\nX-Long: {}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "a".repeat(5000)
        );
        assert_eq!(
            verdicts(&[long.as_bytes()]),
            vec![Some(ContentLengthWithTransferEncoding)]
        );
        let cr_inside = "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n";
        assert_eq!(verdicts(&[cr_inside.as_bytes()]), vec![None]);
    }

    /// Lines are found a whole line at a time: any split of the bytes gives the verdicts one
    /// byte at a time gives.
    #[test]
    fn every_split_gives_the_same_verdicts() {
        for text in [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\nX: y\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            "\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 2\r\n\r\n\n\nGET / HTTP/1.1\r\n\r\n",
        ] {
            let bytes = text.as_bytes();
            let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
            let want = verdicts(&one_by_one);
            assert!(!want.is_empty(), "{text:?}");
            for cut in 0..=bytes.len() {
                let (a, b) = bytes.split_at(cut);
                assert_eq!(verdicts(&[a, b]), want, "{text:?} cut at {cut}");
            }
        }
    }
}
