//! Deliberate bugs for proving that the checkers and the bug hunter find bugs. Off unless the
//! environment variable `LNETLAB_MUTANT` names them (comma-separated); read by tests and `hunt`
//! only, never set by a normal run.
//!
//! | name | what breaks |
//! |---|---|
//! | `sim_wall_clock` | the simulator's seed is mixed with the wall clock, so a replay differs |
//! | `osc_no_timeout` | the client never times out an RPC: a lost request or reply hangs it |
//! | `osc_no_replay` | the client drops its uncommitted requests instead of replaying them to a recovering target |

use std::sync::OnceLock;

/// Every mutant this build knows, for validation and `--help`.
pub const ALL: &[&str] = &["sim_wall_clock", "osc_no_timeout", "osc_no_replay"];

/// Is mutant `name` switched on?
pub fn active(name: &str) -> bool {
    static ON: OnceLock<Vec<String>> = OnceLock::new();
    debug_assert!(ALL.contains(&name), "unknown mutant {name}");
    ON.get_or_init(|| std::env::var("LNETLAB_MUTANT").unwrap_or_default().split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()).iter().any(|m| m == name)
}
