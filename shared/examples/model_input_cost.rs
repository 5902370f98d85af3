//! What the one preprocessing function costs per window, as the device pays it: the face crop
//! of every arriving frame (`face_crop`) and, per spotted window, flows and layout
//! (`input_from_faces`), for each input layout. Frames are a 640×480 synthetic interview with a
//! face box of the size the detector gives there.
//!
//!     cargo run --release -p mer-shared --example model_input_cost [-- WINDOWS]

use std::time::Instant;

use mer_shared::face::FaceBox;
use mer_shared::input::{InputLayout, face_crop, input_from_faces};
use mer_shared::synth::interview::{InterviewOptions, interview_scene};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
    println!("{windows} windows per layout, face box {face}, 1 thread");
    for layout in [InputLayout::SkdTstsan38, InputLayout::FlowStrain28, InputLayout::HtnetMosaic28] {
        let spec = layout.spec();
        let (mut crop_ms, mut window_ms) = (Vec::new(), Vec::new());
        for w in 0..windows {
            let (onset, apex, offset) = events[w % events.len()];
            let mut faces = Vec::new();
            for t in [onset, apex, offset] {
                let frame = scene.render(t).quantized_u8();
                let started = Instant::now();
                faces.push(face_crop(&spec, &frame, Some(&face)).unwrap());
                crop_ms.push(started.elapsed().as_secs_f64() * 1e3);
            }
            let started = Instant::now();
            let input = input_from_faces(&spec, &faces[0], &faces[1], Some(&faces[2]), 1).unwrap();
            window_ms.push(started.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(input);
        }
        println!(
            "{:<15} face_crop {:.3} ms per frame, input_from_faces {:.1} ms per window (medians)",
            layout.name(),
            median(crop_ms),
            median(window_ms)
        );
    }
}
