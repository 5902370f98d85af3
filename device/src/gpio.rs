//! The status LED and the trigger button, through embedded-hal 1.0 pins: GPIO character-device
//! lines (linux-embedded-hal) on a board, mock pins in tests. Both are driven from the capture
//! loop with the current time passed in, so their timing is testable.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use embedded_hal::digital::{InputPin, OutputPin, PinState};
use linux_embedded_hal::CdevPin;
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use serde::Deserialize;

/// What the LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Running with a face in view: steadily on.
    Idle,
    /// No face: slow blink (1 Hz).
    FaceLost,
    /// An event was just logged: fast blink (5 Hz) for a second, then back.
    Event,
}

const EVENT_SHOWN: Duration = Duration::from_secs(1);

pub struct StatusLed<P> {
    pin: P,
    face_lost: bool,
    event_since: Option<Instant>,
    lit: Option<bool>,
}

impl<P: OutputPin> StatusLed<P> {
    pub fn new(pin: P) -> StatusLed<P> {
        StatusLed { pin, face_lost: false, event_since: None, lit: None }
    }

    pub fn set_face_lost(&mut self, lost: bool) {
        self.face_lost = lost;
    }

    pub fn event(&mut self, now: Instant) {
        self.event_since = Some(now);
    }

    pub fn status(&self, now: Instant) -> Status {
        match self.event_since {
            Some(t) if now.saturating_duration_since(t) < EVENT_SHOWN => Status::Event,
            _ if self.face_lost => Status::FaceLost,
            _ => Status::Idle,
        }
    }

    /// Sets the pin for `now`; it is written only when the level changes.
    pub fn update(&mut self, now: Instant, start: Instant) -> Result<(), P::Error> {
        let t = now.saturating_duration_since(start).as_millis();
        let lit = match self.status(now) {
            Status::Idle => true,
            Status::FaceLost => t % 1000 < 500,
            Status::Event => t % 200 < 100,
        };
        if self.lit != Some(lit) {
            self.pin.set_state(PinState::from(lit))?;
            self.lit = Some(lit);
        }
        Ok(())
    }

    pub fn into_pin(self) -> P {
        self.pin
    }
}

/// A push button: one press is reported once, after the level has been steady for the debounce
/// time.
pub struct TriggerButton<P> {
    pin: P,
    active_low: bool,
    debounce: Duration,
    /// The level last read and since when it has held.
    level: Option<(bool, Instant)>,
    pressed: bool,
}

impl<P: InputPin> TriggerButton<P> {
    pub fn new(pin: P, active_low: bool, debounce: Duration) -> TriggerButton<P> {
        TriggerButton { pin, active_low, debounce, level: None, pressed: false }
    }

    /// True once for each press.
    pub fn poll(&mut self, now: Instant) -> Result<bool, P::Error> {
        let down = self.pin.is_high()? != self.active_low;
        let since = match self.level {
            Some((level, since)) if level == down => since,
            _ => {
                self.level = Some((down, now));
                now
            }
        };
        if now.saturating_duration_since(since) < self.debounce || down == self.pressed {
            return Ok(false);
        }
        self.pressed = down;
        Ok(down)
    }

    pub fn into_pin(self) -> P {
        self.pin
    }
}

/// `[gpio]` in the configuration: lines of one GPIO chip.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    #[serde(default = "default_chip")]
    pub chip: PathBuf,
    /// Line offset of the status LED (output).
    pub led_line: Option<u32>,
    /// Line offset of the trigger button (input).
    pub trigger_line: Option<u32>,
    /// The button pulls the line low when pressed (the usual wiring with a pull-up).
    #[serde(default = "yes")]
    pub trigger_active_low: bool,
    #[serde(default = "default_debounce")]
    pub debounce_ms: u64,
}

fn default_chip() -> PathBuf {
    PathBuf::from("/dev/gpiochip0")
}
fn yes() -> bool {
    true
}
fn default_debounce() -> u64 {
    20
}

pub type BoardLed = StatusLed<CdevPin>;
pub type BoardTrigger = TriggerButton<CdevPin>;

fn request(chip: &Path, line: u32, flags: LineRequestFlags, what: &str) -> anyhow::Result<CdevPin> {
    use anyhow::Context;
    let mut c = Chip::new(chip).with_context(|| format!("cannot open GPIO chip {} for the {what}", chip.display()))?;
    let handle = c
        .get_line(line)
        .and_then(|l| l.request(flags, 0, "merd"))
        .with_context(|| format!("cannot claim line {line} of {} for the {what} (is merd in the gpio group?)", chip.display()))?;
    CdevPin::new(handle).with_context(|| format!("line {line} of {} for the {what}", chip.display()))
}

impl GpioConfig {
    /// Claims the configured lines.
    pub fn open(&self) -> anyhow::Result<(Option<BoardLed>, Option<BoardTrigger>)> {
        let led = self.led_line.map(|l| request(&self.chip, l, LineRequestFlags::OUTPUT, "status LED")).transpose()?;
        let trigger = self.trigger_line.map(|l| request(&self.chip, l, LineRequestFlags::INPUT, "trigger button")).transpose()?;
        Ok((
            led.map(StatusLed::new),
            trigger.map(|p| TriggerButton::new(p, self.trigger_active_low, Duration::from_millis(self.debounce_ms))),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};

    fn ms(start: Instant, n: u64) -> Instant {
        start + Duration::from_millis(n)
    }

    #[test]
    fn the_led_is_steady_when_idle_and_blinks_for_faces_lost_and_events() {
        let pin = Mock::new(&[
            T::set(State::High), // idle
            T::set(State::Low),  // face lost, second half of the 1 s period
            T::set(State::High), // event: first half of a 200 ms period
            T::set(State::Low),  // event: second half
            T::set(State::High), // event over, face back: steady again
        ]);
        let start = Instant::now();
        let mut led = StatusLed::new(pin);
        led.update(ms(start, 0), start).unwrap();
        led.update(ms(start, 100), start).unwrap(); // unchanged: not written
        led.set_face_lost(true);
        led.update(ms(start, 400), start).unwrap(); // still lit: first half
        assert_eq!(led.status(ms(start, 400)), Status::FaceLost);
        led.update(ms(start, 600), start).unwrap();
        led.event(ms(start, 1000));
        led.update(ms(start, 1050), start).unwrap();
        led.update(ms(start, 1150), start).unwrap();
        assert_eq!(led.status(ms(start, 1150)), Status::Event);
        led.set_face_lost(false);
        led.update(ms(start, 2100), start).unwrap();
        assert_eq!(led.status(ms(start, 2100)), Status::Idle);
        led.into_pin().done();
    }

    #[test]
    fn a_press_is_reported_once_after_the_debounce_time() {
        // Active low: released reads high, pressed reads low; a bounce on the way down.
        let reads = [State::High, State::Low, State::High, State::Low, State::Low, State::Low, State::High, State::High];
        let pin = Mock::new(&reads.iter().map(|s| T::get(*s)).collect::<Vec<_>>());
        let start = Instant::now();
        let mut button = TriggerButton::new(pin, true, Duration::from_millis(20));
        let seen: Vec<bool> = [0, 5, 8, 10, 25, 40, 50, 80].iter().map(|&t| button.poll(ms(start, t)).unwrap()).collect();
        assert_eq!(seen, [false, false, false, false, false, true, false, false]);
        assert_eq!(seen.iter().filter(|p| **p).count(), 1);
        button.into_pin().done();
    }

    #[test]
    fn a_missing_chip_is_a_clear_error() {
        let config = GpioConfig {
            chip: "/dev/no-such-gpiochip".into(),
            led_line: Some(3),
            trigger_line: None,
            trigger_active_low: true,
            debounce_ms: 20,
        };
        let e = format!("{:#}", config.open().err().unwrap());
        assert!(e.contains("/dev/no-such-gpiochip") && e.contains("status LED"), "{e}");
    }
}
