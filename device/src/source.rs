//! Frame sources: where the device's frames come from.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mer_shared::frames::FrameFolder;
use mer_shared::image::load_gray;
use mer_shared::synth::Scene;
use mer_shared::synth::interview::{InterviewOptions, interview_scene};
use mer_shared::{Error, GrayImage, Result};

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub index: u64,
    /// Seconds since the start of the stream.
    pub timestamp: f64,
    pub image: GrayImage,
}

/// Anything that yields frames in order: a camera, a replayed recording, a generator.
pub trait FrameSource {
    /// The next frame, or `None` at the end of a finite stream.
    fn next_frame(&mut self) -> Result<Option<Frame>>;
}

/// Replays a directory of numbered image files (e.g. `mer synth interview` output, or a CASME
/// II clip's `img46.jpg …`) at a nominal frame rate, in frame-number order: a frame's index is
/// the number in its file name (a gap in the numbers counts as dropped frames) and its
/// timestamp that number over the frame rate, so `timestamp · fps` names the file again.
#[derive(Debug)]
pub struct ReplaySource {
    files: Vec<(i64, PathBuf)>,
    fps: f64,
    next: usize,
    /// The size of the first frame delivered, which every later frame must have.
    size: Option<(usize, usize)>,
}

impl ReplaySource {
    pub fn open(dir: &Path, fps: f64) -> Result<ReplaySource> {
        if fps.is_nan() || fps <= 0.0 {
            return Err(Error::InvalidArgument(format!("replay fps must be positive, got {fps}")));
        }
        let folder = FrameFolder::open(dir)?;
        if folder.first() < 0 {
            return Err(Error::Data { path: dir.to_path_buf(), reason: format!("frame numbers start at {}", folder.first()) });
        }
        let files = folder.iter().map(|(n, p)| (n, p.to_path_buf())).collect();
        Ok(ReplaySource { files, fps, next: 0, size: None })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

impl FrameSource for ReplaySource {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some((number, path)) = self.files.get(self.next) else { return Ok(None) };
        // Past the file before decoding it: a frame that cannot be read is reported once and the
        // replay goes on with the next, rather than failing on the same file for ever.
        self.next += 1;
        let image = load_gray(path)?;
        let (w, h) = (image.width(), image.height());
        let (fw, fh) = *self.size.get_or_insert((w, h));
        if (w, h) != (fw, fh) {
            let reason = format!("is {w}×{h}, the replay's earlier frames {fw}×{fh}; frames of another size are skipped");
            return Err(Error::Data { path: path.clone(), reason });
        }
        Ok(Some(Frame { index: *number as u64, timestamp: *number as f64 / self.fps, image }))
    }
}

/// Renders a synthetic interview (`mer synth interview`'s scene) frame by frame, without files.
pub struct SyntheticSource {
    scene: Scene,
    next: usize,
    /// Every frame rendered ahead as 8-bit gray, when asked for (see [`SyntheticSource::prerender`]).
    frames: Option<Vec<Vec<u8>>>,
}

impl SyntheticSource {
    pub fn new(options: &InterviewOptions) -> Result<SyntheticSource> {
        Ok(SyntheticSource { scene: interview_scene(options)?, next: 0, frames: None })
    }

    /// The scene behind the frames: true micro-expressions, blinks and the face box.
    pub fn scene(&self) -> &Scene {
        &self.scene
    }

    /// Renders the whole clip now, on all cores, and keeps it as 8-bit frames (as a camera
    /// delivers them), so that a timed run measures the pipeline rather than the renderer,
    /// which costs more than the pipeline itself. Needs width × height bytes per frame.
    pub fn prerender(&mut self) {
        let total = self.scene.frames;
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(total.max(1));
        let per_thread = total.div_ceil(threads.max(1)).max(1);
        let scene = &self.scene;
        let frames = std::thread::scope(|s| {
            let parts: Vec<_> = (0..total)
                .step_by(per_thread)
                .map(|first| s.spawn(move || (first..(first + per_thread).min(total)).map(|t| scene.render(t).to_u8()).collect::<Vec<_>>()))
                .collect();
            parts.into_iter().flat_map(|p| p.join().expect("rendering does not panic")).collect()
        });
        self.frames = Some(frames);
    }
}

impl FrameSource for SyntheticSource {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.next >= self.scene.frames {
            return Ok(None);
        }
        let t = self.next;
        self.next += 1;
        let image = match &self.frames {
            Some(frames) => GrayImage::from_u8(self.scene.width, self.scene.height, &frames[t])?,
            None => self.scene.render(t),
        };
        Ok(Some(Frame { index: t as u64, timestamp: t as f64 / self.scene.fps as f64, image }))
    }
}

/// Delivers another source's frames no faster than their timestamps, as a camera would: a
/// recording replayed at its real rate. Like a camera with [`RealTime::BUFFERS`] capture
/// buffers, it drops frames the consumer is too late for; the gap in frame numbers is what the
/// pipeline counts as dropped frames.
pub struct RealTime<S> {
    inner: S,
    start: Option<(Instant, f64)>,
    last_timestamp: Option<f64>,
}

impl<S: FrameSource> RealTime<S> {
    /// Frames a camera holds for a late reader (the V4L2 source asks for as many).
    pub const BUFFERS: f64 = 4.0;

    pub fn new(inner: S) -> RealTime<S> {
        RealTime { inner, start: None, last_timestamp: None }
    }
}

impl<S: FrameSource> FrameSource for RealTime<S> {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        loop {
            let Some(frame) = self.inner.next_frame()? else { return Ok(None) };
            let period = self.last_timestamp.map_or(0.0, |last| frame.timestamp - last);
            self.last_timestamp = Some(frame.timestamp);
            let (t0, ts0) = *self.start.get_or_insert((Instant::now(), frame.timestamp));
            let due = t0 + Duration::from_secs_f64((frame.timestamp - ts0).max(0.0));
            let now = Instant::now();
            match due.checked_duration_since(now) {
                Some(wait) => std::thread::sleep(wait),
                // Overwritten in the camera's buffers before anyone read it.
                None if period > 0.0 && (now - due).as_secs_f64() > Self::BUFFERS * period => continue,
                None => {}
            }
            return Ok(Some(frame));
        }
    }
}

impl FrameSource for Box<dyn FrameSource + Send> {
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        (**self).next_frame()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mer_shared::image::save_gray_png;

    #[test]
    fn replays_in_frame_number_order_with_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        for i in [2, 0, 1] {
            save_gray_png(&GrayImage::filled(4, 4, i as f32 / 4.0), &dir.path().join(format!("{i:06}.png"))).unwrap();
        }
        // CASME II names its frames img46.jpg, img100.jpg: by number, not by name order.
        let casme = tempfile::tempdir().unwrap();
        for i in [9, 10, 12] {
            save_gray_png(&GrayImage::filled(4, 4, 0.5), &casme.path().join(format!("img{i}.png"))).unwrap();
        }
        let mut src = ReplaySource::open(casme.path(), 200.0).unwrap();
        let frames: Vec<(u64, f64)> = std::iter::from_fn(|| src.next_frame().unwrap()).map(|f| (f.index, f.timestamp)).collect();
        assert_eq!(frames, [(9, 9.0 / 200.0), (10, 10.0 / 200.0), (12, 12.0 / 200.0)]);
        std::fs::write(dir.path().join("notes.txt"), "not a frame").unwrap();
        let mut src = ReplaySource::open(dir.path(), 50.0).unwrap();
        assert_eq!(src.len(), 3);
        let mut seen = Vec::new();
        while let Some(f) = src.next_frame().unwrap() {
            seen.push((f.index, f.timestamp, f.image.get(0, 0)));
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[2].0, 2);
        assert!((seen[2].1 - 0.04).abs() < 1e-12);
        assert!((seen[1].2 - 64.0 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn empty_or_broken_directories_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ReplaySource::open(dir.path(), 30.0).unwrap_err().to_string().contains("no numbered frames"));
        std::fs::write(dir.path().join("000000.jpg"), b"truncated").unwrap();
        let mut src = ReplaySource::open(dir.path(), 30.0).unwrap();
        assert!(src.next_frame().unwrap_err().to_string().contains("000000.jpg"));
        assert!(src.next_frame().unwrap().is_none(), "a broken frame is passed, not read again");
        // Between good frames, the replay goes on after it.
        save_gray_png(&GrayImage::filled(4, 4, 0.5), &dir.path().join("000001.png")).unwrap();
        let mut src = ReplaySource::open(dir.path(), 30.0).unwrap();
        assert!(src.next_frame().is_err());
        assert_eq!(src.next_frame().unwrap().unwrap().index, 1);
        assert!(ReplaySource::open(dir.path(), 0.0).is_err());
        // A frame of another size is refused by name, and the replay goes on.
        save_gray_png(&GrayImage::filled(6, 4, 0.5), &dir.path().join("000002.png")).unwrap();
        save_gray_png(&GrayImage::filled(4, 4, 0.5), &dir.path().join("000003.png")).unwrap();
        let mut src = ReplaySource::open(dir.path(), 30.0).unwrap();
        assert!(src.next_frame().is_err());
        assert_eq!(src.next_frame().unwrap().unwrap().index, 1);
        let err = src.next_frame().unwrap_err().to_string();
        assert!(err.contains("000002.png") && err.contains("6×4") && err.contains("4×4"), "{err}");
        assert_eq!(src.next_frame().unwrap().unwrap().index, 3);
        assert!(src.next_frame().unwrap().is_none());
    }

    #[test]
    fn synthetic_frames_follow_the_scene_and_real_time_paces_them() {
        let opts = InterviewOptions { seconds: 0.2, fps: 50.0, width: 160, height: 160, seed: 2 };
        let mut src = SyntheticSource::new(&opts).unwrap();
        assert_eq!(src.scene().frames, 10);
        let first = src.scene().render(0);
        // Rendered beforehand, so that slow rendering (e.g. under emulation) is not lateness.
        src.prerender();
        let start = Instant::now();
        let mut paced = RealTime::new(src);
        let mut n = 0;
        while let Some(f) = paced.next_frame().unwrap() {
            if n == 0 {
                assert_eq!(f.image.to_u8(), first.to_u8(), "the scene's first frame, in eight bits");
            }
            assert!((f.timestamp - n as f64 / 50.0).abs() < 1e-12);
            n += 1;
        }
        assert_eq!(n, 10);
        // Ten frames at 50 fps span 0.18 s from the first to the last.
        assert!(start.elapsed() >= Duration::from_millis(175), "{:?}", start.elapsed());
    }

    #[test]
    fn prerendered_frames_are_the_rendered_ones_in_eight_bits() {
        let opts = InterviewOptions { seconds: 0.3, fps: 50.0, width: 160, height: 160, seed: 5 };
        let mut live = SyntheticSource::new(&opts).unwrap();
        let mut stored = SyntheticSource::new(&opts).unwrap();
        stored.prerender();
        let mut n = 0;
        while let Some(a) = live.next_frame().unwrap() {
            let b = stored.next_frame().unwrap().unwrap();
            assert_eq!((a.index, a.timestamp), (b.index, b.timestamp));
            assert_eq!(a.image.to_u8(), b.image.to_u8());
            n += 1;
        }
        assert_eq!(n, 15);
        assert!(stored.next_frame().unwrap().is_none());
    }

    /// Tiny frames at once, so that only the reader's own delays make it late.
    struct Ticks {
        next: u64,
        count: u64,
        fps: f64,
    }

    impl FrameSource for Ticks {
        fn next_frame(&mut self) -> Result<Option<Frame>> {
            if self.next == self.count {
                return Ok(None);
            }
            let index = self.next;
            self.next += 1;
            Ok(Some(Frame { index, timestamp: index as f64 / self.fps, image: GrayImage::filled(2, 2, 0.0) }))
        }
    }

    #[test]
    fn a_reader_too_slow_for_real_time_loses_frames_as_with_a_camera() {
        let mut paced = RealTime::new(Ticks { next: 0, count: 40, fps: 20.0 });
        let mut indices = Vec::new();
        while let Some(f) = paced.next_frame().unwrap() {
            indices.push(f.index);
            if f.index == 5 {
                // 600 ms busy: twelve frame periods, more than the four buffered frames.
                std::thread::sleep(Duration::from_millis(600));
            }
        }
        // Every frame up to the pause arrives; after it, at least the frames beyond the four
        // buffered ones are gone.
        assert_eq!(&indices[..6], &[0, 1, 2, 3, 4, 5], "{indices:?}");
        assert!(indices[6] >= 6 + 4, "{indices:?}");
        assert!(indices.windows(2).all(|w| w[0] < w[1]), "{indices:?}");
        assert_eq!(*indices.last().unwrap(), 39, "the stream still ends with its last frame");
    }
}
