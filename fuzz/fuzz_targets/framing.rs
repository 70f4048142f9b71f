//! Request framing and decoding over arbitrary bytes: what a client may send the agent.
//!
//! Nothing may panic, and whatever decodes must survive a round trip: re-encoded, it is one line
//! that decodes to the same value. Responses (what hotctl reads back) get the same treatment.
#![no_main]

use hotagent_protocol::{decode_request, encode_line, FrameError, Response, MAX_LINE_BYTES};
use libfuzzer_sys::fuzz_target;

fn check_request(line: &[u8]) {
    match decode_request(line) {
        Ok(req) => {
            let out = encode_line(&req);
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
            assert_eq!(out.last(), Some(&b'\n'));
            // Defaults spelled out can make the encoding longer than what was sent.
            if out.len() <= MAX_LINE_BYTES {
                assert_eq!(decode_request(&out), Ok(req));
            } else {
                assert_eq!(decode_request(&out), Err(FrameError::TooLong(out.len())));
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The whole buffer, and the first line as the agent frames it (up to the first newline).
    check_request(data);
    if let Some(nl) = data.iter().position(|&b| b == b'\n') {
        check_request(&data[..nl]);
    }
    if let Ok(resp) = serde_json::from_slice::<Response>(data) {
        let out = encode_line(&resp);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let back: Response = serde_json::from_slice(&out).expect("an encoded response decodes");
        assert_eq!(back, resp);
    }
});
