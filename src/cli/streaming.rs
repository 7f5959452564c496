//! What `simdet`, `consume` and `relay` share: progress (a bar on a terminal, a log line
//! otherwise).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Progress of a long run: a bar on a terminal, a line on stderr every period otherwise.
pub struct Progress {
    bar: Option<ProgressBar>,
    command: &'static str,
    quiet: bool,
}

impl Progress {
    /// Progress towards `total` (a spinner without one); `quiet` turns it off.
    pub fn new(command: &'static str, total: Option<u64>, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = match total {
                Some(n) => ProgressBar::new(n).with_style(
                    ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {pos} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                ),
            };
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            command,
            quiet,
        }
    }

    /// Report `position` with a message.
    pub fn update(&self, position: u64, message: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(position);
                bar.set_message(message.to_owned());
            }
            None if !self.quiet => eprintln!("pvabridge {}: {message}", self.command),
            None => {}
        }
    }

    /// Remove the bar before the summary is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
