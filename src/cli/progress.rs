//! `Progress` drawn as an indicatif bar on a terminal; warnings to stderr.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use secrate::progress::Progress;

pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    /// A bar when stderr is a terminal and not `--quiet`, else silence.
    pub fn new(quiet: bool) -> Bar {
        let show = !quiet && std::io::stderr().is_terminal();
        Bar {
            bar: show.then(ProgressBar::hidden),
        }
    }
}

impl Progress for Bar {
    fn start(&self, phase: &str, total: Option<u64>) {
        let Some(b) = &self.bar else { return };
        b.reset();
        b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        b.set_message(phase.to_string());
        match total {
            Some(t) => {
                b.set_length(t);
                b.set_style(
                    ProgressStyle::with_template("{msg:>10} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
            }
            None => {
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg:>10} {spinner} {bytes} {binary_bytes_per_sec} {elapsed}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
            }
        }
        b.enable_steady_tick(std::time::Duration::from_millis(200));
    }

    fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn warn(&self, message: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| errln!("warning: {message}")),
            None => errln!("warning: {message}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
