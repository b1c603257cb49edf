//! A test aid in debug builds only: with `TING_TEST_TAP=<file>`, the media workers append
//! one JSON line per forwarded RTP packet (at most [`MAX_LINES`]) with its sender, source,
//! size and first bytes, so a test can show what the server forwards (for end-to-end
//! encryption: ciphertext, not the frames the browsers encoded). Release builds have no tap.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{LineWriter, Write as _};
use std::sync::{Mutex, OnceLock};

use ting_media::{RtpIn, Source};

/// Lines the tap writes at most; then it stops.
pub const MAX_LINES: usize = 20_000;

/// Bytes of each payload the tap records.
const HEAD: usize = 64;

struct Tap {
    out: LineWriter<File>,
    lines: usize,
}

fn tap() -> Option<&'static Mutex<Tap>> {
    static TAP: OnceLock<Option<Mutex<Tap>>> = OnceLock::new();
    TAP.get_or_init(|| {
        let path = std::env::var_os("TING_TEST_TAP")?;
        match File::options().create(true).append(true).open(&path) {
            Ok(f) => Some(Mutex::new(Tap {
                out: LineWriter::new(f),
                lines: 0,
            })),
            Err(e) => {
                tracing::warn!(error = %e, "TING_TEST_TAP cannot be opened; no tap");
                None
            }
        }
    })
    .as_ref()
}

/// Records a packet the router forwarded to `to` subscribers (none: nothing to record).
pub fn forwarded(pkt: &RtpIn, to: usize) {
    if to > 0 {
        record(pkt.track.endpoint.0, pkt.track.source, &pkt.payload);
    }
}

/// Records one forwarded packet, if the tap is on and not yet full.
fn record(sender: u64, source: Source, payload: &[u8]) {
    let Some(tap) = tap() else {
        return;
    };
    let mut t = tap.lock().unwrap_or_else(|e| e.into_inner());
    if t.lines >= MAX_LINES {
        return;
    }
    t.lines += 1;
    let source = match source {
        Source::Microphone => "microphone",
        Source::Camera => "camera",
        Source::Screen => "screen",
    };
    let mut head = String::with_capacity(HEAD * 2);
    for b in &payload[..payload.len().min(HEAD)] {
        let _ = write!(head, "{b:02x}");
    }
    let _ = writeln!(
        t.out,
        r#"{{"pid":"{sender:016x}","source":"{source}","len":{},"head":"{head}"}}"#,
        payload.len()
    );
}
