//! The V4L2 camera source: frames from `/dev/videoN` in GREY, YUYV, MJPEG or raw Bayer, converted to
//! grayscale, with the camera reopened (after a growing pause, each failure logged with its
//! reason) whenever it stalls, errors or is unplugged. The reconnect logic works on any
//! [`CameraOpener`], so it is tested with a scripted camera; [`V4lOpener`] is the real one.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tracing::{info, warn};

use mer_shared::image::decode_gray;
use mer_shared::{Error, GrayImage, Result};
use serde::Deserialize;
use v4l::buffer::Type;
use v4l::io::mmap::Stream as MmapStream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC, Fraction};

use crate::bayer::{BayerFormat, bayer_to_gray};
use crate::source::{Frame, FrameSource};

/// Pixel formats the camera may be asked for, by their configuration names: `grey`, `yuyv`,
/// `mjpeg`, or a raw Bayer format (`rggb8`, `rggb10`, `bggr12`, … see [`crate::bayer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum PixelFormat {
    /// 8-bit luminance.
    Grey,
    /// Packed 4:2:2 (Y0 U Y1 V); the luminance bytes are kept.
    Yuyv,
    /// Motion JPEG: each buffer is a JPEG picture.
    Mjpeg,
    /// A raw sensor mosaic, converted to gray at half the width and height.
    Bayer(BayerFormat),
}

impl PixelFormat {
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Grey => *b"GREY",
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Bayer(bayer) => bayer.fourcc(),
        }
    }

    /// Bytes per pixel of a raw row, for drivers that report no stride.
    fn bytes_per_pixel(self) -> usize {
        match self {
            PixelFormat::Grey | PixelFormat::Mjpeg => 1,
            PixelFormat::Yuyv => 2,
            PixelFormat::Bayer(bayer) => bayer.bytes_per_sample(),
        }
    }
}

impl TryFrom<String> for PixelFormat {
    type Error = String;

    fn try_from(name: String) -> std::result::Result<PixelFormat, String> {
        match name.as_str() {
            "grey" => Ok(PixelFormat::Grey),
            "yuyv" => Ok(PixelFormat::Yuyv),
            "mjpeg" => Ok(PixelFormat::Mjpeg),
            other => other.parse().map(PixelFormat::Bayer).map_err(|()| {
                let bayer: Vec<String> = BayerFormat::names().collect();
                format!("unknown pixel format {other:?}; use grey, yuyv, mjpeg or a raw Bayer format ({})", bayer.join(", "))
            }),
        }
    }
}

/// What the driver actually delivers, after it adjusted the requested format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub width: usize,
    pub height: usize,
    /// Bytes from one row to the next (the raw formats).
    pub stride: usize,
    pub format: PixelFormat,
    /// Bits a raw Bayer sample is moved down by before use (see [`crate::bayer`]).
    pub raw_shift: u8,
}

/// One captured buffer converted to a grayscale frame. A buffer of the wrong size, or a JPEG
/// that does not decode to the negotiated size, is garbage; the error says why.
pub fn to_gray(layout: &Layout, bytes: &[u8]) -> std::result::Result<GrayImage, String> {
    let Layout { width, height, stride, format, raw_shift } = *layout;
    let garbage = |reason: String| format!("a bad {format:?} frame: {reason}");
    let packed = |bytes_per_pixel: usize| -> std::result::Result<Vec<u8>, String> {
        let row = width * bytes_per_pixel;
        if stride < row {
            return Err(garbage(format!("row stride {stride} is shorter than {width} pixels")));
        }
        let needed = stride * height.saturating_sub(1) + row;
        if bytes.len() < needed {
            return Err(garbage(format!("{} bytes, {width}×{height} needs {needed}", bytes.len())));
        }
        Ok((0..height).flat_map(|y| bytes[y * stride..y * stride + row].iter().step_by(bytes_per_pixel).copied()).collect())
    };
    match format {
        PixelFormat::Grey => GrayImage::from_u8(width, height, &packed(1)?).map_err(|e| garbage(e.to_string())),
        PixelFormat::Yuyv => GrayImage::from_u8(width, height, &packed(2)?).map_err(|e| garbage(e.to_string())),
        PixelFormat::Bayer(bayer) => bayer_to_gray(bayer, width, height, stride, raw_shift, bytes).map_err(garbage),
        PixelFormat::Mjpeg => {
            let img = decode_gray(bytes, std::path::Path::new("<camera MJPEG frame>")).map_err(|e| garbage(e.to_string()))?;
            if (img.width(), img.height()) != (width, height) {
                return Err(garbage(format!("decoded {}×{}, negotiated {width}×{height}", img.width(), img.height())));
            }
            Ok(img)
        }
    }
}

/// `source.kind = "camera"` in the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSettings {
    /// The capture device, e.g. `/dev/video0`.
    pub device: PathBuf,
    pub width: u32,
    pub height: u32,
    /// Requested frame rate; the spotter's timing follows the rate the driver grants.
    pub fps: u32,
    pub format: PixelFormat,
    /// Seconds without a frame after which the camera counts as stalled and is reopened.
    #[serde(default = "default_stall_s")]
    pub stall_s: f64,
    /// Longest pause between attempts to reopen a lost camera; pauses start at 0.5 s and double.
    #[serde(default = "default_retry_max_s")]
    pub retry_max_s: f64,
    /// Raw Bayer formats only: bits each 16-bit sample is moved down by (0 for V4L2's layout,
    /// the value in the low bits).
    #[serde(default)]
    pub raw_shift: u8,
}

fn default_stall_s() -> f64 {
    2.0
}

fn default_retry_max_s() -> f64 {
    30.0
}

impl CameraSettings {
    pub fn validate(&self) -> Result<()> {
        let side = 1..=8192;
        if !side.contains(&self.width) || !side.contains(&self.height) || !(1..=1000).contains(&self.fps) {
            return Err(Error::InvalidArgument(format!(
                "camera width and height must lie in 1..=8192 and fps in 1..=1000, got {}×{} at {} fps",
                self.width, self.height, self.fps
            )));
        }
        if let PixelFormat::Bayer(bayer) = self.format
            && u32::from(self.raw_shift) + u32::from(bayer.bits) > 16
        {
            return Err(Error::InvalidArgument(format!(
                "camera raw_shift {} leaves fewer than the {} bits of {bayer} in a 16-bit sample",
                self.raw_shift, bayer.bits
            )));
        }
        if self.raw_shift > 0 && !matches!(self.format, PixelFormat::Bayer(b) if b.bits > 8) {
            return Err(Error::InvalidArgument("camera raw_shift applies only to the 10- and 12-bit Bayer formats".into()));
        }
        let stall_ok = self.stall_s > 0.0 && self.stall_s.is_finite();
        let retry_ok = self.retry_max_s >= 0.5 && self.retry_max_s.is_finite();
        if !(stall_ok && retry_ok) {
            return Err(Error::InvalidArgument(format!(
                "camera stall_s must be positive and retry_max_s at least 0.5, got {} and {}",
                self.stall_s, self.retry_max_s
            )));
        }
        Ok(())
    }
}

/// One buffer from an open camera.
pub struct Captured<'a> {
    pub bytes: &'a [u8],
    /// The driver's frame counter; a jump means frames were lost.
    pub sequence: u32,
    /// When the driver captured the frame, in seconds of the monotonic clock
    /// (`CLOCK_MONOTONIC`); None when the driver does not say.
    pub timestamp: Option<f64>,
}

/// Now on the clock drivers stamp buffers with (`CLOCK_MONOTONIC`), in seconds.
pub fn monotonic_seconds() -> f64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given, which lives for the call.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    assert_eq!(status, 0, "CLOCK_MONOTONIC is always available on Linux");
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// An open, streaming camera.
pub trait Camera {
    fn layout(&self) -> Layout;
    /// Granted frame rate.
    fn fps(&self) -> f64;
    /// The next buffer; `ErrorKind::TimedOut` when none came within the stall timeout.
    fn capture(&mut self) -> io::Result<Captured<'_>>;
}

/// Opens (and reopens) a camera.
pub trait CameraOpener {
    type Camera: Camera;
    fn open(&mut self) -> io::Result<Self::Camera>;
    /// For messages, e.g. the device path.
    fn name(&self) -> String;
}

/// Pauses between reconnection attempts: `initial`, doubling up to `max`, back to `initial`
/// once a frame arrives.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max: max.max(initial), next: initial }
    }

    /// The pause before the next attempt; each call doubles the one after.
    pub fn pause(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// A camera as a [`FrameSource`] that never ends: lost cameras are reopened. Frame indices
/// follow the driver's sequence counter, and the time spent without a camera counts as
/// dropped frames, so the pipeline's dropped-frame count and its restart of spotting after a
/// gap both see the outage.
pub struct CameraSource<O: CameraOpener> {
    opener: O,
    camera: Option<O::Camera>,
    backoff: Backoff,
    /// Index the next frame gets when its sequence number carries no information.
    next_index: u64,
    last_sequence: Option<u32>,
    started: Instant,
    /// `started` on the monotonic clock, which driver timestamps count on.
    started_monotonic: f64,
    /// The previous frame's time, to catch timestamps that do not move forward.
    last_timestamp: Option<f64>,
    /// Whether the current camera's frames are timed by their arrival; said once per opening.
    arrival_times: Option<bool>,
    lost_at: Option<Instant>,
    fps: f64,
}

impl<O: CameraOpener> CameraSource<O> {
    pub fn new(opener: O, nominal_fps: f64, retry_max: Duration) -> CameraSource<O> {
        CameraSource {
            opener,
            camera: None,
            backoff: Backoff::new(Duration::from_millis(500), retry_max),
            next_index: 0,
            last_sequence: None,
            started: Instant::now(),
            started_monotonic: monotonic_seconds(),
            last_timestamp: None,
            arrival_times: None,
            lost_at: None,
            fps: nominal_fps,
        }
    }

    /// Whether the camera is open right now.
    pub fn connected(&self) -> bool {
        self.camera.is_some()
    }

    fn lose(&mut self, reason: String) -> Error {
        self.camera = None;
        if self.next_index > 0 {
            self.lost_at.get_or_insert_with(Instant::now);
        }
        if self.last_sequence.take().is_none() {
            // Lost again before a single frame: pause as after a failed open, or a camera that
            // opens but fails at once would be reopened in a busy loop.
            let pause = self.backoff.pause();
            let error = self.error(format!("camera lost before its first frame: {reason}; reopening it in {:.1} s", pause.as_secs_f64()));
            std::thread::sleep(pause);
            return error;
        }
        self.error(format!("camera lost: {reason}; reopening it"))
    }

    fn error(&self, reason: String) -> Error {
        Error::Data { path: self.opener.name().into(), reason }
    }

    fn reopen(&mut self) -> Result<()> {
        match self.opener.open() {
            Ok(camera) => {
                self.fps = camera.fps();
                if let Some(lost) = self.lost_at.take() {
                    // The outage becomes a gap in the indices, i.e. dropped frames.
                    self.next_index += (lost.elapsed().as_secs_f64() * self.fps).round() as u64;
                    info!("camera {} is back after {:.1} s", self.opener.name(), lost.elapsed().as_secs_f64());
                }
                self.camera = Some(camera);
                self.arrival_times = None;
                Ok(())
            }
            Err(e) => {
                // Time without a camera counts as dropped frames once the stream has begun.
                if self.next_index > 0 {
                    self.lost_at.get_or_insert_with(Instant::now);
                }
                let pause = self.backoff.pause();
                let error = self.error(format!("cannot open the camera: {e}; trying again in {:.1} s", pause.as_secs_f64()));
                std::thread::sleep(pause);
                Err(error)
            }
        }
    }
}

impl<O: CameraOpener> FrameSource for CameraSource<O> {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.camera.is_none() {
            self.reopen()?;
        }
        let camera = self.camera.as_mut().expect("opened above");
        let layout = camera.layout();
        let (image, sequence, driver_time) = match camera.capture() {
            Ok(captured) => (to_gray(&layout, captured.bytes), captured.sequence, captured.timestamp),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(self.lose("no frame arrived (stalled)".into())),
            Err(e) => return Err(self.lose(e.to_string())),
        };
        // Sequence numbers that go backwards or jump absurdly far restart the count.
        let step = match self.last_sequence {
            Some(last) if sequence > last && sequence - last <= 10_000 => u64::from(sequence - last),
            _ => 1,
        };
        self.last_sequence = Some(sequence);
        let index = self.next_index + step - 1;
        self.next_index = index + 1;
        let timestamp = self.frame_time(driver_time);
        let image = image.map_err(|reason| self.error(format!("skipped {reason}")))?;
        self.backoff.reset();
        Ok(Some(Frame { index, timestamp, image }))
    }
}

impl<O: CameraOpener> CameraSource<O> {
    /// Seconds since the source started: from the driver's timestamp, which does not jitter with
    /// the load on the reading thread, or from the arrival time when the driver gives none (or
    /// one that does not move forward); which of the two is said once per opening.
    fn frame_time(&mut self, driver_time: Option<f64>) -> f64 {
        let driver = driver_time.map(|t| t - self.started_monotonic).filter(|&t| self.last_timestamp.is_none_or(|last| t > last));
        let arrival = driver.is_none();
        if self.arrival_times != Some(arrival) {
            let how = if arrival { "arrival times (the driver gives no usable timestamps)" } else { "the driver's timestamps" };
            info!("camera {}: frame times are {how}", self.opener.name());
            self.arrival_times = Some(arrival);
        }
        let time = driver.unwrap_or_else(|| self.started.elapsed().as_secs_f64());
        let time = self.last_timestamp.map_or(time, |last| time.max(last));
        self.last_timestamp = Some(time);
        time
    }
}

/// The real camera through the kernel's V4L2 interface (memory-mapped buffers).
pub struct V4lOpener {
    pub settings: CameraSettings,
}

pub struct V4lCamera {
    // The stream holds its own handle to the device; the device is kept for its lifetime.
    _device: Device,
    stream: MmapStream<'static>,
    layout: Layout,
    fps: f64,
}

impl CameraOpener for V4lOpener {
    type Camera = V4lCamera;

    fn open(&mut self) -> io::Result<V4lCamera> {
        let s = &self.settings;
        let device = Device::with_path(&s.device)?;
        let mut format = device.format()?;
        (format.width, format.height, format.fourcc) = (s.width, s.height, FourCC::new(&s.format.fourcc()));
        let got = device.set_format(&format)?;
        if got.fourcc != format.fourcc {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the camera offers {} instead of {}", got.fourcc, format.fourcc),
            ));
        }
        if (got.width, got.height) != (s.width, s.height) {
            warn!("camera gives {}×{} instead of the requested {}×{}", got.width, got.height, s.width, s.height);
        }
        let mut params = device.params()?;
        params.interval = Fraction::new(1, s.fps);
        let granted = device.set_params(&params)?.interval;
        let fps = if granted.numerator > 0 { f64::from(granted.denominator) / f64::from(granted.numerator) } else { f64::from(s.fps) };
        if (fps - f64::from(s.fps)).abs() > 0.5 {
            warn!("camera runs at {fps:.1} fps, not the requested {}; spotting timing assumes {}", s.fps, s.fps);
        }
        let mut stream = MmapStream::with_buffers(&device, Type::VideoCapture, 4)?;
        stream.set_timeout(Duration::from_secs_f64(s.stall_s));
        let stride = if got.stride > 0 { got.stride as usize } else { got.width as usize * s.format.bytes_per_pixel() };
        let layout = Layout { width: got.width as usize, height: got.height as usize, stride, format: s.format, raw_shift: s.raw_shift };
        Ok(V4lCamera { _device: device, stream, layout, fps })
    }

    fn name(&self) -> String {
        self.settings.device.display().to_string()
    }
}

impl Camera for V4lCamera {
    fn layout(&self) -> Layout {
        self.layout
    }

    fn fps(&self) -> f64 {
        self.fps
    }

    fn capture(&mut self) -> io::Result<Captured<'_>> {
        let (bytes, meta) = self.stream.next()?;
        if meta.flags.contains(v4l::buffer::Flags::ERROR) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the driver marked the buffer as corrupt"));
        }
        let used = (meta.bytesused as usize).min(bytes.len());
        // MJPEG buffers are only partly filled; the raw formats fill them.
        let bytes = if used > 0 { &bytes[..used] } else { bytes };
        // Only a monotonic capture time is comparable with the clock; a copied one (from an
        // output stream) or an unknown one is not.
        let kind = meta.flags & v4l::buffer::Flags::TIMESTAMP_MASK;
        let stamped = kind == v4l::buffer::Flags::TIMESTAMP_MONOTONIC && (meta.timestamp.sec, meta.timestamp.usec) != (0, 0);
        let timestamp = stamped.then_some(meta.timestamp.sec as f64 + meta.timestamp.usec as f64 * 1e-6);
        Ok(Captured { bytes, sequence: meta.sequence, timestamp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn raw_formats_keep_luminance_and_honour_the_stride() {
        // 3×2 GREY with 5-byte rows (2 padding bytes each).
        let grey = Layout { width: 3, height: 2, stride: 5, format: PixelFormat::Grey, raw_shift: 0 };
        let img = to_gray(&grey, &[0, 51, 255, 9, 9, 102, 153, 204, 9]).unwrap();
        assert_eq!(img.to_u8(), vec![0, 51, 255, 102, 153, 204]);
        // 2×2 YUYV: Y U Y V per pixel pair; chroma is dropped.
        let yuyv = Layout { width: 2, height: 2, stride: 4, format: PixelFormat::Yuyv, raw_shift: 0 };
        let img = to_gray(&yuyv, &[10, 128, 20, 128, 30, 1, 40, 2]).unwrap();
        assert_eq!(img.to_u8(), vec![10, 20, 30, 40]);
    }

    #[test]
    fn garbage_buffers_are_errors_not_frames() {
        let grey = Layout { width: 4, height: 4, stride: 4, format: PixelFormat::Grey, raw_shift: 0 };
        let err = to_gray(&grey, &[0; 15]).unwrap_err().to_string();
        assert!(err.contains("15 bytes") && err.contains("needs 16"), "{err}");
        let narrow = Layout { stride: 3, ..grey };
        assert!(to_gray(&narrow, &[0; 64]).unwrap_err().to_string().contains("stride"));
        let mjpeg = Layout { width: 4, height: 4, stride: 0, format: PixelFormat::Mjpeg, raw_shift: 0 };
        assert!(to_gray(&mjpeg, b"not a jpeg").is_err());
    }

    #[test]
    fn mjpeg_frames_decode_and_must_match_the_negotiated_size() {
        let img = GrayImage::from_fn(16, 8, |x, _| (x * 16) as f32 / 255.0);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode(&img.to_u8(), 16, 8, image::ExtendedColorType::L8)
            .unwrap();
        let layout = Layout { width: 16, height: 8, stride: 0, format: PixelFormat::Mjpeg, raw_shift: 0 };
        let decoded = to_gray(&layout, &jpeg).unwrap();
        let worst = decoded.to_u8().iter().zip(img.to_u8()).map(|(a, b)| a.abs_diff(b)).max().unwrap();
        assert!(worst <= 8, "JPEG error {worst}");
        let err = to_gray(&Layout { width: 8, ..layout }, &jpeg).unwrap_err().to_string();
        assert!(err.contains("decoded 16×8"), "{err}");
    }

    #[test]
    fn backoff_doubles_to_its_limit_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
        let pauses: Vec<u64> = (0..5).map(|_| b.pause().as_millis() as u64).collect();
        assert_eq!(pauses, [500, 1000, 2000, 3000, 3000]);
        b.reset();
        assert_eq!(b.pause(), Duration::from_millis(500));
    }

    /// What the scripted camera does on each call.
    enum Step {
        Frame(u32),
        /// A frame the driver stamped this many seconds after the source started.
        Timed(u32, f64),
        Garbage(u32),
        Fail(io::ErrorKind),
    }

    struct ScriptedCamera {
        steps: VecDeque<Step>,
        buffer: Vec<u8>,
        /// The monotonic clock when the test's source started, for [`Step::Timed`].
        started_monotonic: f64,
    }

    impl Camera for ScriptedCamera {
        fn layout(&self) -> Layout {
            Layout { width: 4, height: 2, stride: 4, format: PixelFormat::Grey, raw_shift: 0 }
        }
        fn fps(&self) -> f64 {
            100.0
        }
        fn capture(&mut self) -> io::Result<Captured<'_>> {
            match self.steps.pop_front() {
                Some(Step::Frame(sequence)) => {
                    self.buffer = vec![sequence as u8; 8];
                    Ok(Captured { bytes: &self.buffer, sequence, timestamp: None })
                }
                Some(Step::Timed(sequence, after_start)) => {
                    self.buffer = vec![sequence as u8; 8];
                    Ok(Captured { bytes: &self.buffer, sequence, timestamp: Some(self.started_monotonic + after_start) })
                }
                Some(Step::Garbage(sequence)) => Ok(Captured { bytes: &[1, 2, 3], sequence, timestamp: None }),
                Some(Step::Fail(kind)) => Err(io::Error::new(kind, "scripted")),
                None => Err(io::Error::new(io::ErrorKind::NotFound, "unplugged")),
            }
        }
    }

    /// Each open either fails (None) or yields a camera with its script.
    struct ScriptedOpener {
        opens: VecDeque<Option<Vec<Step>>>,
        attempts: usize,
        started_monotonic: f64,
    }

    impl CameraOpener for ScriptedOpener {
        type Camera = ScriptedCamera;
        fn open(&mut self) -> io::Result<ScriptedCamera> {
            self.attempts += 1;
            match self.opens.pop_front().flatten() {
                Some(steps) => Ok(ScriptedCamera { steps: steps.into(), buffer: Vec::new(), started_monotonic: self.started_monotonic }),
                None => Err(io::Error::new(io::ErrorKind::NotFound, "No such file or directory")),
            }
        }
        fn name(&self) -> String {
            "/dev/video-test".into()
        }
    }

    #[test]
    fn a_lost_camera_is_reopened_and_frames_keep_their_order() {
        use Step::*;
        let opener = ScriptedOpener {
            opens: VecDeque::from([
                None, // not plugged in at start
                Some(vec![Frame(7), Frame(8), Frame(10), Garbage(11), Frame(12), Fail(io::ErrorKind::TimedOut)]),
                None,                                   // unplugged
                Some(vec![Fail(io::ErrorKind::Other)]), // opens, then fails at once
                Some(vec![Frame(0), Frame(1)]),
            ]),
            attempts: 0,
            started_monotonic: 0.0,
        };
        let mut source = CameraSource::new(opener, 100.0, Duration::from_millis(500));
        source.backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(4));
        let mut indices = Vec::new();
        let mut errors = Vec::new();
        for _ in 0..12 {
            match source.next_frame() {
                Ok(Some(frame)) => {
                    assert_eq!((frame.image.width(), frame.image.height()), (4, 2));
                    indices.push(frame.index);
                }
                Ok(None) => panic!("a camera never ends"),
                Err(e) => errors.push(e.to_string()),
            }
            if indices.len() == 6 {
                break;
            }
        }
        assert_eq!(source.opener.attempts, 5);
        assert!(errors.iter().any(|e| e.contains("lost before its first frame") && e.contains("reopening it in")), "{errors:?}");
        // 7, 8, (9 lost), 10, (11 garbage), 12, then after the outage a fresh count.
        assert_eq!(&indices[..4], &[0, 1, 3, 5]);
        assert!(indices[4] > 5 && indices[5] == indices[4] + 1, "{indices:?}");
        assert!(errors[0].contains("/dev/video-test: cannot open the camera") && errors[0].contains("trying again"), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("skipped a bad Grey frame")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("stalled")), "{errors:?}");
        assert!(source.connected());
    }

    #[test]
    fn frames_carry_the_driver_s_timestamps_and_fall_back_to_arrival_times() {
        use Step::*;
        let started_monotonic = monotonic_seconds();
        // Stamped every 10 ms by the driver however late they are read; then a driver that stops
        // stamping, and one whose stamp goes backwards.
        let script = vec![Timed(0, 0.010), Timed(1, 0.020), Timed(3, 0.040), Frame(4), Timed(5, 0.001)];
        let opener = ScriptedOpener { opens: VecDeque::from([Some(script)]), attempts: 0, started_monotonic };
        let mut source = CameraSource::new(opener, 100.0, Duration::from_millis(500));
        source.started_monotonic = started_monotonic;
        let mut times = Vec::new();
        for _ in 0..5 {
            let frame = source.next_frame().unwrap().unwrap();
            times.push((frame.index, frame.timestamp));
            std::thread::sleep(Duration::from_millis(30));
        }
        for (got, (index, time)) in times.iter().zip([(0, 0.010), (1, 0.020), (3, 0.040)]) {
            assert!(got.0 == index && (got.1 - time).abs() < 1e-6, "{times:?}");
        }
        // Arrival times: after 4 reads 30 ms apart, and never before the frame before.
        assert!(times[3].1 >= 0.09, "{times:?}");
        assert!(times[4].1 >= times[3].1, "{times:?}");
    }

    #[test]
    fn settings_are_checked() {
        let s = CameraSettings {
            device: "/dev/video0".into(),
            width: 640,
            height: 480,
            fps: 100,
            format: PixelFormat::Yuyv,
            stall_s: 2.0,
            retry_max_s: 30.0,
            raw_shift: 0,
        };
        assert!(s.validate().is_ok());
        assert!(CameraSettings { fps: 0, ..s.clone() }.validate().is_err());
        assert!(CameraSettings { stall_s: 0.0, ..s.clone() }.validate().is_err());
        assert!(CameraSettings { retry_max_s: 0.1, ..s.clone() }.validate().is_err());
        let rggb10 = PixelFormat::try_from("rggb10".to_string()).unwrap();
        assert_eq!(&rggb10.fourcc(), b"RG10");
        assert!(CameraSettings { format: rggb10, raw_shift: 6, ..s.clone() }.validate().is_ok());
        let e = CameraSettings { format: rggb10, raw_shift: 7, ..s.clone() }.validate().unwrap_err().to_string();
        assert!(e.contains("raw_shift 7") && e.contains("rggb10"), "{e}");
        assert!(CameraSettings { raw_shift: 2, ..s }.validate().unwrap_err().to_string().contains("only to the 10- and 12-bit"));
        let e = PixelFormat::try_from("rg10".to_string()).unwrap_err();
        assert!(e.contains("\"rg10\"") && e.contains("rggb10") && e.contains("gbrg12"), "{e}");
    }

    #[test]
    fn raw_bayer_frames_come_out_at_half_size() {
        // 4×2 RGGB, 8 bits: two cells, the first red, the second green.
        let layout = Layout { width: 4, height: 2, stride: 4, format: PixelFormat::Bayer("rggb8".parse().unwrap()), raw_shift: 0 };
        let img = to_gray(&layout, &[255, 0, 0, 255, 0, 0, 255, 0]).unwrap();
        assert_eq!((img.width(), img.height()), (2, 1));
        assert!((img.get(0, 0) - 0.299).abs() < 1e-6 && (img.get(1, 0) - 0.587).abs() < 1e-6, "{:?}", img.data());
        assert!(to_gray(&layout, &[0; 7]).unwrap_err().contains("a bad Bayer"));
    }

    #[test]
    fn a_missing_device_is_reported_with_its_path() {
        let settings = CameraSettings {
            device: "/dev/no-such-video".into(),
            width: 640,
            height: 480,
            fps: 30,
            format: PixelFormat::Grey,
            stall_s: 1.0,
            retry_max_s: 1.0,
            raw_shift: 0,
        };
        let mut source = CameraSource::new(V4lOpener { settings }, 30.0, Duration::from_secs(1));
        source.backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(1));
        let err = source.next_frame().unwrap_err().to_string();
        assert!(err.contains("/dev/no-such-video") && err.contains("No such file"), "{err}");
    }
}
