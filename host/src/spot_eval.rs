//! `mer spot-eval`: the device's spotting scored on long videos by the MEGC protocol.
//!
//! Each video of a long-video set ([`crate::dataset::long_video`]) is decoded by `mer-device`'s
//! [`ReplaySource`] and goes through its [`SpotStream`] (face box and spotter), as `merd run`
//! replays a folder of frames; nothing of the spotting is restated here. The settings are the
//! `[spotting]` and `[face]` tables of a merd.toml ([`SpotSettings`]); a detected face is
//! detected in line, as `merd run` does for a replay not paced in real time, so the result does
//! not depend on the machine's load or on how many videos run at once.
//!
//! The stream numbers only the frames that had a face (`seq`); [`SeqFrames`] turns those numbers
//! back into the video's frame numbers, the numbers the annotations use. A spot lasting at most
//! half a second (offset − onset + 1 ≤ 0.5 s × fps, the rule of
//! [`ExpressionKind::by_duration`]) is a micro-expression, any other a macro-expression; micro
//! spots are scored against the micro truths and macro spots against the macro truths with
//! [`mer_device::spotting::match_spots`] (the matching of [`mer_device::spotting::score`]: a spot
//! is a true positive when its IoU with a true interval not yet matched is at least 0.5), and
//! "overall" pools the counts of both ([`score_by_kind`]). Dataset scores pool the counts of the
//! videos evaluated.
//!
//! A video that cannot be evaluated (an undecodable frame, a fixed face box outside its frames) is
//! listed with the error under `failed`, the others are evaluated all the same, and the caller
//! learns of it from [`SpotEvalReport::failed`]. Written: `OUT/results.json` (atomically) and
//! `OUT/timelines/<video>.png` ([`crate::spot_timeline`]).
//!
//! Recognition of the spotted windows is not part of this evaluation; each spot keeps the face box
//! of its apex frame, which is what a classifier of the window would crop.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};
use mer_device::config::FaceConfig;
use mer_device::face::{FaceSetting, Roi, TrackerSettings};
use mer_device::source::{FrameSource, ReplaySource};
use mer_device::spot_stream::{SpotStream, StreamCounts};
use mer_device::spotting::{SpotScore, Spotter, SpotterConfig, match_spots};
use mer_shared::frames::FrameFolder;
use mer_shared::input::KeyFrames;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::Note;
use crate::dataset::long_video::{ExpressionKind, LongVideo, LongVideoKind, LongVideoSet, TrueInterval, load_long_videos};
use crate::spot_recognition::{Recogniser, RecognitionScores, SpotRecognition};
use crate::spot_timeline::{Timeline, timeline_png};
use crate::train::checkpoint::write_json_atomic;

pub const RESULTS_FILE: &str = "results.json";
pub const TIMELINES_DIR: &str = "timelines";

/// The tables of a merd.toml that spotting depends on. Any other table (`[source]`, `[model]`, …)
/// is ignored, so the file a device runs with serves as it is; inside these two, unknown keys are
/// errors as they are for `merd run`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct SpotSettings {
    pub spotting: SpotterConfig,
    pub face: FaceConfig,
}

impl SpotSettings {
    /// Reads a merd.toml; errors name the file (and the key).
    pub fn load(path: &Path) -> Result<SpotSettings> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        SpotSettings::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<SpotSettings> {
        let settings: SpotSettings = toml::from_str(text).map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
        settings.face.check().map_err(|e| anyhow!(e))?;
        Ok(settings)
    }

    /// The face boxes `merd run` uses for a replay as fast as it decodes: a fixed box, or the
    /// detector in line.
    pub fn face_setting(&self) -> FaceSetting {
        self.face.setting(false)
    }

    /// Whether the spotter accepts these settings for a video at `fps`.
    pub fn check_at(&self, fps: f64) -> Result<()> {
        Spotter::new(SpotterConfig { fps: fps as f32, ..self.spotting.clone() })
            .map(drop)
            .map_err(|e| anyhow!("[spotting] at {fps} fps: {e}"))
    }

    pub fn used(&self) -> SettingsUsed {
        let face = match self.face_setting() {
            FaceSetting::Fixed(roi) => FaceUsed::Fixed { roi },
            FaceSetting::Detect { tracker, in_line } => FaceUsed::Detect { tracker, in_line },
        };
        SettingsUsed { spotting: self.spotting.clone(), face }
    }
}

/// The settings a run used, as results.json records them (the frame rate is each video's own).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingsUsed {
    pub spotting: SpotterConfig,
    pub face: FaceUsed,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaceUsed {
    Fixed { roi: Roi },
    Detect { tracker: TrackerSettings, in_line: bool },
}

/// Spotting scores overall and by kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KindScores {
    /// The counts of micro and macro pooled (the MEGC overall score).
    pub overall: SpotScore,
    pub micro: SpotScore,
    #[serde(rename = "macro")]
    pub macro_: SpotScore,
}

impl KindScores {
    pub fn of(micro: SpotScore, macro_: SpotScore) -> KindScores {
        KindScores { overall: SpotScore::pooled(&[micro, macro_]), micro, macro_ }
    }

    /// Several videos taken together: counts summed per kind.
    pub fn pooled(all: &[KindScores]) -> KindScores {
        let micro: Vec<SpotScore> = all.iter().map(|s| s.micro).collect();
        let macro_: Vec<SpotScore> = all.iter().map(|s| s.macro_).collect();
        KindScores::of(SpotScore::pooled(&micro), SpotScore::pooled(&macro_))
    }
}

/// An interval of a video: onset and offset frame numbers (inclusive) and its kind.
pub type Interval = (i64, i64, ExpressionKind);

/// The kind of a spotted interval: micro when it lasts at most half a second.
pub fn spot_kind(onset: i64, offset: i64, fps: f64) -> ExpressionKind {
    ExpressionKind::by_duration(offset - onset + 1, fps)
}

/// Which spots and which true intervals were matched, and the scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Matching {
    pub spots: Vec<bool>,
    /// The true interval each spot was matched to.
    pub spot_truth: Vec<Option<usize>>,
    pub truth: Vec<bool>,
    pub scores: KindScores,
}

/// Micro spots against micro truths, macro spots against macro truths, each with the MEGC
/// matching; "overall" pools the two.
pub fn score_by_kind(spots: &[Interval], truth: &[Interval]) -> Matching {
    // Frame numbers come from file names, digits only: never negative.
    let frames = |i: &Interval| (usize::try_from(i.0).unwrap_or(0), usize::try_from(i.1).unwrap_or(0));
    let (mut spot_matched, mut truth_matched) = (vec![false; spots.len()], vec![false; truth.len()]);
    let mut spot_truth = vec![None; spots.len()];
    let mut by_kind = [empty(); 2];
    for (k, kind) in [ExpressionKind::Micro, ExpressionKind::Macro].into_iter().enumerate() {
        let spotted: Vec<usize> = (0..spots.len()).filter(|&i| spots[i].2 == kind).collect();
        let targets: Vec<usize> = (0..truth.len()).filter(|&j| truth[j].2 == kind).collect();
        let pairs = match_spots(
            &spotted.iter().map(|&i| frames(&spots[i])).collect::<Vec<_>>(),
            &targets.iter().map(|&j| frames(&truth[j])).collect::<Vec<_>>(),
        );
        for (&i, found) in spotted.iter().zip(&pairs) {
            if let Some(j) = found {
                spot_matched[i] = true;
                truth_matched[targets[*j]] = true;
                spot_truth[i] = Some(targets[*j]);
            }
        }
        let tp = pairs.iter().flatten().count();
        by_kind[k] = SpotScore::from_counts(tp, spotted.len() - tp, targets.len() - tp);
    }
    Matching { spots: spot_matched, spot_truth, truth: truth_matched, scores: KindScores::of(by_kind[0], by_kind[1]) }
}

/// "F1 0.67 (TP 2, FP 1, FN 1)", or "none" when there was nothing to find and nothing found.
fn describe(s: &SpotScore) -> String {
    if s.true_positives + s.false_positives + s.false_negatives == 0 {
        return "none".into();
    }
    format!("F1 {:.2} (TP {}, FP {}, FN {})", s.f1, s.true_positives, s.false_positives, s.false_negatives)
}

fn empty() -> SpotScore {
    SpotScore::from_counts(0, 0, 0)
}

/// The video frame behind each `seq` of a [`SpotStream`], which numbers only the frames that had
/// a face (0, 1, 2, … without gaps): its frame number and the face box used.
#[derive(Debug, Clone, Default)]
pub struct SeqFrames {
    frames: Vec<(i64, Roi)>,
}

impl SeqFrames {
    pub fn record(&mut self, seq: usize, frame: i64, roi: Roi) -> Result<()> {
        ensure!(seq == self.frames.len(), "frame {frame} came as face frame {seq}, expected {}", self.frames.len());
        self.frames.push((frame, roi));
        Ok(())
    }

    pub fn frame(&self, seq: usize) -> Result<i64> {
        self.at(seq).map(|f| f.0)
    }

    pub fn roi(&self, seq: usize) -> Result<Roi> {
        self.at(seq).map(|f| f.1)
    }

    fn at(&self, seq: usize) -> Result<(i64, Roi)> {
        self.frames.get(seq).copied().ok_or_else(|| anyhow!("face frame {seq} not seen yet ({} so far)", self.frames.len()))
    }
}

/// One spotted interval, in the video's frame numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpotRecord {
    pub onset: i64,
    pub apex: i64,
    pub offset: i64,
    pub kind: ExpressionKind,
    /// A true positive: matched to a true interval of its kind.
    pub matched: bool,
    /// The face box of the apex frame.
    pub face_box: Roi,
    /// The true interval matched (its index in the video's `truth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truth: Option<usize>,
    /// With `--model`, for a true positive: what the model made of the spotted window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recognition: Option<SpotRecognition>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TruthRecord {
    #[serde(flatten)]
    pub interval: TrueInterval,
    /// Found by a spot of its kind; false is a false negative.
    pub matched: bool,
}

/// One video evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoResult {
    pub id: String,
    pub subject: String,
    pub dir: PathBuf,
    pub fps: f64,
    /// Frames read and given to the spot stream.
    pub frames: u64,
    /// Frames without a face box (none found yet, or the face lost): not spotted.
    pub faceless_frames: u64,
    /// Gaps in the frame numbers.
    pub dropped_frames: u64,
    /// Times spotting started afresh (a long gap, or a moved face box).
    pub restarts: u64,
    pub truth: Vec<TruthRecord>,
    pub spots: Vec<SpotRecord>,
    pub scores: KindScores,
    /// The timeline picture, relative to the output folder; none when it could not be drawn
    /// (the video is then also under `failed`).
    pub timeline: Option<PathBuf>,
}

/// A video that could not be evaluated (or its timeline not drawn), with the reason.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedVideo {
    pub id: String,
    pub dir: PathBuf,
    pub error: String,
}

/// What results.json holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpotEvalReport {
    pub dataset: LongVideoKind,
    pub root: PathBuf,
    pub annotations: Option<PathBuf>,
    /// The merd.toml the settings came from; none: the defaults.
    pub config: Option<PathBuf>,
    pub settings: SettingsUsed,
    /// Pooled over the videos evaluated (sorted by id).
    pub scores: KindScores,
    /// With `--model`: recognition over the true-positive spots (spot-then-recognise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recognition: Option<RecognitionScores>,
    pub videos: Vec<VideoResult>,
    pub failed: Vec<FailedVideo>,
    /// The loader's repairs of the annotations and what it left out.
    pub repairs: Vec<Note>,
    pub skipped: Vec<Note>,
    #[serde(skip)]
    pub out: PathBuf,
}

impl SpotEvalReport {
    pub fn results_path(&self) -> PathBuf {
        self.out.join(RESULTS_FILE)
    }

    /// A short account for the terminal: the dataset's scores, failures and where the files are.
    pub fn table(&self) -> String {
        let count = |kind| self.videos.iter().flat_map(|v| &v.truth).filter(|t| t.interval.kind == kind).count();
        let spotted: usize = self.videos.iter().map(|v| v.spots.len()).sum();
        let (micro, macro_) = (count(ExpressionKind::Micro), count(ExpressionKind::Macro));
        let mut out = format!(
            "{}: {} videos evaluated, {} failed; {} true intervals ({micro} micro, {macro_} macro), {spotted} spotted\n",
            self.dataset,
            self.videos.len(),
            self.failed.len(),
            micro + macro_,
        );
        out += &format!("{:<8} {:>5} {:>5} {:>5} {:>9} {:>7} {:>6}\n", "", "TP", "FP", "FN", "precision", "recall", "F1");
        for (name, s) in [("overall", self.scores.overall), ("micro", self.scores.micro), ("macro", self.scores.macro_)] {
            out += &format!(
                "{name:<8} {:>5} {:>5} {:>5} {:>9.3} {:>7.3} {:>6.3}\n",
                s.true_positives, s.false_positives, s.false_negatives, s.precision, s.recall, s.f1
            );
        }
        if let Some(r) = &self.recognition {
            out += &format!(
                "spot-then-recognise ({}, {}): {} true-positive spots of its classes, UF1 {:.3}, UAR {:.3}, accuracy {:.3} ({} with labels outside its classes)\n",
                r.model.display(),
                r.taxonomy,
                r.scores.samples,
                r.scores.uf1,
                r.scores.uar,
                r.scores.accuracy,
                r.excluded
            );
        }
        for f in &self.failed {
            out += &format!("FAILED {}: {}\n", f.id, f.error);
        }
        out += &format!("results: {}\ntimelines: {}\n", self.results_path().display(), self.out.join(TIMELINES_DIR).display());
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpotEvalOptions {
    pub kind: LongVideoKind,
    pub root: PathBuf,
    pub annotations: Option<PathBuf>,
    /// A merd.toml; none: the defaults, face detected.
    pub config: Option<PathBuf>,
    pub out: PathBuf,
    /// Videos evaluated at once.
    pub threads: usize,
    /// Spot-then-recognise: this model labels every true-positive spot.
    pub model: Option<PathBuf>,
    /// Keys the model's bundle must be signed by (none: its integrity is checked).
    pub public_keys: Vec<PathBuf>,
}

/// A checked evaluation, ready to run.
#[derive(Debug)]
pub struct SpotEval {
    options: SpotEvalOptions,
    settings: SpotSettings,
    set: LongVideoSet,
    recogniser: Option<Recogniser>,
}

impl SpotEval {
    /// Checks everything (threads, settings, the dataset, that the output folder can be written)
    /// and creates nothing.
    pub fn new(options: SpotEvalOptions) -> Result<SpotEval> {
        ensure!(options.threads > 0, "--threads must be at least 1");
        let settings = match &options.config {
            Some(path) => SpotSettings::load(path)?,
            None => SpotSettings::default(),
        };
        let set = load_long_videos(options.kind, &options.root, options.annotations.as_deref())?;
        ensure!(!set.videos.is_empty(), "{}: no videos to evaluate", options.root.display());
        let mut rates: Vec<f64> = set.videos.iter().map(|v| v.fps).collect();
        rates.sort_by(f64::total_cmp);
        rates.dedup();
        for fps in rates {
            settings.check_at(fps).map_err(|e| match &options.config {
                Some(path) => anyhow!("{}: {e}", path.display()),
                None => e,
            })?;
        }
        let recogniser = options.model.as_deref().map(|m| Recogniser::load(m, &options.public_keys)).transpose()?;
        check_out_dir(&options.out)?;
        Ok(SpotEval { options, settings, set, recogniser })
    }

    pub fn set(&self) -> &LongVideoSet {
        &self.set
    }

    /// Frame files over all videos (for a progress bar).
    pub fn total_frames(&self) -> u64 {
        self.set.videos.iter().map(|v| v.frames.len() as u64).sum()
    }

    /// Evaluates every video, `threads` at a time, and writes results.json and the timelines;
    /// `progress` is told of frames done. Failed videos are in the report, not an error.
    pub fn run(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<SpotEvalReport> {
        let out = &self.options.out;
        let timelines = out.join(TIMELINES_DIR);
        std::fs::create_dir_all(&timelines).with_context(|| format!("cannot create {}", timelines.display()))?;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(self.options.threads).build().context("starting the worker threads")?;
        let outcomes: Vec<(Option<VideoResult>, Option<FailedVideo>)> =
            pool.install(|| self.set.videos.par_iter().map(|v| self.video(v, progress)).collect());
        let (mut videos, mut failed): (Vec<VideoResult>, Vec<FailedVideo>) = (Vec::new(), Vec::new());
        for (video, failure) in outcomes {
            videos.extend(video);
            failed.extend(failure);
        }
        videos.sort_by(|a, b| a.id.cmp(&b.id));
        failed.sort_by(|a, b| a.id.cmp(&b.id));
        let scores = KindScores::pooled(&videos.iter().map(|v| v.scores).collect::<Vec<_>>());
        let recognition =
            self.recogniser.as_ref().map(|r| r.scores(videos.iter().flat_map(|v| &v.spots).filter_map(|s| s.recognition.as_ref())));
        let report = SpotEvalReport {
            dataset: self.set.kind,
            root: self.set.root.clone(),
            annotations: self.set.annotations.clone(),
            config: self.options.config.clone(),
            settings: self.settings.used(),
            scores,
            recognition,
            videos,
            failed,
            repairs: self.set.repairs.clone(),
            skipped: self.set.skipped.clone(),
            out: out.clone(),
        };
        write_json_atomic(&report.results_path(), &report)?;
        Ok(report)
    }

    /// One video: spotted, scored and drawn.
    fn video(&self, video: &LongVideo, progress: &(dyn Fn(u64) + Sync)) -> (Option<VideoResult>, Option<FailedVideo>) {
        let relative = Path::new(TIMELINES_DIR).join(format!("{}.png", video.id));
        let picture = self.options.out.join(&relative);
        let failure = |error: String| FailedVideo { id: video.id.clone(), dir: video.dir.clone(), error };
        let done = Cell::new(0u64);
        let run = spot_video(video, &self.settings, &|| {
            done.set(done.get() + 1);
            progress(1);
        });
        let run = match run {
            Ok(run) => run,
            Err(e) => {
                progress((video.frames.len() as u64).saturating_sub(done.get()));
                // A picture left by an earlier run would not belong to these results.
                let _ = std::fs::remove_file(&picture);
                return (None, Some(failure(format!("{e:#}"))));
            }
        };
        let mut result = score_video(video, &run);
        if let Some(recogniser) = &self.recogniser
            && let Err(e) = recognise_spots(recogniser, video, &mut result)
        {
            return (None, Some(failure(format!("recognition: {e:#}"))));
        }
        let title = format!(
            "{}: {}; micro {}; macro {}",
            video.id,
            describe(&result.scores.overall),
            describe(&result.scores.micro),
            describe(&result.scores.macro_)
        );
        let truth: Vec<Interval> = result.truth.iter().map(|t| (t.interval.onset, t.interval.offset, t.interval.kind)).collect();
        let spots: Vec<(i64, i64, bool)> = result.spots.iter().map(|s| (s.onset, s.offset, s.matched)).collect();
        let first_last = (video.frames.first().copied().unwrap_or(0), video.frames.last().copied().unwrap_or(0));
        let timeline = Timeline { title, fps: video.fps, frames: first_last, signal: &run.signal, truth: &truth, spots: &spots };
        match timeline_png(&picture, &timeline) {
            Ok(()) => {
                result.timeline = Some(relative);
                (Some(result), None)
            }
            Err(e) => (Some(result), Some(failure(format!("timeline: {e:#}")))),
        }
    }
}

/// What the spot stream found in one video, in its frame numbers.
#[derive(Debug, Clone, Default)]
pub struct VideoRun {
    /// (onset, apex, offset, face box of the apex frame).
    pub spots: Vec<(i64, i64, i64, Roi)>,
    /// (frame, contrast, threshold) of each decision of the spotter.
    pub signal: Vec<(i64, f32, f32)>,
    pub counts: StreamCounts,
}

/// Replays a video's frames through the spot stream; `tick` after each frame read.
pub fn spot_video(video: &LongVideo, settings: &SpotSettings, tick: &dyn Fn()) -> Result<VideoRun> {
    let mut source = ReplaySource::open(&video.dir, video.fps)?;
    let mut stream = SpotStream::new(video.fps as f32, &settings.face_setting(), &settings.spotting)?;
    let mut seqs = SeqFrames::default();
    let mut run = VideoRun::default();
    // The first error ends the video: its spots after a missing frame would not be what the
    // device finds in the whole recording.
    while let Some(frame) = source.next_frame()? {
        tick();
        let number = i64::try_from(frame.index).context("frame number")?;
        let seen = stream.push(&frame).with_context(|| format!("frame {number}"))?;
        if let (Some(seq), Some(roi)) = (seen.seq, seen.roi) {
            seqs.record(seq, number, roi)?;
        }
        if let Some(spot) = seen.spot {
            run.spots.push((seqs.frame(spot.onset)?, seqs.frame(spot.apex)?, seqs.frame(spot.offset)?, seqs.roi(spot.apex)?));
        }
        if let Some(d) = seen.decision {
            run.signal.push((seqs.frame(d.frame)?, d.contrast, d.threshold));
        }
    }
    run.counts = stream.counts();
    Ok(run)
}

/// The spots of a run scored against the video's true intervals.
pub fn score_video(video: &LongVideo, run: &VideoRun) -> VideoResult {
    let spots: Vec<Interval> = run.spots.iter().map(|&(on, _, off, _)| (on, off, spot_kind(on, off, video.fps))).collect();
    let truth: Vec<Interval> = video.intervals.iter().map(|t| (t.onset, t.offset, t.kind)).collect();
    let matching = score_by_kind(&spots, &truth);
    VideoResult {
        id: video.id.clone(),
        subject: video.subject.clone(),
        dir: video.dir.clone(),
        fps: video.fps,
        frames: run.counts.frames,
        faceless_frames: run.counts.faceless_frames,
        dropped_frames: run.counts.dropped_frames,
        restarts: run.counts.restarts,
        truth: video.intervals.iter().zip(&matching.truth).map(|(t, &matched)| TruthRecord { interval: t.clone(), matched }).collect(),
        spots: run
            .spots
            .iter()
            .zip(spots.iter().zip(&matching.spot_truth))
            .map(|(&(onset, apex, offset, face_box), (s, &truth))| SpotRecord {
                onset,
                apex,
                offset,
                kind: s.2,
                matched: truth.is_some(),
                face_box,
                truth,
                recognition: None,
            })
            .collect(),
        scores: matching.scores,
        timeline: None,
    }
}

/// Labels every true-positive spot of `result` with the model, from the video's own frames.
fn recognise_spots(recogniser: &Recogniser, video: &LongVideo, result: &mut VideoResult) -> Result<()> {
    if result.spots.iter().all(|s| s.truth.is_none()) {
        return Ok(());
    }
    let frames = FrameFolder::open(&video.dir)?;
    for spot in &mut result.spots {
        let Some(j) = spot.truth else { continue };
        let keys = KeyFrames::new(spot.onset, spot.apex, spot.offset)?;
        let label = &video.intervals[j].label;
        let recognised = recogniser
            .recognise(&frames, keys, spot.face_box, label)
            .with_context(|| format!("the spot {}–{} of {}", spot.onset, spot.offset, video.id))?;
        spot.recognition = Some(recognised);
    }
    Ok(())
}

/// Whether `out` can be made and written in, found out without leaving anything behind.
fn check_out_dir(out: &Path) -> Result<()> {
    let mut existing = out;
    while !existing.as_os_str().is_empty() && !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new(""));
    }
    let existing = if existing.as_os_str().is_empty() { Path::new(".") } else { existing };
    if !existing.is_dir() {
        bail!("--out {}: {} is not a folder", out.display(), existing.display());
    }
    tempfile::Builder::new()
        .prefix(".spot-eval-")
        .tempfile_in(existing)
        .with_context(|| format!("--out {}: cannot write in {}", out.display(), existing.display()))?;
    for (path, folder) in [(out.join(TIMELINES_DIR), true), (out.join(RESULTS_FILE), false)] {
        if path.exists() && path.is_dir() != folder {
            bail!("--out {}: {} is in the way", out.display(), path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExpressionKind::{Macro, Micro};
    use mer_device::spotting::score;
    use mer_shared::face::FaceBox;
    use mer_shared::synth::interview::{InterviewOptions, write_interview};

    #[test]
    fn micro_spots_meet_micro_truths_macro_meet_macro_and_overall_pools_them() {
        let fps = 30.0;
        // 15 frames = 0.5 s: still micro; 16: macro.
        assert_eq!((spot_kind(0, 14, fps), spot_kind(0, 15, fps)), (Micro, Macro));
        let truth = [(10, 20, Micro), (100, 160, Macro), (300, 310, Micro), (400, 480, Macro)];
        let spots = [
            (11, 21, Micro),   // TP micro
            (100, 158, Macro), // TP macro
            (295, 312, Macro), // a long spot over a micro truth: a false macro spot, and the micro truth missed
            (500, 505, Micro), // FP micro
        ];
        let m = score_by_kind(&spots, &truth);
        assert_eq!(m.spots, [true, true, false, false]);
        assert_eq!(m.truth, [true, true, false, false]);
        let counts = |s: SpotScore| (s.true_positives, s.false_positives, s.false_negatives);
        assert_eq!(counts(m.scores.micro), (1, 1, 1));
        assert_eq!(counts(m.scores.macro_), (1, 1, 1));
        assert_eq!(counts(m.scores.overall), (2, 2, 2));
        assert_eq!(m.scores.micro, score(&[(11, 21), (500, 505)], &[(10, 20), (300, 310)]));
        assert!((m.scores.overall.f1 - 0.5).abs() < 1e-12);
        // Pooled over videos: counts add up per kind, overall from the sums (not a mean of F1).
        let only_micro = score_by_kind(&[(0, 5, Micro)], &[(0, 5, Micro)]).scores;
        let pooled = KindScores::pooled(&[m.scores, only_micro]);
        assert_eq!(counts(pooled.micro), (2, 1, 1));
        assert_eq!(counts(pooled.macro_), (1, 1, 1));
        assert_eq!(counts(pooled.overall), (3, 2, 2));
        assert_eq!(counts(KindScores::pooled(&[]).overall), (0, 0, 0));
    }

    #[test]
    fn face_frame_numbers_map_back_to_video_frames_past_faceless_ones() {
        let roi = |x| Roi { x, y: 0, width: 10, height: 10 };
        let mut seqs = SeqFrames::default();
        // Frames 3..=5 had no face, frame 8 is missing from the folder.
        for (seq, frame) in [0, 1, 2, 6, 7, 9].into_iter().enumerate() {
            seqs.record(seq, frame, roi(frame as usize)).unwrap();
        }
        assert_eq!((0..6).map(|s| seqs.frame(s).unwrap()).collect::<Vec<_>>(), [0, 1, 2, 6, 7, 9]);
        assert_eq!(seqs.roi(3).unwrap(), roi(6));
        assert!(seqs.frame(6).is_err());
        assert!(seqs.record(7, 10, roi(0)).unwrap_err().to_string().contains("expected 6"));
    }

    #[test]
    fn settings_come_from_a_whole_merd_toml_or_just_its_spotting_and_face_tables() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../device/merd.example.toml");
        let full = SpotSettings::load(&example).unwrap();
        assert_eq!(full.face.roi, Some(Roi { x: 226, y: 158, width: 179, height: 206 }));
        assert_eq!(full.spotting, SpotterConfig::default());
        let part = SpotSettings::parse("[spotting]\nthreshold_z = 4.5\nfeature = \"lbp\"\n[face.detect]\ndetect_every_s = 0.25\n").unwrap();
        assert_eq!(part.spotting.threshold_z, 4.5);
        assert!(matches!(part.face_setting(), FaceSetting::Detect { ref tracker, in_line: true } if tracker.detect_every_s == 0.25));
        assert_eq!(SpotSettings::parse("").unwrap(), SpotSettings::default());
        assert_eq!(SpotSettings::parse("[gpio]\nwhatever = 1\n[model]\npath = \"m\"\n").unwrap(), SpotSettings::default());
        for (text, expect) in [
            ("[spotting]\nthreshold = 3\n", "threshold"),
            ("[face]\nroi = [1, 2, 3, 4]\nbox = 1\n", "box"),
            ("[face.detect]\nsmoothing = 0.5\nspeed = 2\n", "speed"),
            ("[face]\nroi = [10, 10, 100, 120]\n[face.detect]\nsmoothing = 0.5\n", "not both"),
            ("[face.detect]\nsmoothing = 2.0\n", "face.detect"),
            ("[spotting]\nfeature = \"hog\"\n", "hog"),
        ] {
            let e = SpotSettings::parse(text).unwrap_err().to_string();
            assert!(e.contains(expect), "{text:?}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("merd.toml");
        std::fs::write(&path, "[spotting]\ngrid = 5\n").unwrap();
        let settings = SpotSettings::load(&path).unwrap();
        assert!(settings.check_at(100.0).unwrap_err().to_string().contains("unusable spotting settings"));
        std::fs::write(&path, "[spotting]\nthreshold = 3\n").unwrap();
        assert!(SpotSettings::load(&path).unwrap_err().to_string().contains("merd.toml"));
    }

    /// A 6 s interview clip at 50 fps, 320×240, in `root/<name>`; returns its face box.
    fn clip(root: &Path, name: &str, seed: u64) -> [usize; 4] {
        let opts = InterviewOptions { seconds: 6.0, fps: 50.0, width: 320, height: 240, seed };
        write_interview(&root.join(name), &opts, &|| {}).unwrap().face_box
    }

    fn options(root: &Path, config: Option<PathBuf>, out: PathBuf, threads: usize) -> SpotEvalOptions {
        SpotEvalOptions {
            kind: LongVideoKind::Interview,
            root: root.to_path_buf(),
            annotations: None,
            config,
            out,
            threads,
            model: None,
            public_keys: Vec::new(),
        }
    }

    /// With a model, every true-positive spot is classified exactly as `merd classify-clip`
    /// classifies that window of the recorded frames, and scored against its interval's label.
    #[test]
    fn spot_then_recognise_labels_true_positives_through_the_device_preprocessing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("clips");
        let opts = InterviewOptions { seconds: 8.0, fps: 100.0, width: 320, height: 240, seed: 2 };
        let face = write_interview(&root.join("a"), &opts, &|| {}).unwrap().face_box;
        let config = dir.path().join("merd.toml");
        std::fs::write(&config, format!("[face]\nroi = {face:?}\n")).unwrap();
        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/skd-tstsan-synthetic.merb");
        let key = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo-key.pub");
        let options = SpotEvalOptions {
            model: Some(model.clone()),
            public_keys: vec![key],
            ..options(&root, Some(config), dir.path().join("out"), 1)
        };
        let report = SpotEval::new(options).unwrap().run(&|_| {}).unwrap();
        let v = &report.videos[0];
        let hits: Vec<&SpotRecord> = v.spots.iter().filter(|s| s.matched).collect();
        assert!(!hits.is_empty(), "{v:?}");
        assert!(v.spots.iter().all(|s| s.matched == s.recognition.is_some()));
        let classifier = mer_shared::classifier::Classifier::load(&model, mer_shared::classifier::Trust::IntegrityOnly).unwrap();
        for s in &hits {
            let keys = KeyFrames::new(s.onset, s.apex, s.offset).unwrap();
            let by_hand = mer_device::clip::classify_clip(&classifier, &v.dir, keys, Some(FaceBox::from(s.face_box)), 1).unwrap();
            let r = s.recognition.as_ref().unwrap();
            assert_eq!(r.probabilities, by_hand.result.probabilities[0]);
            let label = &v.truth[s.truth.unwrap()].interval.label;
            assert_eq!(r.truth.is_some(), classifier.manifest().classes.contains(label), "{label}");
        }
        let recognition = report.recognition.as_ref().unwrap();
        let scored = hits.iter().filter(|s| s.recognition.as_ref().unwrap().truth.is_some()).count();
        assert_eq!((recognition.scores.samples, recognition.excluded), (scored, hits.len() - scored));
        assert!(report.table().contains("spot-then-recognise"), "{}", report.table());
    }

    #[test]
    fn evaluates_interview_clips_and_reports_a_broken_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("clips");
        let face = clip(&root, "a", 3);
        let config = dir.path().join("merd.toml");
        std::fs::write(&config, format!("[source]\nkind = \"camera\"\n[face]\nroi = {face:?}\n[spotting]\nthreshold_z = 6.0\n")).unwrap();

        let out = dir.path().join("out");
        let eval = SpotEval::new(options(&root, Some(config.clone()), out.clone(), 2)).unwrap();
        assert!(!out.exists(), "nothing is written before the run");
        assert_eq!(eval.total_frames(), 300);
        let ticks = std::sync::atomic::AtomicU64::new(0);
        let report = eval
            .run(&|n| {
                ticks.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            })
            .unwrap();
        assert_eq!(ticks.into_inner(), 300);
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let v = &report.videos[0];
        assert_eq!((v.id.as_str(), v.frames, v.faceless_frames), ("a", 300, 0));
        assert!(!v.truth.is_empty());
        // The scores are the device's own scoring of the same spots (all micro: short expressions).
        let spots: Vec<(usize, usize)> = v.spots.iter().map(|s| (s.onset as usize, s.offset as usize)).collect();
        let truth: Vec<(usize, usize)> = v.truth.iter().map(|t| (t.interval.onset as usize, t.interval.offset as usize)).collect();
        assert!(v.spots.iter().all(|s| s.kind == Micro && s.face_box == Roi::from(face)), "{:?}", v.spots);
        assert_eq!(v.scores.micro, score(&spots, &truth));
        assert_eq!(v.scores.overall, v.scores.micro);
        assert_eq!(v.spots.iter().filter(|s| s.matched).count(), v.scores.overall.true_positives);
        assert!(v.scores.overall.true_positives > 0, "{v:?}");
        assert!(out.join("timelines/a.png").is_file());

        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join(RESULTS_FILE)).unwrap()).unwrap();
        assert_eq!(json["dataset"], "interview");
        assert_eq!(json["settings"]["face"]["fixed"]["roi"], serde_json::json!(face));
        assert_eq!(json["settings"]["spotting"]["threshold_z"], 6.0);
        assert_eq!(json["videos"][0]["timeline"], "timelines/a.png");
        assert_eq!(json["videos"][0]["fps"], 50.0);
        for key in ["onset", "apex", "offset", "kind", "matched", "label", "source"] {
            assert!(json["videos"][0]["truth"][0].get(key).is_some(), "truth.{key}");
        }
        for key in ["onset", "apex", "offset", "kind", "matched", "face_box"] {
            assert!(v.spots.is_empty() || json["videos"][0]["spots"][0].get(key).is_some(), "spots.{key}");
        }
        for kind in ["overall", "micro", "macro"] {
            for key in ["true_positives", "false_positives", "false_negatives", "precision", "recall", "f1"] {
                assert!(json["scores"][kind].get(key).is_some(), "scores.{kind}.{key}");
            }
        }
        assert_eq!(json["scores"]["overall"]["f1"], json["videos"][0]["scores"]["overall"]["f1"]);
        assert_eq!(json["failed"], serde_json::json!([]));

        // A second clip with a frame that does not decode: it fails with the file named, the
        // first is still evaluated, and the results do not depend on the number of threads.
        clip(&root, "b", 4);
        std::fs::write(root.join("b/frames/000100.jpg"), b"not a jpeg").unwrap();
        let single = dir.path().join("single");
        let report = SpotEval::new(options(&root, Some(config.clone()), single.clone(), 1)).unwrap().run(&|_| {}).unwrap();
        assert_eq!(report.videos.len(), 1);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].id, "b");
        assert!(report.failed[0].error.contains("000100.jpg"), "{}", report.failed[0].error);
        assert!(report.table().contains("FAILED b:"), "{}", report.table());
        assert!(!single.join("timelines/b.png").exists());
        let again = SpotEval::new(options(&root, Some(config), out.clone(), 2)).unwrap().run(&|_| {}).unwrap();
        assert_eq!(again.videos, report.videos);
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join(RESULTS_FILE)).unwrap()).unwrap();
        assert_eq!(json["failed"][0]["id"], "b");
        assert_eq!(json["videos"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_detected_face_is_found_in_line() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("clip");
        clip(dir.path(), "clip", 3);
        let out = dir.path().join("out");
        let report = SpotEval::new(options(&root, None, out, 1)).unwrap().run(&|_| {}).unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        let v = &report.videos[0];
        assert!(matches!(report.settings.face, FaceUsed::Detect { in_line: true, .. }));
        // The first frame waits for the detector's answer; after it the face is never lost.
        assert!((1..10).contains(&v.faceless_frames), "{v:?}");
        assert!(v.frames == 300 && v.timeline.is_some());
    }

    #[test]
    fn nothing_is_written_when_a_setting_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("clips");
        std::fs::create_dir_all(root.join("a/frames")).unwrap();
        let out = dir.path().join("out");
        let fails = |o: SpotEvalOptions| SpotEval::new(o).unwrap_err().to_string();
        assert!(fails(options(&root, None, out.clone(), 0)).contains("--threads"));
        assert!(fails(options(&root, Some(dir.path().join("absent.toml")), out.clone(), 1)).contains("absent.toml"));
        assert!(fails(options(&root, None, out.clone(), 1)).contains("truth.json"));
        std::fs::write(dir.path().join("file"), "").unwrap();
        assert!(check_out_dir(&dir.path().join("file/out")).unwrap_err().to_string().contains("not a folder"));
        assert!(check_out_dir(&out.join("deeper")).is_ok());
        assert!(check_out_dir(Path::new("relative/never/made")).is_ok());
        assert!(!out.exists() && !Path::new("relative").exists());
    }
}
