//! The face box and the spotter over a stream of frames: the part of the live pipeline that
//! decides *when* something happened. `merd run` feeds it camera frames; `mer spot-eval` feeds
//! it recorded videos, so what is scored is exactly what runs on the board.

use mer_shared::image::{Interpolation, resize};
use mer_shared::{Error, Result};
use tracing::warn;

use crate::face::{FaceSetting, FaceState, FaceTracker, FaceView, Roi};
use crate::source::Frame;
use crate::spotting::{Decision, SPOTTING_SIDE, Spot, Spotter, SpotterConfig};

/// The face box of each frame, as configured.
enum FaceBoxes {
    Fixed(Roi),
    Tracked(Box<FaceTracker>),
}

/// What one frame brought.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// The face box used for this frame; None when no face is known (the frame is skipped).
    pub roi: Option<Roi>,
    /// The frame's position among the frames with a face (0, 1, 2, … with no gaps): the
    /// numbering of spots.
    pub seq: Option<usize>,
    /// A spot found in this frame's push, in `seq` numbers (it lies up to
    /// [`SpotStream::reach_back`] frames back).
    pub spot: Option<Spot>,
    /// The spotter's decision about a frame some way back (for timelines), in `seq` numbers.
    pub decision: Option<Decision>,
}

/// Counters kept by the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamCounts {
    pub frames: u64,
    /// Frames the source skipped (gaps in its frame numbers).
    pub dropped_frames: u64,
    /// Frames without a face box (none detected yet, or the face was lost).
    pub faceless_frames: u64,
    /// Times spotting started afresh (a long gap, or the face box moved).
    pub restarts: u64,
}

pub struct SpotStream {
    face: FaceBoxes,
    spotter: Spotter,
    /// `seq` of the spotter's first frame (it restarts after a long gap or a moved box).
    base: usize,
    next_seq: usize,
    last_index: Option<u64>,
    counts: StreamCounts,
}

impl SpotStream {
    /// `spotting.fps` is replaced by `fps`, the source's frame rate.
    pub fn new(fps: f32, face: &FaceSetting, spotting: &SpotterConfig) -> Result<SpotStream> {
        let spotter = Spotter::new(SpotterConfig { fps, ..spotting.clone() })?;
        let face = match face {
            FaceSetting::Fixed(roi) if roi.width < 8 || roi.height < 8 => {
                return Err(Error::InvalidArgument(format!("face box {roi:?} is too small")));
            }
            FaceSetting::Fixed(roi) => FaceBoxes::Fixed(*roi),
            FaceSetting::Detect { tracker, in_line } => FaceBoxes::Tracked(Box::new(FaceTracker::detecting(tracker.clone(), *in_line)?)),
        };
        Ok(SpotStream { face, spotter, base: 0, next_seq: 0, last_index: None, counts: StreamCounts::default() })
    }

    /// How many frames before the newest one a reported spot may begin.
    pub fn reach_back(&self) -> usize {
        self.spotter.reach_back()
    }

    /// `seq` of the first frame the spotter has seen since it last started: no window may reach
    /// back past it (the frames before are not comparable with the ones after).
    pub fn spotting_base(&self) -> usize {
        self.base
    }

    pub fn counts(&self) -> StreamCounts {
        self.counts
    }

    pub fn face_state(&self) -> FaceState {
        match &self.face {
            FaceBoxes::Fixed(roi) => FaceState::Fixed(*roi),
            FaceBoxes::Tracked(tracker) => tracker.state(),
        }
    }

    fn restart(&mut self) -> Result<()> {
        self.spotter = Spotter::new(self.spotter.config().clone())?;
        self.base = self.next_seq;
        self.counts.restarts += 1;
        Ok(())
    }

    /// Takes the next frame: its face box, and the spotter's findings.
    pub fn push(&mut self, frame: &Frame) -> Result<Observation> {
        let (fw, fh) = (frame.image.width(), frame.image.height());
        let view = match &mut self.face {
            FaceBoxes::Fixed(roi) => {
                if roi.x + roi.width > fw || roi.y + roi.height > fh {
                    return Err(Error::InvalidArgument(format!("face box {roi:?} lies outside the {fw}×{fh} frame")));
                }
                FaceView { roi: Some(*roi), moved: false }
            }
            FaceBoxes::Tracked(tracker) => tracker.observe(&frame.image, frame.timestamp),
        };
        if let Some(last) = self.last_index {
            let missed = frame.index.saturating_sub(last + 1);
            self.counts.dropped_frames += missed;
            if missed as usize > self.spotter.reach_back() {
                warn!("{missed} frames missing; spotting starts again");
                self.restart()?;
            }
        }
        self.last_index = Some(frame.index);
        self.counts.frames += 1;
        let Some(roi) = view.roi else {
            self.counts.faceless_frames += 1;
            return Ok(Observation { roi: None, seq: None, spot: None, decision: None });
        };
        if view.moved && self.next_seq > self.base {
            self.restart()?;
        }
        let face = frame.image.crop(roi.x, roi.y, roi.width, roi.height)?;
        let spot = self.spotter.push(&resize(&face, SPOTTING_SIDE, SPOTTING_SIDE, Interpolation::Area));
        let base = self.base;
        let seq = self.next_seq;
        self.next_seq += 1;
        Ok(Observation {
            roi: Some(roi),
            seq: Some(seq),
            spot: spot.map(|s| Spot { onset: base + s.onset, apex: base + s.apex, offset: base + s.offset }),
            decision: self.spotter.last_decision().map(|d| Decision { frame: base + d.frame, ..d }),
        })
    }
}
