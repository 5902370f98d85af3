//! Notifications to systemd when `merd run` is a `Type=notify` service: READY once the capture
//! loop runs, WATCHDOG from that loop (so a loop that hangs, rather than crashes, stops pinging
//! and systemd restarts it), STATUS with the frame rate, STOPPING on the way out. Outside systemd
//! (no `NOTIFY_SOCKET`) nothing is sent. The sends are blocking datagrams: systemd drains its
//! socket at once, and a `NOTIFY_SOCKET` that nobody reads would stall the loop after a few
//! hundred pings (its queue), so only the service manager should set it.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::{debug, warn};

pub struct ServiceManager {
    /// A quarter of the watchdog period systemd asked for (`WATCHDOG_USEC`), if it asked: a pass
    /// of the loop can block for a camera's reconnect pause, and the pings around it must still
    /// land within one period.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    failed: bool,
}

impl ServiceManager {
    pub fn from_env() -> ServiceManager {
        let watchdog = sd_notify::watchdog_enabled();
        if let Some(period) = watchdog {
            debug!("systemd watchdog: every {:.1} s at most", period.as_secs_f64());
        }
        ServiceManager { ping_every: watchdog.map(|p| p / 4), last_ping: None, failed: false }
    }

    pub fn ready(&mut self) {
        self.send(&[NotifyState::Ready, NotifyState::Status("capturing")]);
    }

    /// Called from every pass of the capture loop; pings at a quarter of the watchdog period.
    pub fn alive(&mut self, now: Instant, status: impl FnOnce() -> String) {
        let Some(every) = self.ping_every else { return };
        if self.last_ping.is_some_and(|last| now.duration_since(last) < every) {
            return;
        }
        self.last_ping = Some(now);
        let status = status();
        self.send(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
    }

    pub fn stopping(&mut self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// A notification that cannot be sent is said once; the run goes on (systemd, if it is
    /// waiting, will say so itself).
    fn send(&mut self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(states) {
            if !self.failed {
                warn!("cannot notify systemd ({e}); running on without notifications");
            }
            self.failed = true;
        }
    }
}
