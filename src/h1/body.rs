//! Where a body ends on the wire, without decoding it: the chunked framing scanner and the
//! response body tracker the lean path relays with. Pure functions over byte slices; no I/O.

use super::wire::{Framing, WireError};

/// Finds the end of a chunked body in bytes handed to it piece by piece, without decoding it:
/// the bytes are relayed as they came.
#[derive(Debug, Clone, Default)]
pub struct ChunkedScanner {
    state: ChunkState,
    /// Data bytes left in the current chunk, or the size being read.
    size: u64,
    digits: u8,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

impl ChunkedScanner {
    /// Consumes bytes of the body up to its end; returns how many of `data` belong to it (all of
    /// them unless the body ended inside `data`).
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, WireError> {
        use ChunkState::*;
        let mut i = 0;
        while i < data.len() && self.state != Done {
            if self.state == Data {
                let take = (data.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = data[i];
            i += 1;
            self.state = match (self.state, b) {
                (Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits == 15 {
                        return Err(WireError::BadChunk);
                    }
                    self.digits += 1;
                    self.size = self.size * 16 + u64::from(hex_value(b));
                    Size
                }
                (Size, b';' | b' ' | b'\t') if self.digits > 0 => Extension,
                (Size, b'\r') if self.digits > 0 => SizeLf,
                (Extension, b'\r') => SizeLf,
                (Extension, b'\n') => return Err(WireError::BadChunk),
                (Extension, _) => Extension,
                (SizeLf, b'\n') if self.size == 0 => TrailerStart,
                (SizeLf, b'\n') => Data,
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => {
                    self.digits = 0;
                    Size
                }
                (TrailerStart, b'\r') => FinalLf,
                (TrailerStart, b'\n') => return Err(WireError::BadChunk),
                (TrailerLine, b'\r') => TrailerLf,
                (TrailerStart | TrailerLine, _) => TrailerLine,
                (TrailerLf, b'\n') => TrailerStart,
                (FinalLf, b'\n') => Done,
                _ => return Err(WireError::BadChunk),
            };
        }
        Ok(i)
    }

    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Tracks how much of a response body is still to come.
pub struct BodyEnd {
    framing: Framing,
    left: u64,
    chunked: ChunkedScanner,
    finished: bool,
}

impl BodyEnd {
    pub fn new(framing: Framing) -> Self {
        BodyEnd {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunked: ChunkedScanner::default(),
            finished: matches!(framing, Framing::Empty | Framing::Length(0)),
        }
    }

    /// Takes the body bytes at the start of `data`; returns how many belong to this body.
    pub fn accept(&mut self, data: &[u8]) -> Result<usize, WireError> {
        if self.finished {
            return Ok(0);
        }
        let used = match self.framing {
            Framing::Empty => 0,
            Framing::Length(_) => {
                let n = data
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= n as u64;
                self.finished = self.left == 0;
                n
            }
            Framing::Chunked => {
                let n = self.chunked.scan(data)?;
                self.finished = self.chunked.done();
                n
            }
            Framing::Close => data.len(),
        };
        Ok(used)
    }

    pub fn done(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(body: &[u8], piece: usize) -> Result<(usize, bool), WireError> {
        let mut s = ChunkedScanner::default();
        let mut used = 0;
        for chunk in body.chunks(piece) {
            let n = s.scan(chunk)?;
            used += n;
            if n < chunk.len() {
                break;
            }
        }
        Ok((used, s.done()))
    }

    #[test]
    fn chunked_scanner_finds_the_end_whatever_the_pieces() {
        let body = b"5;foo=bar\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for piece in 1..=body.len() {
            assert_eq!(scan_all(body, piece), Ok((end, true)), "piece {piece}");
        }
        assert_eq!(scan_all(b"0\r\n\r\n", 100), Ok((5, true)));
        assert_eq!(scan_all(b"000\r\n\r\n", 100), Ok((7, true)));
        // Not finished yet.
        assert_eq!(scan_all(b"5\r\nhel", 100), Ok((6, false)));
        assert_eq!(scan_all(b"0\r\nX: 1\r\n", 100), Ok((9, false)));
    }

    #[test]
    fn chunked_scanner_rejects_malformed_framing() {
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\r\nhelloXX",
            b"5\nhello\r\n",
            b"1234567890abcdef0\r\n",
            b"0\r\n\n",
            b"5;ext\nhello",
        ] {
            assert_eq!(
                scan_all(bad, 100),
                Err(WireError::BadChunk),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Feeds `data` to a fresh tracker in pieces of `piece` bytes; (bytes of the body, ended).
    fn track(framing: Framing, data: &[u8], piece: usize) -> Result<(usize, bool), WireError> {
        let mut body = BodyEnd::new(framing);
        let mut used = 0;
        for chunk in data.chunks(piece) {
            used += body.accept(chunk)?;
        }
        Ok((used, body.done()))
    }

    #[test]
    fn body_end_follows_the_framing_whatever_the_pieces() {
        let chunked = b"3\r\nabc\r\n0\r\n\r\nNEXT";
        for piece in 1..=12 {
            assert_eq!(
                track(Framing::Length(5), b"helloNEXT", piece),
                Ok((5, true))
            );
            assert_eq!(track(Framing::Length(5), b"hel", piece), Ok((3, false)));
            assert_eq!(track(Framing::Chunked, chunked, piece), Ok((13, true)));
            // Until the upstream closes, every byte is body.
            assert_eq!(track(Framing::Close, b"all of it", piece), Ok((9, false)));
        }
        assert_eq!(BodyEnd::new(Framing::Empty).accept(b"x"), Ok(0));
        assert!(BodyEnd::new(Framing::Empty).done());
        assert!(BodyEnd::new(Framing::Length(0)).done());
        assert_eq!(
            track(Framing::Chunked, b"zz\r\n", 2),
            Err(WireError::BadChunk)
        );
    }
}
