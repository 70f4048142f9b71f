//! Test harness of hotagent's integration tests.
//!
//! - [`paths`]: the repository, the release artifacts (`libhotagent.so`, `hotctl`).
//! - [`fixtures`]: builds the C/C++/Rust fixtures of `tests/fixtures/` into
//!   `target/fixtures/<config>/`, in a matrix of binding/PIE configurations.
//! - [`target`]: a fixture program run under the agent in its own socket folder, driven line by
//!   line on stdin/stdout.
//! - [`code`]: a target's code in memory against its file (no `int3` left behind).
//! - [`ctl`]: the real `hotctl`, and raw requests on an agent's socket.
//! - [`files`]: atomic file replacement and broken-ELF crafting.
//! - [`users`]: another user (`hotagent-test`), made with `useradd` when needed.

pub mod code;
pub mod ctl;
pub mod files;
pub mod fixtures;
pub mod paths;
pub mod target;
pub mod users;

pub use code::entries_holding_int3;
pub use ctl::{
    check_failure, decode_reply, expect_error, expect_fail, hotctl, hotctl_in, hotctl_json,
    hotctl_state, path_str, raw_exchange, raw_line, raw_request, read_reply, reload, reload_json,
    reload_request, rollback, rollback_with, run_example, status, CtlOutput,
};
pub use files::{copy_atomic, patched_copy, scratch, truncated_copy, write_atomic};
pub use fixtures::{all_artifacts, matrix_artifacts, Bind, Config};
pub use hotagent_protocol as protocol;
pub use paths::{agent_so, hotctl_bin, release_cdylib, repo_root, target_dir};
pub use target::{wait_for_agent, AgentRef, Finished, HasAgent, Target, DEADLINE};
pub use users::{is_root, test_user, User};

/// `$NAME` parsed as a `T`; `None` when it is unset or does not parse.
pub fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Defines one `#[test]` per configuration of the matrix for a scenario `fn NAME(cfg: Config)`:
/// `matrix!(NAME);` makes a module `NAME` with tests `lazy_pie`, `lazy_nopie`, `now_pie`,
/// `now_nopie`, `noplt_pie`, `noplt_nopie`, so a failure names the configuration.
#[macro_export]
macro_rules! matrix {
    ($($scenario:ident),+ $(,)?) => {
        $(
            $crate::matrix!(@tests $scenario:
                lazy_pie LAZY_PIE,
                lazy_nopie LAZY_NOPIE,
                now_pie NOW_PIE,
                now_nopie NOW_NOPIE,
                noplt_pie NOPLT_PIE,
                noplt_nopie NOPLT_NOPIE,
            );
        )+
    };
    (@tests $scenario:ident: $($test:ident $cfg:ident,)+) => {
        mod $scenario {
            $(
                #[test]
                fn $test() {
                    super::$scenario($crate::Config::$cfg)
                }
            )+
        }
    };
}
