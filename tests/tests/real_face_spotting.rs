//! The device's spotting on clips made from real face photographs (`../shared/data/faces-casme2`):
//! frames rendered in memory by `mer_shared::synth::photo` (expressions of 1–2 px, blinks, head
//! drift, changing light, noise) go through `SpotStream` — the face tracking and spotter of
//! `merd run` — with the face detected, and the spots are scored by the MEGC criterion.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mer_device::face::{FaceSetting, TrackerSettings};
use mer_device::source::Frame;
use mer_device::spot_stream::SpotStream;
use mer_device::spotting::{SpotScore, SpotterConfig, score};
use mer_shared::image::load_gray;
use mer_shared::synth::photo::{PhotoClipOptions, PhotoScene};

/// The third photo of each person who has one: the spotter's settings were chosen on clips of
/// the first photos, so these faces were not looked at.
fn held_out_photos() -> Option<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/faces-casme2");
    if !dir.is_dir() {
        assert!(std::env::var("MER_REQUIRE_REFERENCE").as_deref() != Ok("1"), "{} is missing (MER_REQUIRE_REFERENCE=1)", dir.display());
        eprintln!("SKIPPED: {} is missing", dir.display());
        return None;
    }
    let mut people: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        people.entry(name.split('_').next().unwrap().to_string()).or_default().push(path);
    }
    Some(
        people
            .into_values()
            .filter_map(|mut photos| {
                photos.sort();
                photos.get(2).cloned()
            })
            .collect(),
    )
}

fn spot_clip(photo: &Path, seed: u64) -> SpotScore {
    let opts = PhotoClipOptions { seconds: 10.0, fps: 100.0, width: 640, height: 480, seed };
    let scene = PhotoScene::new(&load_gray(photo).unwrap(), &opts).unwrap();
    let face = FaceSetting::Detect { tracker: TrackerSettings::default(), in_line: true };
    let mut stream = SpotStream::new(opts.fps, &face, &SpotterConfig::default()).unwrap();
    let mut frame_of_seq = Vec::new();
    let mut spots = Vec::new();
    for t in 0..scene.frames {
        let frame = Frame { index: t as u64, timestamp: t as f64 / opts.fps as f64, image: scene.render(t) };
        let seen = stream.push(&frame).unwrap();
        if seen.seq.is_some() {
            frame_of_seq.push(t);
        }
        if let Some(s) = seen.spot {
            spots.push((frame_of_seq[s.onset], frame_of_seq[s.offset]));
        }
    }
    let truth: Vec<(usize, usize)> = scene.events.iter().map(|e| (e.onset, e.offset)).collect();
    let s = score(&spots, &truth);
    eprintln!("{}: spots {spots:?}, truth {truth:?}: {s:?}", photo.display());
    s
}

#[test]
fn spotting_holds_on_real_faces_it_was_not_tuned_on() {
    let Some(photos) = held_out_photos() else { return };
    let scores: Vec<SpotScore> = photos.iter().take(8).enumerate().map(|(i, p)| spot_clip(p, 5000 + i as u64)).collect();
    assert!(scores.len() >= 8, "only {} people with a third photo", scores.len());
    let pooled = SpotScore::pooled(&scores);
    eprintln!("pooled over {} clips: {pooled:?}", scores.len());
    assert!(pooled.f1 >= 0.6 && pooled.precision >= 0.6 && pooled.recall >= 0.5, "{pooled:?}");
}
