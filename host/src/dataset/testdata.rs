//! Writers for small synthetic datasets in the native layouts, used by the loader tests.

use std::path::Path;

use mer_shared::GrayImage;
use mer_shared::image::save_gray_png;
use mer_shared::synth::casme2::write_jpeg;

/// A spreadsheet cell to write.
#[derive(Debug, Clone, Copy)]
pub(crate) enum X {
    S(&'static str),
    N(f64),
    /// Left blank.
    B,
}

/// Writes an .xlsx with the given worksheets; row i of a sheet becomes spreadsheet row i + 1.
pub(crate) fn write_xlsx(path: &Path, sheets: &[(&str, Vec<Vec<X>>)]) {
    let mut book = rust_xlsxwriter::Workbook::new();
    for (name, rows) in sheets {
        let sheet = book.add_worksheet();
        sheet.set_name(*name).unwrap();
        for (r, row) in rows.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                match cell {
                    X::S(s) => sheet.write_string(r as u32, c as u16, *s).map(|_| ()).unwrap(),
                    X::N(v) => sheet.write_number(r as u32, c as u16, *v).map(|_| ()).unwrap(),
                    X::B => {}
                }
            }
        }
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    book.save(path).unwrap();
}

/// The CASME II coding sheet header, blank columns included as in the official .xlsx.
pub(crate) fn casme2_xlsx_header() -> Vec<X> {
    use X::*;
    vec![S("Subject"), S("Filename"), B, S("OnsetFrame"), S("ApexFrame"), S("OffsetFrame"), B, S("Action Units"), S("Estimated Emotion")]
}

/// Writes tiny 8×8 gray frames `name(n)` into `dir` (JPEG or PNG by the name's extension).
pub(crate) fn write_frames(dir: &Path, numbers: &[i64], name: impl Fn(i64) -> String) {
    std::fs::create_dir_all(dir).unwrap();
    for &n in numbers {
        let img = GrayImage::filled(8, 8, (n % 200) as f32 / 255.0);
        let path = dir.join(name(n));
        if path.extension().is_some_and(|e| e == "png") {
            save_gray_png(&img, &path).unwrap();
        } else {
            write_jpeg(&img, &path, 90).unwrap();
        }
    }
}
