//! Probation of a newly activated model: for `probation_s` seconds, and until it has classified
//! at least `probation_windows` windows, every window the new model classifies is watched. An
//! error, a window whose flows and inference take longer than `max_window_ms`, or no answer at
//! all to a window asked for, fails the model; the push listener then returns the device to the
//! model before it ([`crate::push_server::PushServer::watch_probation`]). When the room offers
//! too few windows, the capture loop is asked for one ([`Verdict::Pending`] with `want_window`):
//! the last seconds of live frames, or a built-in synthetic clip when none are buffered.
//!
//! This module only keeps count; the store records a probation in progress, so a device killed
//! during one comes back on the model that passed before (`ModelStore::load_active`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a classified window means for the model that classified it.
pub trait WindowObserver: Send + Sync {
    /// `outcome`: the milliseconds of flows, input assembly and inference, or why it failed.
    fn classified(&self, model_version: &str, outcome: Result<f64, String>);
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbationSettings {
    pub seconds: f64,
    pub windows: u32,
    pub max_window_ms: f64,
}

impl ProbationSettings {
    /// How long a window asked for may take to come back before the model is failed: a hung or
    /// hopelessly slow classifier.
    fn answer_within(&self) -> Duration {
        Duration::from_secs_f64((self.max_window_ms * 4.0 / 1000.0).max(5.0))
    }

    /// Pause between windows asked for, so that they spread over the probation.
    fn spacing(&self) -> Duration {
        Duration::from_secs_f64((self.seconds / (self.windows as f64 + 1.0)).max(0.5))
    }
}

#[derive(Debug, Clone)]
struct Trial {
    sha256: String,
    version: String,
    began: Instant,
    windows: u32,
    failure: Option<String>,
    /// When a window was asked for and not yet answered.
    asked: Option<Instant>,
    last_window: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pending { want_window: bool },
    Passed { sha256: String, version: String, windows: u32 },
    Failed { sha256: String, version: String, reason: String },
}

/// A model on probation now.
#[derive(Debug, Clone, PartialEq)]
pub struct Running {
    pub sha256: String,
    pub version: String,
    pub windows: u32,
    pub seconds_left: f64,
}

pub struct Probation {
    settings: ProbationSettings,
    trial: Mutex<Option<Trial>>,
}

impl Probation {
    pub fn new(settings: ProbationSettings) -> Probation {
        Probation { settings, trial: Mutex::new(None) }
    }

    pub fn settings(&self) -> ProbationSettings {
        self.settings
    }

    fn trial(&self) -> std::sync::MutexGuard<'_, Option<Trial>> {
        self.trial.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching a model just activated (ending any earlier trial).
    pub fn begin(&self, sha256: &str, version: &str, now: Instant) {
        *self.trial() = Some(Trial {
            sha256: sha256.to_string(),
            version: version.to_string(),
            began: now,
            windows: 0,
            failure: None,
            asked: None,
            last_window: None,
        });
    }

    /// Stops watching (the model was replaced by a command).
    pub fn cancel(&self) {
        *self.trial() = None;
    }

    pub fn running(&self, now: Instant) -> Option<Running> {
        self.trial().as_ref().map(|t| Running {
            sha256: t.sha256.clone(),
            version: t.version.clone(),
            windows: t.windows,
            seconds_left: (self.settings.seconds - now.saturating_duration_since(t.began).as_secs_f64()).max(0.0),
        })
    }

    /// The capture loop submitted the window asked for.
    pub fn window_asked(&self, now: Instant) {
        if let Some(trial) = self.trial().as_mut() {
            trial.asked = Some(now);
        }
    }

    /// Where the trial stands; a passed or failed trial is over once reported. `None` without one.
    pub fn poll(&self, now: Instant) -> Option<Verdict> {
        let mut slot = self.trial();
        let trial = slot.as_mut()?;
        let settings = &self.settings;
        let unanswered = trial.asked.filter(|asked| now.saturating_duration_since(*asked) > settings.answer_within());
        if trial.failure.is_none() && unanswered.is_some() {
            trial.failure = Some(format!(
                "no answer within {:.0} s to a window asked for (the classifier hangs or is far behind)",
                settings.answer_within().as_secs_f64()
            ));
        }
        if let Some(reason) = trial.failure.clone() {
            let trial = slot.take().expect("a trial");
            return Some(Verdict::Failed { sha256: trial.sha256, version: trial.version, reason });
        }
        let served = now.saturating_duration_since(trial.began).as_secs_f64() >= settings.seconds;
        if served && trial.windows >= settings.windows {
            let trial = slot.take().expect("a trial");
            return Some(Verdict::Passed { sha256: trial.sha256, version: trial.version, windows: trial.windows });
        }
        let since = trial.last_window.unwrap_or(trial.began);
        let want_window =
            trial.windows < settings.windows && trial.asked.is_none() && now.saturating_duration_since(since) >= settings.spacing();
        Some(Verdict::Pending { want_window })
    }
}

impl WindowObserver for Probation {
    fn classified(&self, model_version: &str, outcome: Result<f64, String>) {
        let mut slot = self.trial();
        let Some(trial) = slot.as_mut().filter(|t| t.version == model_version && t.failure.is_none()) else { return };
        match outcome {
            Ok(ms) if ms > self.settings.max_window_ms => {
                trial.failure = Some(format!(
                    "a window took {ms:.0} ms of flows and inference, more than push.max_window_ms = {:.0}",
                    self.settings.max_window_ms
                ));
            }
            Ok(_) => {
                trial.windows += 1;
                trial.asked = None;
                trial.last_window = Some(Instant::now());
            }
            Err(reason) => trial.failure = Some(format!("a window could not be classified: {reason}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: ProbationSettings = ProbationSettings { seconds: 10.0, windows: 3, max_window_ms: 500.0 };

    fn on_trial() -> (Probation, Instant) {
        let probation = Probation::new(SETTINGS);
        let start = Instant::now();
        probation.begin("abc", "v2", start);
        (probation, start)
    }

    fn at(start: Instant, seconds: f64) -> Instant {
        start + Duration::from_secs_f64(seconds)
    }

    #[test]
    fn a_model_passes_after_its_time_and_its_windows_and_asks_for_windows_meanwhile() {
        let (probation, start) = on_trial();
        assert_eq!(probation.poll(at(start, 1.0)), Some(Verdict::Pending { want_window: false }));
        assert_eq!(probation.poll(at(start, 2.6)), Some(Verdict::Pending { want_window: true }));
        probation.window_asked(at(start, 2.6));
        assert_eq!(probation.poll(at(start, 3.0)), Some(Verdict::Pending { want_window: false }), "one window at a time");
        probation.classified("v2", Ok(120.0));
        // Windows of other models (queued before the switch) do not count.
        probation.classified("v1", Ok(10.0));
        probation.classified("v1", Err("whatever".into()));
        probation.classified("v2", Ok(130.0));
        assert_eq!(probation.running(at(start, 4.0)).unwrap().windows, 2);
        // Time served but a window short: still pending.
        assert_eq!(probation.poll(at(start, 10.5)), Some(Verdict::Pending { want_window: true }));
        probation.classified("v2", Ok(90.0));
        let verdict = probation.poll(at(start, 10.6));
        assert_eq!(verdict, Some(Verdict::Passed { sha256: "abc".into(), version: "v2".into(), windows: 3 }));
        assert_eq!(probation.poll(at(start, 11.0)), None, "reported once");
    }

    #[test]
    fn an_error_a_slow_window_or_no_answer_fails_the_model() {
        let (probation, start) = on_trial();
        probation.classified("v2", Err("tract: shape mismatch".into()));
        let Some(Verdict::Failed { reason, .. }) = probation.poll(at(start, 1.0)) else { panic!() };
        assert!(reason.contains("shape mismatch"), "{reason}");

        let (probation, start) = on_trial();
        probation.classified("v2", Ok(800.0));
        let Some(Verdict::Failed { reason, .. }) = probation.poll(at(start, 1.0)) else { panic!() };
        assert!(reason.contains("800 ms") && reason.contains("max_window_ms = 500"), "{reason}");

        let (probation, start) = on_trial();
        probation.window_asked(at(start, 3.0));
        assert!(matches!(probation.poll(at(start, 7.0)), Some(Verdict::Pending { .. })));
        let Some(Verdict::Failed { reason, .. }) = probation.poll(at(start, 8.5)) else { panic!() };
        assert!(reason.contains("no answer within 5 s"), "{reason}");
    }

    #[test]
    fn a_cancelled_trial_is_over() {
        let (probation, start) = on_trial();
        probation.cancel();
        assert_eq!(probation.poll(at(start, 20.0)), None);
        assert!(probation.running(start).is_none());
    }
}
