//! `report`: how results reach people and tools: plans (text, JSON, shell
//! scripts), runs (progress, step lines, recap, JSON events) and verify
//! reports (text with bar charts, JSON, JUnit XML).

mod drift;
mod plan;
mod run;
mod verify;

pub use drift::{drift_json, drift_text};
pub use plan::{count, plan_json, plan_sh, plan_text};
pub use run::{JsonReporter, PlainReporter, TtyReporter, recap_text, status_word};
pub use verify::{verify_json, verify_junit, verify_summary, verify_text, xml_escape};
