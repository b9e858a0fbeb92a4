//! The two renderings of one plan agree: the lean path's upstream bytes and pingora's
//! `RequestHeader`, serialised by pingora, for a corpus of heads and bounded seeded mutations of
//! them (the fuzz target `forward_render` runs the same check on arbitrary input).

#[path = "../fuzz/render_check.rs"]
mod render_check;

const CORPUS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a?b=1&c=[2] HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\nAuthorization: Basic u\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: keep-alive, X-Hop, x-other\r\nX-Hop: 1\r\nX-Other: 2\r\n\r\nabc",
    b"GET /h HTTP/1.1\r\nHost: x\r\nKeep-Alive: 5\r\nTE: trailers\r\nTrailer: T\r\nProxy-Authorization: p\r\nProxy-Connection: c\r\nUpgrade: h2c\r\nHTTP2-Settings: s\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"PUT /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
    b"GET http://api.example:8443/abs?q HTTP/1.1\r\nHost: api.example:8443\r\n\r\n",
    b"GET http://127.0.0.1:8081 HTTP/1.1\r\nHost: y\r\n\r\n",
    b"GET /ten HTTP/1.0\r\nX: \xff\xfe\r\n\r\n",
    b"OPTIONS /o HTTP/1.1\r\nHost: x\r\nAUTHORIZATION: a\r\nauthorization: b\r\n\r\n",
];

/// A deterministic generator, so a failure names a seed that reproduces it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the policy, for mutations to splice in.
const PIECES: &[&[u8]] = &[
    b"\r\nConnection: ",
    b", x-a",
    b"close",
    b"upgrade",
    b"\r\nUpgrade: websocket",
    b"\r\nHost: y",
    b"\r\nAuthorization: c",
    b"\r\nContent-Length: 1",
    b"?",
    b"%",
    b"/",
    b" ",
    b":",
    b"\r\n",
];

#[test]
fn both_renderings_of_a_plan_send_the_same_request() {
    for head in CORPUS {
        for keep in [false, true] {
            render_check::check(head, keep);
        }
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..20_000 {
        let mut head = CORPUS[rng.below(CORPUS.len())].to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(head.len());
            match rng.below(3) {
                0 => {
                    let piece = PIECES[rng.below(PIECES.len())];
                    head.splice(at..at, piece.iter().copied());
                }
                1 => {
                    head.remove(at);
                }
                _ => head[at] = (rng.next() & 0x7f) as u8,
            }
        }
        let keep = round % 2 == 0;
        render_check::check(&head, keep);
    }
}
