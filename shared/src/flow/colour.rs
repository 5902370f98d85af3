//! The Middlebury colour-wheel coding of flow: hue is direction, saturation is magnitude
//! relative to the largest motion (or a given scale).

use std::path::Path;

use super::Flow;
use crate::error::Result;

/// Colour stops of the wheel: red → yellow → green → cyan → blue → magenta → red, with the
/// segment lengths of the Middlebury code (15, 6, 4, 11, 13, 6) so hues are perceptually spread.
fn wheel() -> Vec<[f32; 3]> {
    let segments: [(usize, [f32; 3], [f32; 3]); 6] = [
        (15, [255.0, 0.0, 0.0], [255.0, 255.0, 0.0]),
        (6, [255.0, 255.0, 0.0], [0.0, 255.0, 0.0]),
        (4, [0.0, 255.0, 0.0], [0.0, 255.0, 255.0]),
        (11, [0.0, 255.0, 255.0], [0.0, 0.0, 255.0]),
        (13, [0.0, 0.0, 255.0], [255.0, 0.0, 255.0]),
        (6, [255.0, 0.0, 255.0], [255.0, 0.0, 0.0]),
    ];
    let mut colours = Vec::new();
    for (n, from, to) in segments {
        for i in 0..n {
            let t = i as f32 / n as f32;
            colours.push([0, 1, 2].map(|c| from[c] + (to[c] - from[c]) * t));
        }
    }
    colours
}

/// Interleaved RGB bytes; `max_magnitude` None normalises by the largest motion in the field.
pub fn colour_wheel_rgb(flow: &Flow, max_magnitude: Option<f32>) -> Vec<u8> {
    let wheel = wheel();
    let n = wheel.len() as f32;
    let largest = flow.u().iter().zip(flow.v()).map(|(u, v)| (u * u + v * v).sqrt()).fold(0f32, f32::max);
    let scale = max_magnitude.unwrap_or(largest).max(1e-6);
    let mut rgb = Vec::with_capacity(flow.u().len() * 3);
    for (&u, &v) in flow.u().iter().zip(flow.v()) {
        let (u, v) = (u / scale, v / scale);
        let radius = (u * u + v * v).sqrt();
        let angle = (-v).atan2(-u) / std::f32::consts::PI; // in [-1, 1]
        let pos = (angle + 1.0) / 2.0 * (n - 1.0);
        let k0 = pos.floor() as usize % wheel.len();
        let k1 = (k0 + 1) % wheel.len();
        let f = pos - pos.floor();
        for (from, to) in wheel[k0].iter().zip(&wheel[k1]) {
            let col = ((1.0 - f) * from + f * to) / 255.0;
            // Inside the unit circle fade towards white; beyond it, darken.
            let col = if radius <= 1.0 { 1.0 - radius * (1.0 - col) } else { col * 0.75 };
            rgb.push((255.0 * col).round().clamp(0.0, 255.0) as u8);
        }
    }
    rgb
}

pub fn save_colour_png(flow: &Flow, max_magnitude: Option<f32>, path: &Path) -> Result<()> {
    crate::image::save_rgb_png(flow.width(), flow.height(), colour_wheel_rgb(flow, max_magnitude), path)
}

/// The PNG bytes [`save_colour_png`] writes, for callers that write several files together;
/// `path` only names errors.
pub fn colour_png(flow: &Flow, max_magnitude: Option<f32>, path: &Path) -> Result<Vec<u8>> {
    crate::image::encode_rgb_png(flow.width(), flow.height(), colour_wheel_rgb(flow, max_magnitude), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_flow_is_white_and_directions_differ() {
        let still = colour_wheel_rgb(&Flow::zeros(2, 1), None);
        assert!(still.iter().all(|&c| c == 255));
        let f = Flow::new(4, 1, vec![1.0, -1.0, 0.0, 0.0], vec![0.0, 0.0, 1.0, -1.0]).unwrap();
        let rgb = colour_wheel_rgb(&f, None);
        let px: Vec<&[u8]> = rgb.chunks(3).collect();
        for i in 0..4 {
            for j in i + 1..4 {
                assert_ne!(px[i], px[j], "directions {i} and {j} share a colour");
            }
        }
    }
}
