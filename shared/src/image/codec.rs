//! Decoding JPEG/PNG/BMP (8 or 16 bit, gray or colour) to gray, and writing PNGs.

use std::path::Path;

use image::{DynamicImage, ImageReader};

use super::GrayImage;
use crate::atomic_file;
use crate::error::{Error, Result};

/// Loads an image file as gray in [0, 1]; colour is converted with OpenCV's BT.601 weights.
pub fn load_gray(path: &Path) -> Result<GrayImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_gray(&bytes, path)
}

/// Decodes encoded bytes; `path` is only used to name the source in errors.
pub fn decode_gray(bytes: &[u8], path: &Path) -> Result<GrayImage> {
    let fail = |reason: String| Error::Decode { path: path.to_path_buf(), reason };
    if bytes.is_empty() {
        return Err(fail("file is empty".into()));
    }
    let reader = ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| fail(e.to_string()))?;
    match reader.format() {
        None => return Err(fail("unrecognised file format".into())),
        // The JPEG decoder fills a cut-off scan with grey and reports nothing: refuse it here.
        Some(image::ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => {
            return Err(fail("the JPEG data is cut off (no end-of-image marker after its scan)".into()));
        }
        Some(_) => {}
    }
    let img = reader.decode().map_err(|e| fail(e.to_string()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data: Vec<f32> = match img {
        DynamicImage::ImageLuma8(g) => g.into_raw().into_iter().map(|v| v as f32 / 255.0).collect(),
        DynamicImage::ImageLuma16(g) => g.into_raw().into_iter().map(|v| v as f32 / 65535.0).collect(),
        DynamicImage::ImageLumaA8(_) | DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => {
            let rgb = img.to_rgb8();
            rgb.pixels().map(|p| gray_from_rgb8(p.0) as f32 / 255.0).collect()
        }
        other => {
            // 16-bit colour and float images: same weights in floating point.
            let rgb = other.to_rgb32f();
            rgb.pixels().map(|p| 0.299 * p.0[0] + 0.587 * p.0[1] + 0.114 * p.0[2]).collect()
        }
    };
    let img = GrayImage::new(w, h, data)?;
    img.check_finite(&path.display().to_string())?;
    Ok(img)
}

/// Whether a JPEG's segments are whole up to its first scan and an end-of-image marker follows
/// that scan. Segments are walked by their lengths, so the end marker of an embedded thumbnail
/// (inside APP1, before the scan) does not count; the scan's own data never holds 0xFF 0xD9
/// (0xFF is stuffed), so the first such pair after it is the image's end. Trailing padding
/// after the marker, as some cameras send, is allowed.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut at = 2; // past SOI
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return false;
        }
        let marker = bytes[at + 1];
        match marker {
            0xFF => at += 1, // fill byte before a marker
            0x01 | 0xD0..=0xD7 => at += 2,
            0xD9 => return false, // the image ends before any scan
            _ => {
                let length = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
                let scan_data = at + 2 + length;
                if marker == 0xDA {
                    return scan_data <= bytes.len() && bytes[scan_data..].windows(2).any(|w| w == [0xFF, 0xD9]);
                }
                at = scan_data;
            }
        }
    }
    false
}

/// `cv2.cvtColor(..., COLOR_RGB2GRAY)` for 8-bit: fixed-point BT.601 weights, rounded.
fn gray_from_rgb8([r, g, b]: [u8; 3]) -> u8 {
    const R: u32 = 4899; // 0.299 * 2^14
    const G: u32 = 9617; // 0.587 * 2^14
    const B: u32 = 1868; // 0.114 * 2^14
    ((r as u32 * R + g as u32 * G + b as u32 * B + (1 << 13)) >> 14) as u8
}

/// Writes an 8-bit gray PNG (values clamped to [0, 1] and rounded), atomically.
pub fn save_gray_png(img: &GrayImage, path: &Path) -> Result<()> {
    let buf = image::GrayImage::from_raw(img.width() as u32, img.height() as u32, img.to_u8()).expect("buffer length matches dimensions");
    let bytes = encode_png(&buf).map_err(|reason| Error::Encode { path: path.to_path_buf(), reason })?;
    atomic_file::write(path, &bytes)
}

/// Writes interleaved 8-bit RGB pixels as a PNG, atomically.
pub fn save_rgb_png(width: usize, height: usize, rgb: Vec<u8>, path: &Path) -> Result<()> {
    atomic_file::write(path, &encode_rgb_png(width, height, rgb, path)?)
}

/// Interleaved 8-bit RGB pixels as PNG bytes; `path` (where they will go) only names errors.
pub fn encode_rgb_png(width: usize, height: usize, rgb: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    let buf = image::RgbImage::from_raw(width as u32, height as u32, rgb)
        .ok_or_else(|| Error::size("RGB buffer length", width * height * 3, "a different length"))?;
    encode_png(&buf).map_err(|reason| Error::Encode { path: path.to_path_buf(), reason })
}

/// Encoded in memory, so that the file is written in one atomic step.
fn encode_png<P: image::PixelWithColorType>(buf: &image::ImageBuffer<P, Vec<P::Subpixel>>) -> std::result::Result<Vec<u8>, String>
where
    [P::Subpixel]: image::EncodableLayout,
{
    let mut bytes = std::io::Cursor::new(Vec::new());
    buf.write_to(&mut bytes, image::ImageFormat::Png).map_err(|e| e.to_string())?;
    Ok(bytes.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: DynamicImage, fmt: image::ImageFormat) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, fmt).unwrap();
        out.into_inner()
    }

    #[test]
    fn decodes_gray_png_exactly_and_16_bit_to_unit_range() {
        let g = image::GrayImage::from_fn(4, 3, |x, y| image::Luma([(x * 60 + y) as u8]));
        let bytes = encode(DynamicImage::ImageLuma8(g), image::ImageFormat::Png);
        let img = decode_gray(&bytes, Path::new("a.png")).unwrap();
        assert_eq!((img.width(), img.height()), (4, 3));
        assert_eq!(img.get(3, 2), 182.0 / 255.0);

        let g16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(2, 2, |x, _| image::Luma([x as u16 * 65535]));
        let bytes = encode(DynamicImage::ImageLuma16(g16), image::ImageFormat::Png);
        let img = decode_gray(&bytes, Path::new("b.png")).unwrap();
        assert_eq!(img.data(), &[0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn rgb_uses_opencv_weights() {
        let rgb = image::RgbImage::from_fn(3, 1, |x, _| match x {
            0 => image::Rgb([255, 0, 0]),
            1 => image::Rgb([0, 255, 0]),
            _ => image::Rgb([0, 0, 255]),
        });
        let bytes = encode(DynamicImage::ImageRgb8(rgb), image::ImageFormat::Bmp);
        let img = decode_gray(&bytes, Path::new("c.bmp")).unwrap();
        assert_eq!(img.to_u8(), vec![76, 150, 29]);
    }

    #[test]
    fn truncated_and_garbage_files_are_named_errors() {
        let g = image::GrayImage::from_fn(32, 32, |x, y| image::Luma([(x ^ y) as u8]));
        let bytes = encode(DynamicImage::ImageLuma8(g), image::ImageFormat::Jpeg);
        let err = decode_gray(&bytes[..bytes.len() / 2], Path::new("cut.jpg")).unwrap_err().to_string();
        assert!(err.contains("cut.jpg"), "{err}");
        // A photograph-sized JPEG cut anywhere after its headers decodes "successfully" (the rest
        // grey) unless the cut is detected.
        let big = image::GrayImage::from_fn(224, 224, |x, y| image::Luma([((x * 7 + y * 13) % 251) as u8]));
        let bytes = encode(DynamicImage::ImageLuma8(big), image::ImageFormat::Jpeg);
        assert!(decode_gray(&bytes, Path::new("whole.jpg")).is_ok());
        for cut in [bytes.len() / 3, 2 * bytes.len() / 3, bytes.len() - 2] {
            let err = decode_gray(&bytes[..cut], Path::new("cut.jpg")).unwrap_err().to_string();
            assert!(err.contains("cut.jpg") && err.contains("cut off"), "{cut}: {err}");
        }
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 64]);
        assert!(decode_gray(&padded, Path::new("padded.jpg")).is_ok(), "padding after the end marker, as cameras send");
        let err = decode_gray(b"not an image at all", Path::new("x.png")).unwrap_err().to_string();
        assert!(err.contains("x.png"), "{err}");
        assert!(decode_gray(&[], Path::new("empty.png")).unwrap_err().to_string().contains("empty"));
        let err = load_gray(Path::new("/definitely/missing.png")).unwrap_err().to_string();
        assert!(err.contains("/definitely/missing.png"), "{err}");
    }
}
