//! `report`: how results reach people and tools: plans (text, JSON, shell
//! scripts), runs (progress, step lines, recap, JSON events) and verify
//! reports (text with bar charts, JSON, JUnit XML).

mod drift;
mod plan;
mod run;
mod verify;

pub use drift::{drift_json, drift_text};
pub use plan::{count, plan_json, plan_sh, plan_text};
pub use run::{JsonReporter, PlainReporter, TtyReporter, failures_json, recap_text, status_word};
pub use verify::{verify_json, verify_junit, verify_summary, verify_text, xml_escape};

/// The vm provider's boot progress on stderr: a spinner with the elapsed time on a terminal,
/// plain lines otherwise. Nothing is drawn until a provider reports a step.
pub struct Spinner {
    start: std::time::Instant,
    bar: indicatif::ProgressBar,
    ticking: std::sync::atomic::AtomicBool,
}

impl Default for Spinner {
    fn default() -> Self {
        Self::new()
    }
}

impl Spinner {
    pub fn new() -> Spinner {
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} vm: {msg} ({elapsed})") {
            bar.set_style(style);
        }
        Spinner {
            start: std::time::Instant::now(),
            bar,
            ticking: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl crate::exec::Progress for Spinner {
    fn step(&self, msg: &str) {
        if self.bar.is_hidden() {
            eprintln!("vm: {msg}");
        } else {
            if !self.ticking.swap(true, std::sync::atomic::Ordering::Relaxed) {
                self.bar.enable_steady_tick(std::time::Duration::from_millis(200));
            }
            self.bar.set_message(msg.to_string());
        }
    }

    /// With the time since the start.
    fn done(&self, msg: &str) {
        let line = format!("vm: {msg} ({:.0} s)", self.start.elapsed().as_secs_f64());
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}
