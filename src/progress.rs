//! Progress bars on standard error (indicatif). They hide themselves when standard error is not
//! a terminal; callers print a summary line after each step for logs and pipes.

use indicatif::{HumanCount, ProgressBar, ProgressState, ProgressStyle};

/// A bar counting `unit`s towards `len`, or a spinner when `len` is 0 (size unknown).
pub fn bar(len: u64, unit: &str, message: &str) -> ProgressBar {
    let bar = if len == 0 {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::new(len)
    };
    let template = if len == 0 && unit.is_empty() {
        "{spinner} {msg} {elapsed}".to_string()
    } else if len == 0 {
        format!("{{spinner}} {{msg}} {{pos}} {unit} {{elapsed}}")
    } else {
        format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{rate}}, eta {{eta}}")
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        // Whole units per second (indicatif's `per_sec` shows four decimals).
        let rate = |state: &ProgressState, out: &mut dyn std::fmt::Write| {
            let _ = write!(out, "{}/s", HumanCount(state.per_sec() as u64));
        };
        bar.set_style(style.progress_chars("=> ").with_key("rate", rate));
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// A spinner counting bytes (total unknown), with their rate.
pub fn bytes_bar(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg} {bytes} ({binary_bytes_per_sec}) {elapsed}")
    {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}
