//! What one spotted window costs the device, part by part, on one thread: the face crop of
//! every arriving frame (`face_crop`; three of them are the window's key frames), the TV-L1
//! flows, the input layout (`input_from_flows`: strain, grid blocks, resizing, normalisation)
//! and inference in tract with the shipped model of that layout. Frames are a 640×480 synthetic
//! interview with a face box of the size the detector gives there; every figure is the median
//! over the windows.
//!
//!     cargo run --release -p mer-shared --example model_input_cost [-- WINDOWS]

use std::path::Path;
use std::time::Instant;

use mer_shared::classifier::{Classifier, Trust};
use mer_shared::face::FaceBox;
use mer_shared::flow::tvl1_flow;
use mer_shared::input::{InputLayout, face_crop, input_from_flows};
use mer_shared::synth::interview::{InterviewOptions, interview_scene};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `f` and adds its milliseconds to `times`.
fn timed<T>(times: &mut Vec<f64>, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    times.push(started.elapsed().as_secs_f64() * 1e3);
    out
}

fn main() {
    let windows: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let scene = interview_scene(&InterviewOptions { seconds: 20.0, fps: 100.0, width: 640, height: 480, seed: 1 }).unwrap();
    let (cx, cy, rx, ry) = scene.face;
    let face = FaceBox {
        x: (cx - 1.1 * rx) as usize,
        y: (cy - 1.2 * ry) as usize,
        width: (2.2 * rx) as usize,
        height: (2.4 * ry) as usize,
        score: 0.0,
    };
    let events: Vec<(usize, usize, usize)> = scene.events.iter().map(|e| (e.onset, e.apex, e.offset)).collect();
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    println!("{windows} windows per layout, face box {face}, 1 thread; milliseconds, medians");
    println!(
        "{:<15} {:>14} {:>16} {:>16} {:>8} {:>10} {:>7}  model",
        "layout", "crop per frame", "onset→apex flow", "apex→offset flow", "layout", "inference", "total"
    );
    for (layout, model) in [
        (InputLayout::SkdTstsan38, Some("skd-tstsan-synthetic.merb")),
        (InputLayout::FlowStrain28, Some("flow-ensemble-casme2.merb")),
        (InputLayout::HtnetMosaic28, None),
    ] {
        let spec = layout.spec();
        let classifier = model.map(|m| Classifier::load(&models.join(m), Trust::IntegrityOnly).unwrap().with_threads(1));
        let [mut crop, mut flow1, mut flow2, mut assemble, mut infer, mut total]: [Vec<f64>; 6] = Default::default();
        for w in 0..windows {
            let (onset, apex, offset) = events[w % events.len()];
            let frames: Vec<_> = [onset, apex, offset].into_iter().map(|t| scene.render(t).quantized_u8()).collect();
            let started = Instant::now();
            let mut crop_ms = Vec::new();
            let faces: Vec<_> = frames.iter().map(|f| timed(&mut crop_ms, || face_crop(&spec, f, Some(&face)).unwrap())).collect();
            let onset_apex = timed(&mut flow1, || tvl1_flow(&faces[0], &faces[1], &spec.tvl1, 1).unwrap());
            let apex_offset = layout.uses_offset().then(|| timed(&mut flow2, || tvl1_flow(&faces[1], &faces[2], &spec.tvl1, 1).unwrap()));
            let input = timed(&mut assemble, || input_from_flows(&spec, &faces[0], &faces[1], &onset_apex, apex_offset.as_ref()).unwrap());
            if let Some(c) = &classifier {
                std::hint::black_box(timed(&mut infer, || c.classify(&input.data, 1).unwrap()));
            }
            // The window's own work: its three crops were paid as the frames arrived.
            let crops: f64 = crop_ms.iter().sum();
            total.push(started.elapsed().as_secs_f64() * 1e3 - crops);
            crop.extend(crop_ms);
        }
        let or_dash = |v: Vec<f64>| if v.is_empty() { "–".to_string() } else { format!("{:.1}", median(v)) };
        println!(
            "{:<15} {:>14.3} {:>16.1} {:>16} {:>8.1} {:>10} {:>7.1}  {}",
            layout.name(),
            median(crop),
            median(flow1),
            or_dash(flow2),
            median(assemble),
            or_dash(infer),
            median(total),
            model.unwrap_or("(none shipped: flows and layout only)")
        );
    }
}
