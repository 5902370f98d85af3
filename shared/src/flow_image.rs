//! Three-plane flow images as the composite (MEGC 2019) set publishes them: onset→apex
//! horizontal flow u, vertical flow v and optical strain, 28×28, each plane min-max scaled per
//! image. Planes are held as (u, v, strain) in [0, 1] (the PNG bytes / 255).
//!
//! HTNet does not read the whole image: it tiles four 14×14 regions around facial landmarks
//! into a new 28×28 mosaic, in the plane order and 0…255 scale of the official loader (OpenCV
//! reads the PNG as BGR: strain, v, u). [`htnet_mosaic`] reproduces the official indexing
//! exactly, including its transposed crop centres (../shared/reference/HTNet.md §3).

/// Side of a composite flow image.
pub const SIDE: usize = 28;
const HALF: usize = 7;

/// The official code's landmarks (x, y) when MTCNN finds no face: left eye, right eye, nose, left
/// and right mouth corner. Without the apex face images of the composite release, every sample
/// uses them (a documented departure: the official code detects landmarks per sample).
pub const HTNET_FALLBACK_LANDMARKS: [(f32, f32); 5] =
    [(9.528073, 11.062551), (21.396168, 10.919773), (15.380184, 17.380562), (10.255435, 22.121233), (20.583706, 22.25584)];

/// HTNet's input for one (u, v, strain) image of 3·28·28 values in [0, 1]: the 2×2 mosaic of the
/// regions of landmarks 0, 1 (top row) and 3, 4 (bottom row), planes (strain, v, u), 0…255.
pub fn htnet_mosaic(uvs: &[f32], landmarks: &[(f32, f32); 5]) -> Vec<f32> {
    assert_eq!(uvs.len(), 3 * SIDE * SIDE, "a composite flow image is 3×28×28");
    // Clamped to [7, 21] and truncated, as the official code does; x picks rows, y columns.
    let centre = |(x, y): (f32, f32)| (x.clamp(7.0, 21.0) as usize, y.clamp(7.0, 21.0) as usize);
    let quadrants = [(0, 0, 0), (1, 0, HALF * 2), (3, HALF * 2, 0), (4, HALF * 2, HALF * 2)];
    let mut out = vec![0f32; 3 * SIDE * SIDE];
    for (plane_out, plane_in) in [2usize, 1, 0].into_iter().enumerate() {
        let source = &uvs[plane_in * SIDE * SIDE..(plane_in + 1) * SIDE * SIDE];
        let target = &mut out[plane_out * SIDE * SIDE..(plane_out + 1) * SIDE * SIDE];
        for &(landmark, top, left) in &quadrants {
            let (row0, col0) = centre(landmarks[landmark]);
            for r in 0..2 * HALF {
                for c in 0..2 * HALF {
                    target[(top + r) * SIDE + left + c] = 255.0 * source[(row0 - HALF + r) * SIDE + col0 - HALF + c];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mosaic_follows_the_official_indexing() {
        // Each value encodes its plane, row and column.
        let uvs: Vec<f32> = (0..3 * SIDE * SIDE).map(|i| i as f32 / 255.0).collect();
        let at = |plane: usize, row: usize, col: usize| (plane * SIDE * SIDE + row * SIDE + col) as f32;
        let m = htnet_mosaic(&uvs, &HTNET_FALLBACK_LANDMARKS);
        let got = |plane: usize, row: usize, col: usize| m[plane * SIDE * SIDE + row * SIDE + col];
        // Landmark 0 (9.5, 11.1) → centre (9, 11): rows 2…15, columns 4…17, top-left quadrant.
        assert!((got(0, 0, 0) - at(2, 2, 4)).abs() < 1e-3, "plane 0 is strain");
        assert!((got(2, 13, 13) - at(0, 15, 17)).abs() < 1e-3, "plane 2 is u");
        // Landmark 1 (21.4, 10.9) → (21, 10): top-right quadrant starts at row 14, column 3.
        assert!((got(1, 0, 14) - at(1, 14, 3)).abs() < 1e-3);
        // Landmark 3 (10.3, 22.1) → (10, 21): bottom-left starts at row 3, column 14.
        assert!((got(0, 14, 0) - at(2, 3, 14)).abs() < 1e-3);
        // Landmark 4 (20.6, 22.3) → (20, 21): bottom-right starts at row 13, column 14.
        assert!((got(1, 27, 27) - at(1, 26, 27)).abs() < 1e-3);
        // Out-of-range landmarks are clamped to keep every crop inside the image.
        let edge = htnet_mosaic(&uvs, &[(0.0, 0.0), (30.0, 30.0), (0.0, 0.0), (0.0, 30.0), (30.0, 0.0)]);
        assert!((edge[0] - at(2, 0, 0)).abs() < 1e-3);
        assert!((edge[SIDE - 1] - at(2, 14, 27)).abs() < 1e-3, "landmark 1 → (21, 21)");
        assert!((edge[SIDE * SIDE - 1] - at(2, 27, 13)).abs() < 1e-3, "landmark 4 → (21, 7)");
    }
}
