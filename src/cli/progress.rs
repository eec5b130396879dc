//! Progress bars on a terminal; nothing when output is redirected (a service, cron).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{BackupProgress, RestoreProgress};

/// A bar redrawn from shared counters until `finish`.
pub struct Bar {
    bar: Option<ProgressBar>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Bar {
    pub fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn start(enabled: bool, template: &str, tick: impl Fn(&ProgressBar) + Send + 'static) -> Bar {
    if !enabled {
        return Bar {
            bar: None,
            stop: None,
        };
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template(template).expect("template"));
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let b = bar.clone();
    tokio::spawn(async move {
        loop {
            tick(&b);
            tokio::select! {
                _ = &mut rx => break,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    });
    Bar {
        bar: Some(bar),
        stop: Some(tx),
    }
}

pub fn backup_bar(enabled: bool, p: Arc<BackupProgress>) -> Bar {
    start(enabled, "{spinner} [{elapsed_precise}] {msg}", move |b| {
        b.set_message(format!(
            "{} files, {} read, {} stored",
            p.files_done.load(Ordering::Relaxed),
            super::show::size(p.bytes_read.load(Ordering::Relaxed)),
            super::show::size(p.bytes_stored.load(Ordering::Relaxed)),
        ));
        b.tick();
    })
}

pub fn restore_bar(enabled: bool, p: Arc<RestoreProgress>) -> Bar {
    start(
        enabled,
        "{bar:40} {percent}% [{elapsed_precise}] {msg}",
        move |b| {
            let total = p.bytes_total.load(Ordering::Relaxed).max(1);
            b.set_length(total);
            b.set_position(p.bytes_done.load(Ordering::Relaxed));
            b.set_message(format!(
                "{} files, {} of {}",
                p.files_done.load(Ordering::Relaxed),
                super::show::size(p.bytes_done.load(Ordering::Relaxed)),
                super::show::size(total),
            ));
        },
    )
}
