//! The `harness` binary's library: CLI, inspect, fixtures.

pub mod oracle_cmd;
pub mod oracle_worker;
