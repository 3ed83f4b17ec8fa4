//! The `harness` binary's library: CLI, inspect, fixtures.
