//! Line framing: one JSON document per line, bounded in size.

use crate::wire::Request;
use serde::Serialize;

/// A request line longer than this is refused before it is parsed, so a hostile or broken client
/// cannot make the agent allocate without bound inside the target.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Why a request line could not be turned into a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The line exceeded [`MAX_LINE_BYTES`].
    TooLong(usize),
    /// The bytes were not UTF-8.
    NotUtf8,
    /// The line was empty (only white space).
    Empty,
    /// The line was JSON but not a request this agent knows, or not JSON at all.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLong(n) => {
                write!(
                    f,
                    "request of {n} bytes exceeds the limit of {MAX_LINE_BYTES} bytes"
                )
            }
            FrameError::NotUtf8 => f.write_str("request is not valid UTF-8"),
            FrameError::Empty => f.write_str("empty request"),
            FrameError::Malformed(why) => write!(f, "malformed request: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Decodes one request line (with or without its trailing newline).
pub fn decode_request(line: &[u8]) -> Result<Request, FrameError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(FrameError::TooLong(line.len()));
    }
    let text = std::str::from_utf8(line).map_err(|_| FrameError::NotUtf8)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(FrameError::Empty);
    }
    serde_json::from_str(text).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// Encodes any wire value as one line ending in `\n`.
pub fn encode_line<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail: no maps with non-string keys, no custom impls.
    let mut out = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    #[test]
    fn request_round_trips() {
        let reqs = [
            Request::Reload(ReloadRequest {
                path: "/tmp/libfoo.so".into(),
                replace: Some("libc.so.6".into()),
                dry_run: true,
                no_probe: false,
                got_only: true,
                fresh_state: false,
                changed_only: false,
                checkpoint: false,
                deadline_ms: Some(12),
                confirm: true,
                settle_ms: Some(100),
                hook_timeout_ms: None,
                probation_ms: None,
                persist: false,
                on_next_start: false,
                force: false,
            }),
            Request::rollback(),
            Request::status(),
            Request::commit(),
        ];
        for req in reqs {
            let line = encode_line(&req);
            assert_eq!(*line.last().unwrap(), b'\n');
            assert_eq!(decode_request(&line).unwrap(), req);
        }
    }

    #[test]
    fn rejects_bad_lines() {
        assert_eq!(decode_request(b"  \n"), Err(FrameError::Empty));
        assert_eq!(decode_request(&[0xff, 0xfe]), Err(FrameError::NotUtf8));
        assert!(matches!(
            decode_request(b"{\"op\":\"explode\"}"),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode_request(b"{\"op\":\"status\""),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode_request(b"{\"op\":\"reload\",\"path\":\"/x\",\"bogus\":1}"),
            Err(FrameError::Malformed(_))
        ));
        // Every verb refuses fields it does not know, and a rollback takes no generation.
        for line in [
            &b"{\"op\":\"rollback\",\"generation\":-1}"[..],
            b"{\"op\":\"status\",\"verbose\":true}",
            b"{\"op\":\"commit\",\"x\":1}",
        ] {
            assert!(
                matches!(decode_request(line), Err(FrameError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let big = vec![b' '; MAX_LINE_BYTES + 1];
        assert_eq!(
            decode_request(&big),
            Err(FrameError::TooLong(MAX_LINE_BYTES + 1))
        );
    }
}
