//! Comparing the engine with an oracle: metrics, tap alignment, thresholds, verdicts,
//! receipts, the gate, and their rendering for a person (terminal table, SVG plot, HTML page).
//!
//! [`compare_core`] takes both sides as plain data and returns a [`Receipt`]; the `compare`
//! command only gathers that data from the engine and an oracle.

pub mod align;
pub mod core;
pub mod diagnose;
pub mod float_serde;
pub mod gate;
pub mod html;
pub mod judge;
pub mod kernel_sets;
pub mod metrics;
pub mod plot;
pub mod receipt;
pub mod report;
pub mod thresholds;
pub mod verdict;

pub use self::core::{apply_judgement, compare_core, CompareSettings, Side, SideEval, Twin};
pub use receipt::Receipt;
pub use receipt::ReplayError;
pub use thresholds::Thresholds;
pub use verdict::Verdict;
