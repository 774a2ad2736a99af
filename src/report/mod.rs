//! `report`: how results reach people and tools: plans (text, JSON, shell
//! scripts) and runs (progress, step lines, recap, JSON events).

mod plan;
mod run;

pub use plan::{count, plan_json, plan_sh, plan_text};
pub use run::{JsonReporter, PlainReporter, TtyReporter, recap_text, status_word};
