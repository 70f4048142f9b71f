//! Two builds of a shared library compared without loading either: which exported functions
//! differ (code compared with every reference normalised to what it points at, read-only data
//! read rip-relative compared by content), which were added or removed, which exported data
//! changed size. The agent's `reload --changed-only` and `hotctl diff` both decide "changed"
//! here, so they never disagree. Pure file reading: no `unsafe`, nothing process-specific.
#![forbid(unsafe_code)]

pub mod changed;
pub mod compare;
pub mod diff;
pub mod file;
pub mod refs;
