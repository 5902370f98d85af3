//! Reading against a deadline rather than a per-read timeout: before every read the socket's
//! timeout shrinks to the time left, so a peer that trickles a byte now and then cannot stretch
//! a request beyond its deadline.

use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// A stream whose reads can time out.
pub trait ReadTimeout {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl ReadTimeout for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

impl ReadTimeout for UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
}

/// Reads from `stream` until `at`; after that every read fails with `TimedOut`.
pub struct Deadline<'a, S> {
    stream: &'a S,
    at: Instant,
}

impl<'a, S> Deadline<'a, S> {
    pub fn new(stream: &'a S, at: Instant) -> Self {
        Deadline { stream, at }
    }
}

impl<'a, S: ReadTimeout> Read for Deadline<'a, S>
where
    &'a S: Read,
{
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(ErrorKind::TimedOut, "the deadline has passed"));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buffer)
    }
}

/// `seconds` as a duration between 0.1 s and a year (a NaN counts as the least), so that adding
/// it to an instant cannot overflow.
pub fn clamped_seconds(seconds: f64) -> Duration {
    const YEAR: f64 = 365.0 * 86_400.0;
    Duration::from_secs_f64(if seconds.is_nan() { 0.1 } else { seconds.clamp(0.1, YEAR) })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_trickling_peer_cannot_stretch_the_deadline() {
        let (reader, mut writer) = UnixStream::pair().unwrap();
        let trickler = std::thread::spawn(move || {
            // One byte every 50 ms, far inside any per-read timeout, until the reader hangs up.
            let started = Instant::now();
            while writer.write_all(b"x").is_ok() && started.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        let mut deadline = Deadline::new(&reader, started + Duration::from_millis(400));
        let mut got = Vec::new();
        let e = deadline.read_to_end(&mut got).unwrap_err();
        let took = started.elapsed();
        assert!(matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock), "{e:?}");
        assert!(took >= Duration::from_millis(400) && took < Duration::from_millis(1500), "{took:?}");
        assert!(!got.is_empty(), "bytes before the deadline were read");
        drop(reader);
        trickler.join().unwrap();
    }

    #[test]
    fn settings_in_seconds_are_clamped() {
        assert_eq!(clamped_seconds(f64::NAN), Duration::from_millis(100));
        assert_eq!(clamped_seconds(0.0), Duration::from_millis(100));
        assert_eq!(clamped_seconds(2.5), Duration::from_millis(2500));
        assert_eq!(clamped_seconds(f64::INFINITY), Duration::from_secs(365 * 86_400));
    }
}
