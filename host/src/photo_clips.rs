//! `mer synth faces`: a set of interview clips made from real face photographs, one clip per
//! photo, people spread as evenly as the photos allow (see `mer_shared::synth::photo` for what a
//! clip holds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mer_shared::image::load_gray;
use mer_shared::synth::photo::{PhotoClipOptions, PhotoClipTruth, write_photo_clip};
use rayon::prelude::*;

/// Image files in `dir`, grouped by person: the part of the file name before the first '_'
/// ("sub05_EP02_07.jpg" → "sub05"), or the whole stem.
fn photos_by_person(dir: &Path) -> Result<BTreeMap<String, Vec<PathBuf>>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot read the photo folder {}", dir.display()))?;
    let mut people: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in entries {
        let path = entry?.path();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if !matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png" | "bmp")) {
            continue;
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let person = stem.split('_').next().unwrap_or(&stem).to_string();
        people.entry(person).or_default().push(path);
    }
    people.values_mut().for_each(|v| v.sort());
    Ok(people)
}

/// `count` photos taken in turn from each person (first photo of everyone, then second, …).
fn choose(people: &BTreeMap<String, Vec<PathBuf>>, count: usize) -> Vec<PathBuf> {
    let rounds = people.values().map(Vec::len).max().unwrap_or(0);
    (0..rounds).flat_map(|r| people.values().filter_map(move |photos| photos.get(r).cloned())).take(count).collect()
}

#[derive(Debug)]
pub struct PhotoClipSet {
    pub clips: Vec<PhotoClipTruth>,
    pub people: usize,
}

/// Writes `count` clips made from the photos in `photos` into `out` (a new or empty folder), one
/// sub-folder per clip named after its photo; clip i is drawn with seed `seed · 1000 + i`.
pub fn write_photo_clips(
    photos: &Path,
    out: &Path,
    count: usize,
    opts: &PhotoClipOptions,
    progress: &(dyn Fn() + Sync),
) -> Result<PhotoClipSet> {
    if count == 0 {
        bail!("--clips must be at least 1");
    }
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty; choose a new folder", out.display());
    }
    let people = photos_by_person(photos)?;
    let chosen = choose(&people, count);
    if chosen.len() < count {
        bail!("{} holds {} photos (.jpg, .png, .bmp); {count} clips need as many", photos.display(), chosen.len());
    }
    // Every photo is read before anything is written.
    let loaded: Vec<_> = chosen
        .iter()
        .map(|p| Ok((p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string(), load_gray(p)?)))
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let clips = loaded
        .par_iter()
        .enumerate()
        .map(|(i, (name, photo))| {
            let stem = Path::new(name).file_stem().and_then(|s| s.to_str()).unwrap_or("clip");
            let partial = out.join(format!("{stem}.partial"));
            let clip_opts = PhotoClipOptions { seed: opts.seed * 1000 + i as u64, ..opts.clone() };
            let truth = write_photo_clip(&partial, photo, name, &clip_opts, progress)?;
            std::fs::rename(&partial, out.join(stem)).with_context(|| format!("cannot rename {}", partial.display()))?;
            Ok(truth)
        })
        .collect::<Result<Vec<_>>>()?;
    let people = chosen.iter().filter_map(|p| p.file_name()?.to_str()?.split('_').next()).collect::<std::collections::BTreeSet<_>>().len();
    Ok(PhotoClipSet { clips, people })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_are_taken_from_every_person_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a_1.jpg", "a_2.jpg", "a_3.jpg", "b_1.jpg", "c_1.png", "notes.txt"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let people = photos_by_person(dir.path()).unwrap();
        assert_eq!(people.len(), 3);
        let names: Vec<String> = choose(&people, 4).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["a_1.jpg", "b_1.jpg", "c_1.png", "a_2.jpg"]);
    }

    #[test]
    fn clips_are_written_and_a_used_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let photos = dir.path().join("photos");
        std::fs::create_dir(&photos).unwrap();
        let face = mer_shared::image::GrayImage::from_fn(48, 48, |x, y| ((x * 7 + y * 3) % 50) as f32 / 60.0 + 0.1);
        for name in ["p1_a.png", "p2_a.png"] {
            mer_shared::image::save_gray_png(&face, &photos.join(name)).unwrap();
        }
        let out = dir.path().join("clips");
        let opts = PhotoClipOptions { seconds: 1.0, fps: 20.0, width: 160, height: 160, seed: 2 };
        let set = write_photo_clips(&photos, &out, 2, &opts, &|| {}).unwrap();
        assert_eq!((set.clips.len(), set.people), (2, 2));
        assert!(out.join("p1_a/truth.json").is_file() && out.join("p2_a/frames/000019.jpg").is_file());
        let err = write_photo_clips(&photos, &out, 1, &opts, &|| {}).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        let err = write_photo_clips(&photos, &dir.path().join("more"), 3, &opts, &|| {}).unwrap_err().to_string();
        assert!(err.contains("holds 2 photos"), "{err}");
        assert!(!dir.path().join("more").exists(), "nothing is created before the photos are checked");
    }
}
