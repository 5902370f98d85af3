//! Scores spotting settings on interview clips quickly: each clip's face crops (face found by
//! the detector on the first frame) are loaded once, then every settings line given is run
//! over all clips. For choosing settings; `mer spot-eval` gives the figures.
//!
//! cargo run --release -p mer-device --example spot_tune -- CLIPS_DIR '{"threshold_z": 6}' '{"feature": "lbp"}'

use std::path::{Path, PathBuf};

use mer_device::spotting::SPOTTING_SIDE;
use mer_device::spotting::{SpotScore, Spotter, SpotterConfig, score};
use mer_shared::GrayImage;
use mer_shared::face::FaceDetector;
use mer_shared::image::{Interpolation, load_gray, resize};

struct Clip {
    name: String,
    fps: f32,
    crops: Vec<GrayImage>,
    truth: Vec<(usize, usize)>,
    blinks: Vec<(usize, usize)>,
}

fn load_clip(dir: &Path) -> Clip {
    let truth: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    let frames = truth["frames"].as_u64().unwrap() as usize;
    let fps = truth["fps"].as_f64().unwrap() as f32;
    let events = truth["events"].as_array().unwrap();
    let first = load_gray(&dir.join("frames/000000.jpg")).unwrap();
    let fb: Vec<usize> = truth["face_box"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let face = FaceDetector::new().unwrap().largest(&first).unwrap_or_else(|| {
        eprintln!("no face found in {}; the true box is used", dir.display());
        mer_shared::face::FaceBox { x: fb[0], y: fb[1], width: fb[2], height: fb[3], score: 0.0 }
    });
    if std::env::var("BOXES").is_ok() {
        // Where the photo's eyes (26 % of its height) fall in the detected box.
        let eyes = fb[1] as f32 + 0.26 * fb[3] as f32;
        eprintln!(
            "{}: detected {face:?}, photo {fb:?}, eyes at {:.2} of the box",
            dir.display(),
            (eyes - face.y as f32) / face.height as f32
        );
    }
    let crops = (0..frames)
        .map(|t| {
            let img = load_gray(&dir.join(format!("frames/{t:06}.jpg"))).unwrap();
            resize(&img.crop(face.x, face.y, face.width, face.height).unwrap(), SPOTTING_SIDE, SPOTTING_SIDE, Interpolation::Area)
        })
        .collect();
    Clip {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        fps,
        crops,
        blinks: truth["blinks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let s = b["start_frame"].as_u64().unwrap() as usize;
                (s, s + b["frames"].as_u64().unwrap() as usize)
            })
            .collect(),
        truth: events.iter().map(|e| (e["onset"].as_u64().unwrap() as usize, e["offset"].as_u64().unwrap() as usize)).collect(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = PathBuf::from(&args[0]);
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("truth.json").is_file()).collect();
    dirs.sort();
    let clips: Vec<Clip> = std::thread::scope(|s| {
        let chunks: Vec<Vec<PathBuf>> = dirs.chunks(dirs.len().div_ceil(2).max(1)).map(|c| c.to_vec()).collect();
        let handles: Vec<_> = chunks.into_iter().map(|c| s.spawn(move || c.iter().map(|d| load_clip(d)).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    eprintln!("{} clips loaded", clips.len());
    let verbose = std::env::var("VERBOSE").is_ok();
    for settings in &args[1..] {
        let mut scores = Vec::new();
        let (mut spent, mut frames) = (std::time::Duration::ZERO, 0usize);
        let mut fp_blinks = 0;
        let mut touched = 0;
        for clip in &clips {
            let mut value: serde_json::Value = serde_json::to_value(SpotterConfig::for_fps(clip.fps)).unwrap();
            for (k, v) in serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(settings).unwrap() {
                value[k] = v;
            }
            let config = SpotterConfig { fps: clip.fps, ..serde_json::from_value(value).unwrap() };
            let mut spotter = Spotter::new(config).unwrap();
            let mut decisions = Vec::new();
            let started = std::time::Instant::now();
            let spots: Vec<(usize, usize)> = clip
                .crops
                .iter()
                .filter_map(|c| {
                    let spot = spotter.push(c);
                    decisions.extend(spotter.last_decision());
                    spot
                })
                .map(|s| (s.onset, s.offset))
                .collect();
            spent += started.elapsed();
            frames += clip.crops.len();
            if std::env::var("DUMP").is_ok_and(|d| d == clip.name) {
                for d in &decisions {
                    println!("{} {} {}", d.frame, d.contrast, d.threshold);
                }
            }
            let s = score(&spots, &clip.truth);
            let overlaps = |a: (usize, usize), b: &(usize, usize)| a.0 <= b.1 && b.0 <= a.1;
            touched += clip.truth.iter().filter(|t| spots.iter().any(|s| overlaps(*s, t))).count();
            fp_blinks += spots
                .iter()
                .filter(|s| !clip.truth.iter().any(|t| overlaps(**s, t)) && clip.blinks.iter().any(|b| overlaps(**s, b)))
                .count();
            if verbose {
                eprintln!("  {}: {s:?}\n    spots {spots:?}\n    truth {:?}", clip.name, clip.truth);
            }
            scores.push(s);
        }
        let p = SpotScore::pooled(&scores);
        println!(
            "{settings}: TP {} FP {} (at blinks {fp_blinks}) FN {} (touched {touched}) P {:.3} R {:.3} F1 {:.3}; {:.3} ms per frame",
            p.true_positives,
            p.false_positives,
            p.false_negatives,
            p.precision,
            p.recall,
            p.f1,
            spent.as_secs_f64() * 1e3 / frames.max(1) as f64
        );
    }
}
