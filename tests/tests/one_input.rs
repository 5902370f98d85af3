//! One input, host and device: a CASME II-layout clip made from a real face photograph goes
//! through `mer prepare`, through `merd classify-clip` and through `merd run`'s pipeline on a
//! replay of the same frames told the annotated key frames. For every input layout the three
//! give the same input hash and bit-identical outputs, with a face box that is neither at the
//! frame origin nor a multiple of the crop size. Each layout's model is trained (briefly) and
//! exported from the prepared cache, so every architecture also trains and exports from raw frames.

use std::path::{Path, PathBuf};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};

use mer_device::clip::classify_clip;
use mer_device::pipeline::{EventSink, FaceSetting, Pipeline, PipelineConfig, Roi};
use mer_device::source::{FrameSource, ReplaySource};
use mer_device::spotting::SpotterConfig;
use mer_host::dataset::DatasetKind;
use mer_host::export::{ExportOptions, export_to_file};
use mer_host::model::am3f_flownet::AM3F_FLOWNET;
use mer_host::model::htnet::HTNET;
use mer_host::model::skd_tstsan::{SKD_TSTSAN, SKD_TSTSAN_FLOW};
use mer_host::prepare::pipeline::{PrepareOptions, prepare};
use mer_host::prepare::{CropMode, DetectorSettings, PreparedSet};
use mer_host::train::config::TrainConfig;
use mer_host::train::data::{DataKind, TrainData};
use mer_host::train::run::train_all;
use mer_shared::classifier::Classifier;
use mer_shared::event::Event;
use mer_shared::face::FaceBox;
use mer_shared::image::{GrayImage, Interpolation, load_gray, resize, save_gray_png};
use mer_shared::input::InputLayout;
use mer_shared::input::f32_digest;
use mer_shared::labels::Taxonomy;
use mer_shared::manifest::InputProvenance;

const FPS: f64 = 200.0;
/// Frames img46 … img60; onset 46, apex 52, offset 60.
const FIRST: i64 = 46;
const KEYS: (i64, i64, i64) = (46, 52, 60);
/// Frames are 331×287 with the face at (41, 23), 171×203: not at the origin, not a multiple of 128.
const FACE: FaceBox = FaceBox { x: 41, y: 23, width: 171, height: 203, score: 0.0 };

/// A real apex face from ../shared, or, where that is absent and not required, a textured one.
fn face_photo(index: usize) -> GrayImage {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/faces-casme2");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    photos.sort();
    if photos.is_empty() {
        assert!(std::env::var_os("MER_REQUIRE_REFERENCE").is_none(), "{} is missing (MER_REQUIRE_REFERENCE is set)", dir.display());
        eprintln!("note: {} is missing; using a synthetic texture", dir.display());
        return GrayImage::from_fn(224, 224, |x, y| 0.5 + 0.3 * ((x as f32 * 0.11).sin() * (y as f32 * 0.07 + index as f32).cos()));
    }
    let photo = load_gray(&photos[index * 7 % photos.len()]).unwrap();
    resize(&photo, 224, 224, Interpolation::Area)
}

/// Frame `n` of a clip: the photo in a 331×287 frame, its lower half moving down by up to
/// `amplitude` pixels towards the apex (a smooth, sub-pixel movement, sampled bilinearly).
fn frame(photo: &GrayImage, n: i64, amplitude: f32) -> GrayImage {
    let (onset, apex, offset) = KEYS;
    let phase = if n <= apex { (n - onset) as f32 / (apex - onset) as f32 } else { (offset - n) as f32 / (offset - apex) as f32 };
    let shift = amplitude * phase.clamp(0.0, 1.0);
    GrayImage::from_fn(331, 287, |x, y| {
        let (fx, fy) = (x as f32 - 60.0, y as f32 - 30.0);
        if !(0.0..223.0).contains(&fx) || !(0.0..223.0).contains(&fy) {
            return 0.2;
        }
        let weight = ((fy - 112.0) / 60.0).clamp(0.0, 1.0);
        let sy = (fy - shift * weight).clamp(0.0, 222.999);
        let (x0, y0) = (fx as usize, sy as usize);
        let (ax, ay) = (fx - x0 as f32, sy - y0 as f32);
        let p = |x: usize, y: usize| photo.get(x.min(223), y.min(223));
        (1.0 - ay) * ((1.0 - ax) * p(x0, y0) + ax * p(x0 + 1, y0)) + ay * ((1.0 - ax) * p(x0, y0 + 1) + ax * p(x0 + 1, y0 + 1))
    })
}

/// Two subjects × two clips in CASME II's layout, with its coding sheet; returns the root.
fn casme2_clips(root: &Path) -> Vec<PathBuf> {
    let mut csv = String::from("Subject,Filename,OnsetFrame,ApexFrame,OffsetFrame,Action Units,Estimated Emotion\n");
    let mut clips = Vec::new();
    for (k, (subject, clip, emotion, amplitude)) in [
        ("01", "EP01_01", "happiness", 1.5f32),
        ("01", "EP02_03", "surprise", -1.0),
        ("02", "EP03_02", "disgust", 2.0),
        ("02", "EP07_01", "others", 0.7),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = root.join("CASME2_RAW_selected").join(format!("sub{subject}")).join(clip);
        std::fs::create_dir_all(&dir).unwrap();
        let photo = face_photo(k);
        for n in FIRST..=KEYS.2 {
            save_gray_png(&frame(&photo, n, amplitude), &dir.join(format!("img{n}.png"))).unwrap();
        }
        csv += &format!("{subject},{clip},{},{},{},4,{emotion}\n", KEYS.0, KEYS.1, KEYS.2);
        clips.push(dir);
    }
    std::fs::write(root.join("CASME2-coding.csv"), csv).unwrap();
    clips
}

/// Collects the pipeline's events.
struct Collect(Arc<Mutex<Vec<Event>>>);

impl EventSink for Collect {
    fn append(&mut self, event: &Event) -> mer_shared::Result<Event> {
        self.0.lock().unwrap().push(event.clone());
        Ok(event.clone())
    }
    fn sync(&mut self) -> mer_shared::Result<()> {
        Ok(())
    }
}

/// `merd run`'s pipeline on a replay of `clip`, told the key frames; the event's probabilities.
fn pipeline_probabilities(classifier: Classifier, clip: &Path) -> Vec<f32> {
    let config = PipelineConfig {
        fps: FPS as f32,
        face: FaceSetting::Fixed(Roi { x: FACE.x, y: FACE.y, width: FACE.width, height: FACE.height }),
        buffer_s: 2.0,
        spotting: SpotterConfig::for_fps(FPS as f32),
        flow_threads: 1,
        max_queued: 4,
    };
    let logged = Arc::new(Mutex::new(Vec::new()));
    let mut pipeline = Pipeline::new(config, classifier, Collect(logged.clone()), channel().0).unwrap();
    let mut replay = ReplaySource::open(clip, FPS).unwrap();
    while let Some(frame) = replay.next_frame().unwrap() {
        pipeline.push(&frame).unwrap();
    }
    let (onset, apex, offset) = KEYS;
    assert!(pipeline.classify_window(mer_shared::input::KeyFrames::new(onset, apex, offset).unwrap()));
    let (_, report) = pipeline.finish();
    assert_eq!(report.failures, 0, "{:?}", report.last_failure);
    let events = logged.lock().unwrap().clone();
    let triggered: Vec<&Event> = events.iter().filter(|e| e.source == mer_shared::event::EventSource::Triggered).collect();
    assert_eq!(triggered.len(), 1, "{events:?}");
    let e = triggered[0];
    assert_eq!([e.onset_s, e.apex_s, e.offset_s].map(|t| (t * FPS).round() as i64), [onset, apex, offset]);
    assert!(!e.foreign_inputs);
    e.probabilities.clone()
}

#[test]
fn prepare_classify_clip_and_the_live_pipeline_compute_one_input() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("casme2");
    let clips = casme2_clips(&root);
    let keys = mer_shared::input::KeyFrames::new(KEYS.0, KEYS.1, KEYS.2).unwrap();
    for (layout, arch) in [
        (InputLayout::SkdTstsan38, SKD_TSTSAN),
        (InputLayout::FlowStrain28, AM3F_FLOWNET),
        (InputLayout::FlowStrain28, SKD_TSTSAN_FLOW),
        (InputLayout::HtnetMosaic28, HTNET),
    ] {
        let cache = dir.path().join(format!("cache-{}", layout.name()));
        let summary = prepare(&PrepareOptions {
            dataset: DatasetKind::Casme2,
            root: root.clone(),
            annotations: None,
            taxonomy: Taxonomy::Casme2Five,
            out: cache.clone(),
            crop: CropMode::Fixed(FACE),
            detector: DetectorSettings::default(),
            spec: layout.spec(),
        })
        .unwrap();
        assert_eq!((summary.samples, summary.failed.len()), (4, 0), "{}", summary.describe());
        // HTNet, AM3F-FlowNet and the flow-only SKD-TSTSAN all train and export from the raw-frame cache.

        let data = TrainData::load_for(arch, DataKind::Prepared, &cache).unwrap();
        let config = TrainConfig { iters: 1, batch: 4, ..TrainConfig::new(arch) };
        let run = dir.path().join(format!("run-{arch}"));
        let checkpoint = train_all(&data, &config, &run, tch::Device::Cpu).unwrap();
        let onnx = dir.path().join(format!("{arch}.onnx"));
        let exported = export_to_file(&ExportOptions {
            checkpoint,
            ensemble: vec![],
            out: onnx.clone(),
            data: None,
            evaluation: None,
            version: Some(format!("one-input-{arch}")),
            probe_seed: 7,
            classes: None,
            input: None,
            uncertain_below: None,
        })
        .unwrap();
        assert_eq!(exported.manifest.inputs, InputProvenance::MerShared);
        assert_eq!(exported.manifest.input, layout.spec());
        let load = || Classifier::load(&onnx, mer_shared::classifier::Trust::IntegrityOnly).unwrap();
        let classifier = load();

        let set = PreparedSet::load(&cache).unwrap();
        for (i, clip) in clips.iter().enumerate() {
            let meta = &set.samples[i];
            assert_eq!(meta.frames, keys);
            let prepared = set.tensor(i);
            assert_eq!(meta.input_sha256, f32_digest(prepared), "{}", meta.id);
            let host = classifier.classify(prepared, 1).unwrap();

            let device = classify_clip(&classifier, clip, keys, Some(FACE), 1).unwrap();
            assert_eq!(device.input_sha256, meta.input_sha256, "{arch} {}: classify-clip computed another input", meta.id);
            assert_eq!(device.result.logits, host.logits, "{arch} {}", meta.id);
            assert_eq!(device.face, [FACE.x, FACE.y, FACE.width, FACE.height]);

            let live = pipeline_probabilities(load(), clip);
            assert_eq!(live, host.probabilities[0], "{arch} {}: the live pipeline computed another input", meta.id);
        }
    }
}
