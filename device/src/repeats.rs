//! Errors that repeat are shown once and then counted, so that a source failing at its frame
//! rate (a broken camera, a folder of damaged frames) or a log that keeps failing cannot flood
//! the journal: the first of a kind is printed, then one line per period with how many more came.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Messages of one kind shown at most once per this long.
const PERIOD: Duration = Duration::from_secs(10);
/// Kinds remembered at once; the oldest quiet ones are forgotten beyond it.
const MAX_KINDS: usize = 64;

#[derive(Debug, Default)]
pub struct RepeatFilter {
    kinds: HashMap<String, Repeat>,
}

#[derive(Debug)]
struct Repeat {
    shown_at: Instant,
    held_back: u64,
    latest: String,
}

impl RepeatFilter {
    /// The lines to print for `message` at `now`: the message when nothing of its kind was shown
    /// in the last period (after a count of those held back), nothing otherwise.
    pub fn report(&mut self, message: &str, now: Instant) -> Vec<String> {
        let kind = kind_of(message);
        if let Some(repeat) = self.kinds.get_mut(&kind)
            && now.duration_since(repeat.shown_at) < PERIOD
        {
            repeat.held_back += 1;
            repeat.latest = message.to_string();
            return Vec::new();
        }
        let mut lines: Vec<String> = self.kinds.remove(&kind).and_then(|r| summary(&r)).into_iter().collect();
        if self.kinds.len() >= MAX_KINDS {
            lines.extend(self.flush(now, true));
        }
        self.kinds.insert(kind, Repeat { shown_at: now, held_back: 0, latest: message.to_string() });
        lines.push(message.to_string());
        lines
    }

    /// Counts of messages held back for longer than a period (or all of them with `all`, at the
    /// end of a run); call it now and then.
    pub fn flush(&mut self, now: Instant, all: bool) -> Vec<String> {
        let mut lines = Vec::new();
        self.kinds.retain(|_, repeat| {
            let due = all || now.duration_since(repeat.shown_at) >= PERIOD;
            if due {
                lines.extend(summary(repeat));
            }
            !due
        });
        lines
    }
}

fn summary(repeat: &Repeat) -> Option<String> {
    (repeat.held_back > 0).then(|| format!("{} more like this since, the latest: {}", repeat.held_back, repeat.latest))
}

/// Messages that differ only in their numbers (frame files, times, offsets) are of one kind.
fn kind_of(message: &str) -> String {
    let mut kind = String::with_capacity(message.len());
    for c in message.chars() {
        if !c.is_ascii_digit() {
            kind.push(c);
        } else if !kind.ends_with('#') {
            kind.push('#');
        }
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_kind_is_shown_then_counted_per_period() {
        let t0 = Instant::now();
        let mut filter = RepeatFilter::default();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(filter.report("frames/000001.jpg: cut off", at(0)), ["frames/000001.jpg: cut off"]);
        for n in 2..=500 {
            assert!(filter.report(&format!("frames/{n:06}.jpg: cut off"), at(n * 10)).is_empty());
        }
        // Another kind is not held back by the first.
        assert_eq!(filter.report("camera lost: no device", at(5000)), ["camera lost: no device"]);
        assert!(filter.flush(at(9_000), false).is_empty(), "within the period nothing is due");
        let lines = filter.flush(at(10_001), false);
        assert_eq!(lines, ["499 more like this since, the latest: frames/000500.jpg: cut off"]);
        // After its period, the kind is shown again.
        assert_eq!(filter.report("frames/000900.jpg: cut off", at(11_000)), ["frames/000900.jpg: cut off"]);
        assert!(filter.report("camera lost: no device", at(12_000)).is_empty());
        assert_eq!(filter.flush(at(12_001), true), ["1 more like this since, the latest: camera lost: no device"]);
        assert!(filter.flush(at(99_000), true).is_empty());
    }

    #[test]
    fn a_flood_of_distinct_kinds_stays_bounded() {
        let t0 = Instant::now();
        let mut filter = RepeatFilter::default();
        for n in 0..1000 {
            let word: String = format!("{n:03}").chars().map(|c| (b'a' + c as u8 - b'0') as char).collect();
            assert_eq!(filter.report(&format!("error {word}"), t0).len(), 1);
        }
        assert!(filter.kinds.len() <= MAX_KINDS);
    }
}
