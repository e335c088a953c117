//! Per-layer progress bars (indicatif on stderr), or nothing in quiet mode.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A set of progress bars, one per blob; hidden when quiet.
pub(super) struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Self {
            multi: enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// A bar for a blob of `size` bytes labelled with the short digest.
    pub fn bar(&self, hex: &str, size: u64) -> ProgressBar {
        let Some(m) = &self.multi else {
            return ProgressBar::hidden();
        };
        let pb = m.add(ProgressBar::new(size));
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        pb.set_prefix(hex.chars().take(12).collect::<String>());
        pb
    }
}
