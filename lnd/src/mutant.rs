//! Deliberate bugs for proving that the checkers and the bug hunter find bugs. Off unless the
//! environment variable `LNETLAB_MUTANT` names them (comma-separated, `name` or `name=N`); read
//! by tests and `hunt` only, never set by a normal run.
//!
//! | name | what breaks | what catches it |
//! |---|---|---|
//! | `sim_wall_clock` | the simulator's seed is mixed with the wall clock, so a replay differs | `--check-determinism` |
//! | `osc_no_timeout` | the client never times out an RPC: a lost request or reply hangs it | a stalled run |
//! | `oss_drop_acked_write=N` | the OSS acknowledges every Nth WRITE it executes (default 40) and drops its data (it counts what is still lost in its stats: `oss.mutant_lost_writes`) | read-back: `lost_acked_writes` |
//! | `oss_damage_acked_write=N` | the OSS writes every Nth WRITE it executes (default 40) with a byte flipped, after checksumming what arrived: it reads back damaged and passes the read checksum (`oss.mutant_damaged_writes`) | read-back: `lost_acked_writes` and `silent_corruptions` |
//! | `oss_no_create_reconstruct` | a resent CREATE whose first attempt made the object makes a second one (`tgt_handle_recovery` reconstruction skipped): the first is leaked | `orphan_objects` |
//! | `dmalnd_bounce_leaks_credits` | an SMSG the device bounced (full mailbox, lost message) does not owe again the credits it carried back to its peer: the peer's window shrinks until it stalls | a stalled run |
//! | `router_drop_get_reply` | a router forwards no GET's REPLY (it frees the buffer as if the next hop failed): every bulk the server pulls through it is lost | the client gives up (errors) |
//! | `osc_no_replay` | the client drops its uncommitted requests instead of replaying them to a recovering target | read-back after a `crash`: `lost_acked_writes` |
//! | `lnet_initiator_not_primary` | LNet reports a Multi-Rail peer by the NID a message came from, not its primary NID: what arrives over another rail matches no ME | the client gives up (errors) |

use std::sync::OnceLock;

/// Every mutant this build knows, for validation and `--help`.
pub const ALL: &[&str] = &["sim_wall_clock", "osc_no_timeout", "oss_drop_acked_write", "oss_damage_acked_write", "oss_no_create_reconstruct", "dmalnd_bounce_leaks_credits", "router_drop_get_reply", "osc_no_replay", "lnet_initiator_not_primary"];

/// The mutants switched on, with their parameter (`name=N`).
fn on() -> &'static [(String, Option<u64>)] {
    static ON: OnceLock<Vec<(String, Option<u64>)>> = OnceLock::new();
    ON.get_or_init(|| parse(&std::env::var("LNETLAB_MUTANT").unwrap_or_default()))
}

fn parse(s: &str) -> Vec<(String, Option<u64>)> {
    s.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| match m.split_once('=') {
            Some((n, v)) => (n.trim().to_string(), v.trim().parse().ok()),
            None => (m.to_string(), None),
        })
        .collect()
}

/// What is wrong with `LNETLAB_MUTANT` (a name this build does not know), in one line.
pub fn check_env() -> Result<(), String> {
    check(&std::env::var("LNETLAB_MUTANT").unwrap_or_default())
}

fn check(s: &str) -> Result<(), String> {
    match parse(s).into_iter().find(|(m, _)| !ALL.contains(&m.as_str())) {
        Some((m, _)) => Err(format!("LNETLAB_MUTANT: no mutant `{m}` (known: {})", ALL.join(", "))),
        None => Ok(()),
    }
}

/// Is mutant `name` switched on?
pub fn active(name: &str) -> bool {
    debug_assert!(ALL.contains(&name), "unknown mutant {name}");
    on().iter().any(|(m, _)| m == name)
}

/// Mutant `name`'s parameter N when it is on (`name=N`; `default` when given as just `name`).
pub fn param(name: &str, default: u64) -> Option<u64> {
    debug_assert!(ALL.contains(&name), "unknown mutant {name}");
    on().iter().find(|(m, _)| m == name).map(|(_, n)| n.unwrap_or(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parameters_parse() {
        assert_eq!(parse(" a, b=7 ,,c=x"), vec![("a".into(), None), ("b".into(), Some(7)), ("c".into(), None)]);
        assert!(parse("").is_empty());
        assert_eq!(check("oss_drop_acked_write=7, router_drop_get_reply"), Ok(()));
        assert!(check("oss_drop_acked_writes").unwrap_err().contains("no mutant `oss_drop_acked_writes` (known: sim_wall_clock,"));
    }
}
