//! The main job until the device pipeline exists: synthetic micro-expressions → key frames
//! read back from disk → TV-L1 flows → pictures a person can check, plus accuracy figures.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mer_shared::flow::{colour_wheel_rgb, optical_strain, tvl1_flow};
use mer_shared::frames::FrameFolder;
use mer_shared::image::{Interpolation, load_gray, resize, save_gray_png, save_rgb_png};
use mer_shared::input::{InputSpec, KeyFrames, model_input};
use mer_shared::synth::casme2::{Casme2Options, sample_scene, write_casme2};
use mer_shared::{Flow, GrayImage};
use serde::Serialize;

use crate::progress::bar;

#[derive(Debug, Serialize)]
pub struct DemoSample {
    pub id: String,
    pub emotion: String,
    pub action_units: Vec<u8>,
    /// Largest true onset→apex motion on the 128×128 face crop, pixels.
    pub true_peak_px: f32,
    /// Mean end-point error of TV-L1 against the true flow (8-px border excluded), pixels.
    pub tvl1_epe_px: f32,
    pub picture: PathBuf,
}

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub dataset: PathBuf,
    pub samples: Vec<DemoSample>,
    pub input_picture: PathBuf,
}

pub fn run_demo(out: &Path, seed: u64) -> Result<DemoReport> {
    let opts = Casme2Options { subjects: 3, per_subject: 2, seed, ..Casme2Options::default() };
    let dataset = out.join("casme2");
    let pb = bar((opts.subjects * opts.per_subject) as u64, "synthesising");
    let samples = write_casme2(&dataset, &opts, &|| pb.inc(1)).context("writing the synthetic dataset")?;
    pb.finish();
    let pictures = out.join("flows");
    std::fs::create_dir_all(&pictures).with_context(|| format!("creating {}", pictures.display()))?;
    let spec = InputSpec::skd_tstsan();
    let face = spec.face_size;
    let pb = bar(samples.len() as u64, "TV-L1 flow");
    let mut report = Vec::new();
    for (n, sample) in samples.iter().enumerate() {
        let s: usize = sample.subject.parse()?;
        let k = n % opts.per_subject;
        let (scene, _) = sample_scene(&opts, s, k);
        let read = |frame| -> Result<GrayImage> {
            let img = load_gray(&sample.frame_path(&dataset, frame))?;
            Ok(resize(&img, face, face, Interpolation::Bilinear))
        };
        let (onset, apex) = (read(sample.onset_frame)?, read(sample.apex_frame)?);
        let estimated = tvl1_flow(&onset.quantized_u8(), &apex.quantized_u8(), &spec.tvl1, 1)?;
        let truth = rescale_flow(&scene.true_flow(0, sample.apex_frame - sample.onset_frame), face, face);
        let epe = estimated.mean_endpoint_error(&truth, 8)?;
        let peak = truth.u().iter().zip(truth.v()).map(|(u, v)| (u * u + v * v).sqrt()).fold(0f32, f32::max);
        let id = format!("sub{}_{}", sample.subject, sample.filename);
        let picture = pictures.join(format!("{id}.png"));
        save_strip(&onset, &apex, &truth, &estimated, peak, &picture)?;
        report.push(DemoSample {
            id,
            emotion: sample.emotion.name().to_string(),
            action_units: sample.action_units.clone(),
            true_peak_px: peak,
            tvl1_epe_px: epe,
            picture,
        });
        pb.inc(1);
    }
    pb.finish();
    // The full model input of the first sample, all 38 channels.
    let first = &samples[0];
    let folder = FrameFolder::open(first.frame_path(&dataset, first.onset_frame).parent().expect("frames lie in a clip folder"))?;
    let keys = KeyFrames::new(first.onset_frame as i64, first.apex_frame as i64, first.offset_frame as i64)?;
    let input = model_input(&spec, &folder, None, keys, 1)?;
    let input_picture = out.join("input_channels.png");
    save_contact_sheet(&input.data, input.channels, input.width, 8, &input_picture)?;
    let report = DemoReport { dataset, samples: report, input_picture };
    let json = out.join("demo.json");
    crate::train::checkpoint::write_json_atomic(&json, &report)?;
    Ok(report)
}

/// Resamples a flow field to w×h, scaling the vectors with the image.
fn rescale_flow(f: &Flow, w: usize, h: usize) -> Flow {
    let (sx, sy) = (w as f32 / f.width() as f32, h as f32 / f.height() as f32);
    let u = resize(&f.u_image(), w, h, Interpolation::Bilinear).data().iter().map(|v| v * sx).collect();
    let v = resize(&f.v_image(), w, h, Interpolation::Bilinear).data().iter().map(|v| v * sy).collect();
    Flow::new(w, h, u, v).expect("consistent size")
}

/// onset | apex | 10×|apex − onset| | true flow | TV-L1 flow | TV-L1 strain, side by side.
fn save_strip(onset: &GrayImage, apex: &GrayImage, truth: &Flow, est: &Flow, scale: f32, path: &Path) -> Result<()> {
    let (w, h) = (onset.width(), onset.height());
    let diff = GrayImage::new(w, h, onset.data().iter().zip(apex.data()).map(|(a, b)| 10.0 * (b - a).abs()).collect())?;
    let strain = optical_strain(est).min_max_normalized();
    let gray = |g: &GrayImage| g.to_u8().into_iter().flat_map(|v| [v, v, v]).collect::<Vec<u8>>();
    let panels =
        [gray(onset), gray(apex), gray(&diff), colour_wheel_rgb(truth, Some(scale)), colour_wheel_rgb(est, Some(scale)), gray(&strain)];
    let gap = 4;
    let total_w = panels.len() * w + (panels.len() - 1) * gap;
    let mut rgb = vec![255u8; total_w * h * 3];
    for (p, panel) in panels.iter().enumerate() {
        for y in 0..h {
            let dst = (y * total_w + p * (w + gap)) * 3;
            rgb[dst..dst + w * 3].copy_from_slice(&panel[y * w * 3..(y + 1) * w * 3]);
        }
    }
    save_rgb_png(total_w, h, rgb, path)?;
    Ok(())
}

/// Tiles `channels` square maps of side `side` into a grid `cols` wide.
fn save_contact_sheet(data: &[f32], channels: usize, side: usize, cols: usize, path: &Path) -> Result<()> {
    let rows = channels.div_ceil(cols);
    let cell = side + 2;
    let (w, h) = (cols * cell, rows * cell);
    let mut sheet = vec![1.0f32; w * h];
    for c in 0..channels {
        let (ox, oy) = ((c % cols) * cell + 1, (c / cols) * cell + 1);
        for y in 0..side {
            for x in 0..side {
                sheet[(oy + y) * w + ox + x] = data[c * side * side + y * side + x];
            }
        }
    }
    save_gray_png(&GrayImage::new(w, h, sheet)?, path)?;
    Ok(())
}
