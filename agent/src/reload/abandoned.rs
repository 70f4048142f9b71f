//! Why a request was given up at its point of no return (`control::dispatch::gate`): its
//! deadline passed or its client left before the change started. Wire code `Abandoned`.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Abandonment {
    #[error("the request's deadline passed {late_ms} ms before the change could start; nothing was changed")]
    DeadlinePassed { late_ms: u64 },
    #[error(
        "the program closed the client's connection before the change started; nothing was changed"
    )]
    ConnectionClosed,
    #[error("the client left before the change started; nothing was changed")]
    ClientLeft,
    #[error("the client did not take the ready answer in time; nothing was changed")]
    ReadyNotTaken,
    #[error("the commit was read {late_ms} ms after the request's deadline; nothing was changed")]
    CommitLate { late_ms: u64 },
    #[error("the client answered ready with something other than commit; nothing was changed")]
    NotCommit,
    /// `wait_s` is the agent's own limit on the wait, in whole seconds.
    #[error("the client did not commit before the deadline or within {wait_s} s of the ready answer; nothing was changed")]
    NoCommit { wait_s: u64 },
}
