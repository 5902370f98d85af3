//! Raw Bayer frames to gray, for CSI sensors (IMX219, IMX477, …) read through V4L2 with the
//! ISP bypassed.
//!
//! Method: each 2×2 cell of the mosaic (one red, two green and one blue sample) becomes one
//! gray pixel, Y = 0.299 R + 0.587 (G₁ + G₂)/2 + 0.114 B (the BT.601 weights the rest of the
//! product uses), so the frame comes out at half the sensor mode's width and height. No
//! interpolation is involved, so no demosaicing pattern can move with the face, and the four
//! samples averaged lower the sensor noise; a face that spans 256 sensor pixels still fills the
//! 128-pixel crops the spotter and the models use.
//!
//! Samples of 8 bits are one byte each; of 10 and 12 bits one little-endian 16-bit word each,
//! with the value in the low bits (V4L2's `RG10`, `RG12`, …). Some capture units (the Jetson
//! VI among them, depending on the release) place it higher in the word: `raw_shift` moves it
//! down first. Values above the bit depth's maximum after the shift are clipped.

use std::fmt;
use std::str::FromStr;

use mer_shared::GrayImage;

/// Which colour the top-left sample of each 2×2 cell has, read row by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BayerOrder {
    Rggb,
    Bggr,
    Grbg,
    Gbrg,
}

impl BayerOrder {
    const ALL: [BayerOrder; 4] = [BayerOrder::Rggb, BayerOrder::Bggr, BayerOrder::Grbg, BayerOrder::Gbrg];

    /// Positions (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of the red and blue
    /// samples in a cell; the other two are green.
    fn red_blue(self) -> (usize, usize) {
        match self {
            BayerOrder::Rggb => (0, 3),
            BayerOrder::Bggr => (3, 0),
            BayerOrder::Grbg => (1, 2),
            BayerOrder::Gbrg => (2, 1),
        }
    }

    fn name(self) -> &'static str {
        match self {
            BayerOrder::Rggb => "rggb",
            BayerOrder::Bggr => "bggr",
            BayerOrder::Grbg => "grbg",
            BayerOrder::Gbrg => "gbrg",
        }
    }
}

/// A raw Bayer pixel format: the mosaic's order and the sample depth (8, 10 or 12 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BayerFormat {
    pub order: BayerOrder,
    pub bits: u8,
}

impl BayerFormat {
    /// The V4L2 four-character code.
    pub fn fourcc(self) -> [u8; 4] {
        use BayerOrder::*;
        match (self.order, self.bits) {
            (Rggb, 8) => *b"RGGB",
            (Bggr, 8) => *b"BA81",
            (Grbg, 8) => *b"GRBG",
            (Gbrg, 8) => *b"GBRG",
            (Rggb, 10) => *b"RG10",
            (Bggr, 10) => *b"BG10",
            (Grbg, 10) => *b"BA10",
            (Gbrg, 10) => *b"GB10",
            (Rggb, _) => *b"RG12",
            (Bggr, _) => *b"BG12",
            (Grbg, _) => *b"BA12",
            (Gbrg, _) => *b"GB12",
        }
    }

    pub fn bytes_per_sample(self) -> usize {
        if self.bits == 8 { 1 } else { 2 }
    }

    /// The configuration's names: `rggb8`, `bggr10`, `grbg12`, …
    pub fn names() -> impl Iterator<Item = String> {
        BayerOrder::ALL.into_iter().flat_map(|o| [8, 10, 12].map(|bits| BayerFormat { order: o, bits }.to_string()))
    }
}

impl fmt::Display for BayerFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.order.name(), self.bits)
    }
}

impl FromStr for BayerFormat {
    type Err = ();

    fn from_str(name: &str) -> Result<BayerFormat, ()> {
        let order = BayerOrder::ALL.into_iter().find(|o| name.starts_with(o.name())).ok_or(())?;
        let bits: u8 = name[4..].parse().map_err(|_| ())?;
        if ![8, 10, 12].contains(&bits) {
            return Err(());
        }
        Ok(BayerFormat { order, bits })
    }
}

/// One raw frame of `width`×`height` samples with rows `stride` bytes apart, to a gray image of
/// `width / 2`×`height / 2` (an odd last row or column is dropped).
pub fn bayer_to_gray(
    format: BayerFormat,
    width: usize,
    height: usize,
    stride: usize,
    raw_shift: u8,
    bytes: &[u8],
) -> Result<GrayImage, String> {
    let size = format.bytes_per_sample();
    let row = width * size;
    if width < 2 || height < 2 {
        return Err(format!("a {width}×{height} mosaic has no whole 2×2 cell"));
    }
    if stride < row {
        return Err(format!("row stride {stride} is shorter than {width} samples of {size} bytes"));
    }
    let needed = stride * (height - 1) + row;
    if bytes.len() < needed {
        return Err(format!("{} bytes, a {width}×{height} {format} frame needs {needed}", bytes.len()));
    }
    let max = ((1u32 << format.bits) - 1) as f32;
    let sample = |x: usize, y: usize| -> f32 {
        let at = y * stride + x * size;
        let raw = if size == 1 { u32::from(bytes[at]) } else { u32::from(u16::from_le_bytes([bytes[at], bytes[at + 1]])) };
        ((raw >> raw_shift) as f32).min(max)
    };
    let (red, blue) = format.order.red_blue();
    let (w, h) = (width / 2, height / 2);
    let mut out = Vec::with_capacity(w * h);
    for cy in 0..h {
        for cx in 0..w {
            let cell = [sample(2 * cx, 2 * cy), sample(2 * cx + 1, 2 * cy), sample(2 * cx, 2 * cy + 1), sample(2 * cx + 1, 2 * cy + 1)];
            let green = cell.iter().sum::<f32>() - cell[red] - cell[blue];
            out.push((0.299 * cell[red] + 0.587 * 0.5 * green + 0.114 * cell[blue]) / max);
        }
    }
    GrayImage::new(w, h, out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mosaic of `w`×`h` cells whose colour is `rgb(cx, cy)` (values in the format's range),
    /// laid out in `format` with `pad` bytes after each row and values shifted up by `shift`.
    fn mosaic(format: BayerFormat, w: usize, h: usize, pad: usize, shift: u8, rgb: impl Fn(usize, usize) -> [u32; 3]) -> (Vec<u8>, usize) {
        let size = format.bytes_per_sample();
        let stride = 2 * w * size + pad;
        let mut bytes = vec![0xEE; stride * 2 * h];
        let (red, blue) = format.order.red_blue();
        for cy in 0..h {
            for cx in 0..w {
                let [r, g, b] = rgb(cx, cy);
                for pos in 0..4 {
                    let value = (if pos == red {
                        r
                    } else if pos == blue {
                        b
                    } else {
                        g
                    }) << shift;
                    let (x, y) = (2 * cx + pos % 2, 2 * cy + pos / 2);
                    let at = y * stride + x * size;
                    if size == 1 {
                        bytes[at] = value as u8;
                    } else {
                        bytes[at..at + 2].copy_from_slice(&(value as u16).to_le_bytes());
                    }
                }
            }
        }
        (bytes, stride)
    }

    #[test]
    fn every_order_and_depth_gives_the_cell_luminance() {
        for name in BayerFormat::names() {
            let format: BayerFormat = name.parse().unwrap();
            assert_eq!(format.to_string(), name);
            let max = (1u32 << format.bits) - 1;
            // Red grows to the right, blue downwards, green is constant: a wrong order shows.
            let rgb = |cx: usize, cy: usize| [(cx as u32 * max) / 4, max / 3, (cy as u32 * max) / 2];
            let (bytes, stride) = mosaic(format, 5, 3, 6, 0, rgb);
            let gray = bayer_to_gray(format, 10, 6, stride, 0, &bytes).unwrap();
            assert_eq!((gray.width(), gray.height()), (5, 3), "{name}");
            for cy in 0..3 {
                for cx in 0..5 {
                    let [r, g, b] = rgb(cx, cy).map(|v| v as f32 / max as f32);
                    let expected = 0.299 * r + 0.587 * g + 0.114 * b;
                    assert!((gray.get(cx, cy) - expected).abs() < 1e-6, "{name} ({cx}, {cy}): {} vs {expected}", gray.get(cx, cy));
                }
            }
        }
    }

    #[test]
    fn values_placed_high_in_the_word_are_shifted_down_and_clipped() {
        let format = BayerFormat { order: BayerOrder::Rggb, bits: 10 };
        let (bytes, stride) = mosaic(format, 2, 2, 0, 4, |_, _| [1023, 512, 0]);
        let shifted = bayer_to_gray(format, 4, 4, stride, 4, &bytes).unwrap();
        let expected = 0.299 + 0.587 * 512.0 / 1023.0;
        assert!((shifted.get(1, 1) - expected).abs() < 1e-6);
        // Read without the shift, the values overflow ten bits and clip to white.
        let unshifted = bayer_to_gray(format, 4, 4, stride, 0, &bytes).unwrap();
        assert!((unshifted.get(0, 0) - (0.299 + 0.587)).abs() < 1e-6, "{}", unshifted.get(0, 0));
    }

    #[test]
    fn short_buffers_odd_sizes_and_unknown_names() {
        let format = BayerFormat { order: BayerOrder::Gbrg, bits: 12 };
        let (bytes, stride) = mosaic(format, 3, 2, 0, 0, |_, _| [100, 200, 300]);
        let err = bayer_to_gray(format, 6, 4, stride, 0, &bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.contains("gbrg12") && err.contains("needs"), "{err}");
        assert!(bayer_to_gray(format, 6, 4, 8, 0, &bytes).unwrap_err().contains("stride"));
        assert!(bayer_to_gray(format, 1, 4, stride, 0, &bytes).is_err());
        // An odd last column is dropped.
        assert_eq!(bayer_to_gray(format, 5, 4, stride, 0, &bytes).unwrap().width(), 2);
        for bad in ["rggb", "rggb16", "rgbg10", "RG10", ""] {
            assert!(bad.parse::<BayerFormat>().is_err(), "{bad}");
        }
        assert_eq!(BayerFormat::names().count(), 12);
        assert_eq!(&BayerFormat { order: BayerOrder::Bggr, bits: 8 }.fourcc(), b"BA81");
        assert_eq!(&BayerFormat { order: BayerOrder::Grbg, bits: 10 }.fourcc(), b"BA10");
    }
}
