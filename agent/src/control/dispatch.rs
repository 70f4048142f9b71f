//! One request line in, one response out. Panics stop here: the target never sees them.

use crate::reload::{Agent, ReloadError};
use hotagent_protocol::{decode_request, ErrorCode, ErrorReply, Request, Response};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ErrorReply {
        code,
        message: message.into(),
    })
}

fn from_reload(e: ReloadError) -> Response {
    error(e.code(), e.to_string())
}

/// Decodes and runs one request against the agent's state.
pub fn handle_line(agent: &Mutex<Agent>, line: &[u8]) -> Response {
    let req = match decode_request(line) {
        Ok(r) => r,
        Err(e) => return error(ErrorCode::BadRequest, e.to_string()),
    };
    let run = AssertUnwindSafe(|| {
        // A panic in an earlier request poisoned the lock; the state itself stays consistent
        // (every step that changes it finishes or is undone), so carry on with it.
        let mut agent = agent.lock().unwrap_or_else(|p| p.into_inner());
        match &req {
            Request::Reload(r) => agent
                .reload(r)
                .map(Response::Reload)
                .unwrap_or_else(from_reload),
            Request::Rollback => agent
                .rollback()
                .map(Response::Rollback)
                .unwrap_or_else(from_reload),
            Request::Status => Response::Status(agent.status()),
        }
    });
    match catch_unwind(run) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            tracing::error!(what, "request abandoned after an internal fault");
            error(
                ErrorCode::Internal,
                format!("internal fault in the agent, request abandoned: {what}"),
            )
        }
    }
}
