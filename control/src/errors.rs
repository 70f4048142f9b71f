//! How a failure reaches the user: one line in words on stderr, and with `--json` one document
//! on stdout too, so a script reading stdout always gets JSON.

use std::io;

use serde_json::json;

use crate::client::{AgentError, ExchangeError};

/// `{"error": {"code", "message"}}`: the agent's own code when it refused, else hotctl's.
pub fn to_json(err: &anyhow::Error, message: &str) -> serde_json::Value {
    json!({ "error": { "code": code(err), "message": message } })
}

fn code(err: &anyhow::Error) -> String {
    if let Some(AgentError(reply)) = err.downcast_ref::<AgentError>() {
        return serde_json::to_value(reply.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "refused".into());
    }
    let code = match err.downcast_ref::<ExchangeError>() {
        Some(ExchangeError::Unknown { .. }) => "outcome_unknown",
        Some(ExchangeError::Died { .. }) => "target_died",
        Some(ExchangeError::TimedOut { .. }) => "timed_out",
        Some(ExchangeError::Untrusted { .. }) => "untrusted",
        Some(ExchangeError::Stale { .. }) => "no_agent",
        Some(_) => "connection",
        None if err.downcast_ref::<crate::try_verb::TryError>().is_some() => "try_failed",
        None => "failed",
    };
    code.into()
}

/// Replaces every `<text> (os error N)` the standard library writes with a sentence.
pub fn in_words(message: &str) -> String {
    let mut out = message.to_string();
    while let Some(at) = out.find("(os error ") {
        let tail = &out[at + "(os error ".len()..];
        let Some(end) = tail.find(')') else { break };
        let Ok(errno) = tail[..end].parse::<i32>() else {
            break;
        };
        let raw = io::Error::from_raw_os_error(errno).to_string();
        let sentence = sentence(errno).unwrap_or_else(|| describe(&raw));
        let close = at + "(os error ".len() + end + 1;
        let start = out[..at].rfind(raw.trim_end_matches(&format!(" (os error {errno})")));
        match start {
            Some(start) => out.replace_range(start..close, &sentence),
            None => out.replace_range(at..close, ""),
        }
    }
    out.trim_end().to_string()
}

/// The strerror text without its number, lower-cased.
fn describe(raw: &str) -> String {
    let text = raw.split(" (os error").next().unwrap_or(raw);
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn sentence(errno: i32) -> Option<String> {
    let text = match errno {
        libc::EACCES => "permission denied (it belongs to another user; run as that user or root)",
        libc::EPERM => "not permitted (it belongs to another user; run as that user or root)",
        libc::ECONNRESET | libc::EPIPE => {
            "the agent hung up (it answers only the user the process started as, and root)"
        }
        libc::ECONNREFUSED => "nothing listens there (the process has exited or lost its agent)",
        libc::ENOENT => "there is no such file or folder",
        libc::ENOTDIR => "a part of the path is not a folder",
        libc::ETIMEDOUT => "no answer in time",
        libc::EAGAIN => "the agent's queue is full; try again",
        _ => return None,
    };
    Some(text.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_in_words() {
        let raw = io::Error::from_raw_os_error(libc::EACCES);
        let text = in_words(&format!("cannot open socket folder /x: {raw}"));
        assert_eq!(
            text,
            "cannot open socket folder /x: permission denied (it belongs to another user; run as \
             that user or root)"
        );
        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
        assert!(!in_words(&format!("a: {reset}; b: {reset}")).contains("os error"));
        let odd = io::Error::from_raw_os_error(libc::EXDEV);
        let text = in_words(&format!("x: {odd}"));
        assert!(!text.contains("os error"), "{text}");
        assert!(text.starts_with("x: invalid cross-device link"), "{text}");
        assert_eq!(in_words("plain"), "plain");
    }

    #[test]
    fn json_error_document() {
        let err = anyhow::anyhow!("no hotagent process found");
        let doc = to_json(&err, "no hotagent process found");
        assert_eq!(doc["error"]["code"], "failed");
        assert_eq!(doc["error"]["message"], "no hotagent process found");
    }
}
