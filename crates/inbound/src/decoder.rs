//! Turns the bytes after `354` into the stored message.
//!
//! Written by hand rather than with smtp-proto's `DataReceiver` because the
//! rules here are the relay's safety promises, and each is one branch:
//!
//! - Only `<CR><LF>.<CR><LF>` ends the message: the `.` line must end in
//!   CRLF and the line before it too (DATA itself counts as one). So
//!   `\n.\n`, `\r.\r`, `\n.\r\n`, `\r.\r\n` never end it (no SMTP smuggling).
//! - A bare `<LF>` or bare `<CR>` is a line break and is stored as CRLF.
//! - Dot-unstuffing (RFC 5321 §4.5.2): a line that starts with `.` and has
//!   more characters loses the first `.`.
//! - Past `limit` bytes the decoder stops keeping data but still finds the
//!   end, so the session can answer `552`.
//!
//! It keeps no line and no message: decoded bytes collect in an output
//! buffer that the session takes after every read ([`Decoder::take_output`])
//! and sends on to the store, so memory does not grow with a line's or a
//! message's length. Only a line's leading `.` is held back until the next
//! byte says whether it ends the message, is unstuffed, or stays.

/// Streaming decoder for one DATA (or, with `dots: false`, BDAT) body.
#[derive(Debug)]
pub struct Decoder {
    /// Whether `.` lines are special (DATA) or not (BDAT).
    dots: bool,
    limit: u64,
    /// Decoded bytes not yet taken.
    out: Vec<u8>,
    /// Bytes decoded so far (the size the limit applies to).
    size: u64,
    /// Length of the line being read, without its line ending.
    line_len: u64,
    /// The line so far is a single `.`, not yet written.
    held_dot: bool,
    /// The previous line ended in CRLF (true at the start: DATA's own CRLF).
    prev_crlf: bool,
    /// The current line started after a bare CR, not a real line start.
    after_bare_cr: bool,
    /// A CR was seen and the next byte decides what it was.
    pending_cr: bool,
    oversize: bool,
    done: bool,
}

/// What the caller learns after feeding bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed.
    More,
    /// The message ended; this many of the fed bytes were used (the rest
    /// belongs to the next command).
    Done(usize),
}

impl Decoder {
    /// A decoder for a DATA body, keeping at most `limit` bytes.
    pub fn data(limit: u64) -> Decoder {
        Decoder::new(true, limit)
    }

    /// A decoder for BDAT chunks: only line endings are normalised.
    pub fn bdat(limit: u64) -> Decoder {
        Decoder::new(false, limit)
    }

    fn new(dots: bool, limit: u64) -> Decoder {
        Decoder {
            dots,
            limit,
            out: Vec::new(),
            size: 0,
            line_len: 0,
            held_dot: false,
            prev_crlf: true,
            after_bare_cr: false,
            pending_cr: false,
            oversize: false,
            done: false,
        }
    }

    /// Feeds bytes; with `dots`, stops at the end of the message.
    pub fn feed(&mut self, bytes: &[u8]) -> Progress {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if self.mid_line() && b != b'\r' && b != b'\n' {
                // Inside a line, every byte up to the next CR or LF is
                // plain text: copied as a run, found with memchr.
                let run = memchr::memchr2(b'\r', b'\n', &bytes[i..]).unwrap_or(bytes.len() - i);
                self.push_run(&bytes[i..i + run]);
                i += run;
                continue;
            }
            i += 1;
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    self.end_line(true);
                    if self.done {
                        return Progress::Done(i);
                    }
                    continue;
                }
                self.end_line(false);
                self.after_bare_cr = true;
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => self.end_line(false),
                _ => self.push(b),
            }
        }
        Progress::More
    }

    /// Ends a BDAT body: a trailing partial line is kept as its own line.
    pub fn finish_chunks(&mut self) {
        if self.pending_cr {
            self.pending_cr = false;
            self.end_line(false);
        } else if self.line_len > 0 {
            self.end_line(false);
        }
    }

    /// Whether the body went past the limit (the data was dropped).
    pub fn oversize(&self) -> bool {
        self.oversize
    }

    /// Bytes decoded so far (dot-unstuffed, CRLF): what the size limit
    /// counts.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Takes the bytes decoded since the last take (CRLF lines; nothing
    /// once oversize).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Everything decoded and not yet taken: for callers that hold a small
    /// message whole (tests, tools).
    pub fn into_message(self) -> Vec<u8> {
        self.out
    }

    /// Past a line's first byte, with nothing held back: where the next
    /// bytes up to a line ending need no decision.
    fn mid_line(&self) -> bool {
        self.line_len > 0 && !self.held_dot && !self.pending_cr
    }

    /// A run of bytes inside a line (no CR, no LF), after [`Self::mid_line`].
    fn push_run(&mut self, run: &[u8]) {
        self.line_len += run.len() as u64;
        if self.oversize {
            return;
        }
        // Byte by byte, the one past the limit turns the decoder oversize.
        if self.size + run.len() as u64 > self.limit {
            self.oversize = true;
            self.out = Vec::new();
            return;
        }
        self.size += run.len() as u64;
        self.out.extend_from_slice(run);
    }

    fn push(&mut self, b: u8) {
        self.line_len += 1;
        if self.line_len == 1 && b == b'.' {
            self.held_dot = true;
            return;
        }
        if self.held_dot {
            self.held_dot = false;
            // RFC 5321 §4.5.2: a line that starts with `.` and has more
            // characters loses the first `.`.
            let unstuff = self.dots && !self.after_bare_cr;
            if !unstuff {
                self.emit(b'.');
            }
        }
        self.emit(b);
    }

    fn end_line(&mut self, crlf: bool) {
        let dot_line = self.held_dot && self.line_len == 1;
        if self.dots && crlf && self.prev_crlf && dot_line && !self.after_bare_cr {
            self.done = true;
            return;
        }
        if self.held_dot {
            self.held_dot = false;
            self.emit(b'.');
        }
        self.emit(b'\r');
        self.emit(b'\n');
        self.line_len = 0;
        self.prev_crlf = crlf;
        self.after_bare_cr = false;
    }

    fn emit(&mut self, b: u8) {
        if self.oversize {
            return;
        }
        if self.size >= self.limit {
            self.oversize = true;
            self.out = Vec::new();
            return;
        }
        self.size += 1;
        self.out.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8]) -> (Vec<u8>, Progress) {
        let mut d = Decoder::data(1 << 20);
        let p = d.feed(input);
        (d.into_message(), p)
    }

    #[test]
    fn crlf_dot_crlf_ends_the_message() {
        let input = b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n";
        let (msg, p) = decode(input);
        assert_eq!(msg, b"Subject: hi\r\n\r\nbody\r\n");
        assert_eq!(p, Progress::Done(input.len() - 6));
    }

    #[test]
    fn an_empty_message_ends_at_once() {
        let (msg, p) = decode(b".\r\n");
        assert_eq!(msg, b"");
        assert_eq!(p, Progress::Done(3));
    }

    #[test]
    fn dots_are_unstuffed_only_with_more_characters() {
        let (msg, _) = decode(b"..x\r\n...\r\n.y\r\n.\r\n");
        assert_eq!(msg, b".x\r\n..\r\ny\r\n");
    }

    #[test]
    fn bare_line_endings_become_crlf() {
        let (msg, p) = decode(b"a\nb\rc\r\n.\r\n");
        assert_eq!(msg, b"a\r\nb\r\nc\r\n");
        assert!(matches!(p, Progress::Done(_)));
    }

    #[test]
    fn smuggling_endings_never_end_the_message() {
        for ending in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r.\r",
            b"\r\n.\r",
            b"\r\n.\n",
            b"\r\n\x00.\r\n",
            b"\r\n.\x00\r\n",
            b"\n\n.\r\n",
            b"\r\n.\r\r\n",
        ] {
            let mut input = b"first".to_vec();
            input.extend_from_slice(ending);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n");
            let (_, p) = decode(&input);
            assert_eq!(
                p,
                Progress::More,
                "{:?} ended the message",
                String::from_utf8_lossy(ending)
            );
        }
    }

    #[test]
    fn the_end_is_found_across_reads() {
        let mut d = Decoder::data(1 << 20);
        for chunk in [&b"abc\r"[..], b"\n.", b"\r", b"\nNEXT"] {
            if let Progress::Done(used) = d.feed(chunk) {
                assert_eq!(&chunk[used..], b"NEXT");
                assert_eq!(d.into_message(), b"abc\r\n");
                return;
            }
        }
        panic!("end not found");
    }

    /// How the bytes arrive changes nothing: a message fed in two reads
    /// cut anywhere, or a byte at a time, decodes (and hits a size limit)
    /// exactly as when fed whole. Runs inside lines are copied in bulk, so
    /// this holds them to the byte-by-byte rules.
    #[test]
    fn reads_cut_anywhere_decode_the_same() {
        let input: &[u8] =
            b"Subject: a\r\n\r\n.stuffed\r\nbare\nlf and\rcr\r\n..\r\n.\n.\r.x\r\nend\r\n.\r\nNEXT";
        let run = |limit: u64, reads: &[&[u8]]| {
            let mut d = Decoder::data(limit);
            let mut fed = 0;
            for read in reads {
                if let Progress::Done(used) = d.feed(read) {
                    return (Some(fed + used), d.oversize(), d.into_message());
                }
                fed += read.len();
            }
            (None, d.oversize(), d.into_message())
        };
        let decoded: &[u8] =
            b"Subject: a\r\n\r\nstuffed\r\nbare\r\nlf and\r\ncr\r\n.\r\n.\r\n.\r\n.x\r\nend\r\n";
        for limit in [1 << 20, 0, 1, 12, 30, 58, 59, 60] {
            let whole = run(limit, &[input]);
            let over = decoded.len() as u64 > limit;
            let kept = if over { &b""[..] } else { decoded };
            assert_eq!(
                whole,
                (Some(input.len() - 4), over, kept.to_vec()),
                "limit {limit}"
            );
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                assert_eq!(run(limit, &[a, b]), whole, "limit {limit}, cut at {cut}");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(run(limit, &bytes), whole, "limit {limit}, byte by byte");
        }
    }

    #[test]
    fn over_the_limit_data_is_dropped_but_the_end_still_found() {
        let mut d = Decoder::data(10);
        assert_eq!(d.feed(&[b'x'; 1000]), Progress::More);
        assert!(
            d.out.capacity() <= 16,
            "kept {} bytes of an oversize line",
            d.out.capacity()
        );
        assert!(matches!(d.feed(b"\r\nmore\r\n.\r\n"), Progress::Done(_)));
        assert!(d.oversize());
        assert!(d.into_message().is_empty());
    }

    #[test]
    fn exactly_the_limit_fits() {
        let mut d = Decoder::data(8);
        assert!(matches!(d.feed(b"123456\r\n.\r\n"), Progress::Done(_)));
        assert!(!d.oversize());
        let mut d = Decoder::data(7);
        assert!(matches!(d.feed(b"123456\r\n.\r\n"), Progress::Done(_)));
        assert!(d.oversize());
    }

    /// A line longer than any buffer streams out: taking the output as it
    /// goes keeps memory flat, and the pieces add up to the message.
    #[test]
    fn a_long_line_streams_out_in_pieces() {
        let mut d = Decoder::data(1 << 22);
        let mut taken = Vec::new();
        let mut largest = 0;
        for _ in 0..256 {
            assert_eq!(d.feed(&[b'y'; 8192]), Progress::More);
            let piece = d.take_output();
            largest = largest.max(piece.len());
            taken.extend_from_slice(&piece);
        }
        assert!(matches!(d.feed(b"\r\n.\r\n"), Progress::Done(_)));
        taken.extend_from_slice(&d.take_output());
        assert_eq!(largest, 8192);
        assert_eq!(taken.len(), 256 * 8192 + 2);
        assert_eq!(d.size(), taken.len() as u64);
    }

    #[test]
    fn bdat_keeps_dots_and_normalises_endings() {
        let mut d = Decoder::bdat(1 << 20);
        assert_eq!(d.feed(b"..a\n.\r\nb"), Progress::More);
        d.finish_chunks();
        assert_eq!(d.into_message(), b"..a\r\n.\r\nb\r\n");
    }
}
