//! PNG charts for training reports: a confusion matrix and line charts (loss per iteration,
//! UF1/UAR per epoch).
//!
//! Text is rendered with a TrueType font read from the system at run time (DejaVu Sans from the
//! Debian package `fonts-dejavu-core`, or the file named by `MER_FONT`), so no font ships with
//! the repository. Without a usable font the charts are still written, only without text: a
//! missing font must never fail a training run.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tracing::warn;

use ab_glyph::{Font, FontRef};
use anyhow::{Result, anyhow, ensure};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontTransform, register_font};

/// Environment variable naming a `.ttf`/`.otf` file to use instead of the default font.
pub const FONT_ENV: &str = "MER_FONT";

/// Where DejaVu Sans lives on common distributions (Debian/Ubuntu first).
const DEFAULT_FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// The family every text style here asks for; the loaded font is registered under it.
pub(crate) const FAMILY: &str = "sans-serif";

// ------------------------------------------------------------------------------------------------
// Font loading

/// Outcome of looking for a font: the first usable file, and what was wrong with the others.
struct FontSearch {
    found: Option<(PathBuf, Vec<u8>)>,
    problems: Vec<String>,
}

/// Tries `override_path` first, then `defaults`; only files that look like TrueType/OpenType are
/// accepted, so a wrong `MER_FONT` is reported instead of silently producing blank text.
fn locate_font(override_path: Option<&Path>, defaults: &[&str]) -> FontSearch {
    let mut problems = Vec::new();
    let candidates = override_path.map(Path::to_path_buf).into_iter().chain(defaults.iter().map(PathBuf::from));
    for path in candidates {
        match std::fs::read(&path) {
            Ok(bytes) if looks_like_font(&bytes) => {
                return FontSearch { found: Some((path, bytes)), problems };
            }
            Ok(_) => problems.push(format!("{} is not a TrueType/OpenType font", path.display())),
            Err(e) if override_path == Some(path.as_path()) => problems.push(format!("{} (from {FONT_ENV}): {e}", path.display())),
            // Missing default locations are normal on other distributions; not worth a line each.
            Err(_) => {}
        }
    }
    FontSearch { found: None, problems }
}

/// Checks the sfnt version tag (TrueType, OpenType/CFF, Apple TrueType, font collection).
fn looks_like_font(bytes: &[u8]) -> bool {
    matches!(bytes.get(..4), Some([0, 1, 0, 0] | b"OTTO" | b"true" | b"ttcf"))
}

/// Registers the font once per process and tells whether text can be drawn. Problems are
/// reported once on stderr, not per chart.
pub(crate) fn text_enabled() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let override_path = std::env::var_os(FONT_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
        let search = locate_font(override_path.as_deref(), DEFAULT_FONTS);
        let mut problems = search.problems;
        let installed = search.found.and_then(|(path, bytes)| {
            // plotters keeps registered fonts for the life of the process and wants them
            // 'static; this runs at most once, so the leak is bounded by one font file.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            match register_font(FAMILY, FontStyle::Normal, bytes) {
                Ok(()) => {
                    let metrics = HMetrics::parse(bytes);
                    if metrics.is_none() {
                        problems.push(format!("{}: no horizontal metrics found, letters may crowd", path.display()));
                    }
                    let _ = METRICS.set(metrics);
                    Some(path)
                }
                Err(_) => {
                    problems.push(format!("{} could not be parsed as a font", path.display()));
                    None
                }
            }
        });
        match &installed {
            Some(path) if !problems.is_empty() => {
                warn!("plots: {}; using {}", problems.join("; "), path.display());
            }
            Some(_) => {}
            None => {
                let why = if problems.is_empty() { "no font found".to_string() } else { problems.join("; ") };
                warn!(
                    "plots are written without text ({why}); install fonts-dejavu-core or set \
                     {FONT_ENV} to a .ttf file"
                );
            }
        }
        installed.is_some()
    })
}

/// Horizontal metrics of the registered font, when its tables could be read.
static METRICS: OnceLock<Option<HMetrics<'static>>> = OnceLock::new();

fn metrics() -> Option<&'static HMetrics<'static>> {
    METRICS.get().and_then(Option::as_ref)
}

/// Advance widths and left side bearings of the registered font, read through `ab_glyph`.
///
/// plotters 0.3.7 draws each glyph's ink starting at the pen position, dropping the glyph's left
/// side bearing, so neighbours like "cl" run together ("class" reads "dass"). Drawing characters
/// one at a time at pen + bearing restores the font's spacing; the font supplies both numbers.
struct HMetrics<'a>(FontRef<'a>);

impl<'a> HMetrics<'a> {
    fn parse(font: &'a [u8]) -> Option<HMetrics<'a>> {
        let font = ab_glyph::FontRef::try_from_slice(font).ok()?;
        (font.height_unscaled() > 0.0).then_some(HMetrics(font))
    }

    /// Advance and left side bearing of `c` in pixels at font size `px`: ab_glyph scales
    /// ascent − descent to the size, and unmapped characters get glyph 0 (".notdef").
    fn of(&self, c: char, px: f64) -> (f64, f64) {
        let id = self.0.glyph_id(c);
        let k = px / self.0.height_unscaled() as f64;
        (self.0.h_advance_unscaled(id) as f64 * k, self.0.h_side_bearing_unscaled(id) as f64 * k)
    }

    fn width(&self, text: &str, px: f64) -> f64 {
        text.chars().map(|c| self.of(c, px).0).sum()
    }
}

/// Text width and height in pixels; zero when text is off, so layouts collapse to the margins.
pub(crate) fn text_size(text: &str, px: f64, enabled: bool) -> (i32, i32) {
    if !enabled || text.is_empty() {
        return (0, 0);
    }
    let (w, h) = (FAMILY, px).into_font().box_size(text).map(|(w, h)| (w as i32, h as i32)).unwrap_or((0, 0));
    match metrics() {
        Some(m) => (m.width(text, px).ceil() as i32, h),
        None => (w, h),
    }
}

/// Shortens `text` with an ellipsis until it fits in `max_w` pixels, so a long class name cannot
/// push the matrix off the canvas. Widths grow with the prefix length, so a binary search finds
/// the longest prefix that fits.
pub(crate) fn fit_text(text: &str, px: f64, max_w: i32, enabled: bool) -> String {
    if text_size(text, px, enabled).0 <= max_w {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let shortened = |keep: usize| chars[..keep].iter().collect::<String>().trim_end().to_string() + "…";
    let (mut fits, mut too_long) = (0, chars.len());
    while too_long - fits > 1 {
        let mid = (fits + too_long) / 2;
        if text_size(&shortened(mid), px, enabled).0 <= max_w { fits = mid } else { too_long = mid }
    }
    shortened(fits)
}

/// Vertical placement of a line of text relative to its anchor, in the text's own frame.
#[derive(Debug, Clone, Copy)]
pub(crate) enum VAlign {
    /// Digits and capitals centred on the anchor.
    Middle,
    /// Top of the capitals on the anchor.
    Top,
    /// Baseline on the anchor.
    Baseline,
}

/// Cap height of DejaVu Sans relative to the pixel size ab_glyph scales to (ascent minus
/// descent); other sans fonts given with `MER_FONT` are close enough.
const CAP: f64 = 0.63;

/// Draws one line of text placed by its visible glyphs. plotters' ab_glyph backend puts the
/// baseline half a font size below a `VPos::Top` anchor and reckons text 0.8 font sizes tall,
/// which leaves `VPos::Center` text visibly high; anchoring at the top and shifting by the cap
/// height centres digits and capitals where they belong.
#[allow(clippy::too_many_arguments)]
pub(crate) fn put_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    px: f64,
    color: RGBColor,
    h: HPos,
    v: VAlign,
    rotation: FontTransform,
    (x, y): (i32, i32),
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let baseline = match v {
        VAlign::Middle => CAP * px / 2.0,
        VAlign::Top => CAP * px,
        VAlign::Baseline => 0.0,
    };
    let shift = (baseline - px / 2.0).round() as i32;
    // The shift is along the text's own y axis, which rotation turns sideways.
    let (dx, dy) = match rotation {
        FontTransform::None => (0, shift),
        FontTransform::Rotate90 => (-shift, 0),
        FontTransform::Rotate180 => (0, -shift),
        FontTransform::Rotate270 => (shift, 0),
    };
    let Some(m) = metrics() else {
        let style = (FAMILY, px).into_font().color(&color).pos(Pos::new(h, VPos::Top)).transform(rotation);
        return area.draw_text(text, &style, (x + dx, y + dy));
    };
    // One character at a time, each inked at pen + its left side bearing (see `HMetrics`).
    let total = m.width(text, px);
    let mut pen = match h {
        HPos::Left => 0.0,
        HPos::Center => -total / 2.0,
        HPos::Right => -total,
    };
    let mut buf = [0u8; 4];
    for c in text.chars() {
        let (advance, lsb) = m.of(c, px);
        if !c.is_whitespace() {
            // plotters puts the left pixel column of the ink, floor(bearing), at the anchor.
            let along = pen.round() as i32 + lsb.floor() as i32;
            let (ax, ay) = match rotation {
                FontTransform::None => (along, 0),
                FontTransform::Rotate90 => (0, along),
                FontTransform::Rotate180 => (-along, 0),
                FontTransform::Rotate270 => (0, -along),
            };
            let style = (FAMILY, px).into_font().color(&color).pos(Pos::new(HPos::Left, VPos::Top));
            let style = style.transform(rotation.clone());
            area.draw_text(c.encode_utf8(&mut buf), &style, (x + dx + ax, y + dy + ay))?;
        }
        pen += advance;
    }
    Ok(())
}

/// Rounds a font size to an even number of pixels: the ab_glyph backend truncates half the size
/// per glyph, and an odd size makes full stops sit a pixel higher than the digits beside them.
fn even_px(px: f64) -> f64 {
    (px / 2.0).round() * 2.0
}

/// Plots are drawn into memory and written in one atomic step, so a failed or interrupted run
/// never leaves a torn PNG under the name.
pub(crate) fn blank_canvas(size: (u32, u32)) -> Vec<u8> {
    vec![255; size.0 as usize * size.1 as usize * 3]
}

pub(crate) fn write_png(path: &Path, size: (u32, u32), canvas: Vec<u8>) -> Result<()> {
    mer_shared::image::save_rgb_png(size.0 as usize, size.1 as usize, canvas, path)?;
    Ok(())
}

pub(crate) fn ensure_png_path(path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    ensure!(ext.eq_ignore_ascii_case("png"), "{}: plot files must end in .png", path.display());
    Ok(())
}

/// Turns a plotters error (which borrows nothing) into an anyhow error with the file name.
pub(crate) fn draw_err<E: std::fmt::Display>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("drawing {}: {e}", path.display())
}

// ------------------------------------------------------------------------------------------------
// Confusion matrix

/// Light end of the colour scale (rate 0) and its dark end (rate 1), after ColorBrewer "Blues".
const SCALE: [(f64, [u8; 3]); 3] = [(0.0, [247, 251, 255]), (0.5, [107, 174, 214]), (1.0, [8, 48, 107])];
/// Cells of a class with no samples: a rate is undefined there, so they must not look like 0%.
const NO_DATA: RGBColor = RGBColor(222, 222, 222);

/// Colour for a row-normalised rate in [0, 1].
fn rate_color(rate: f64) -> RGBColor {
    let rate = rate.clamp(0.0, 1.0);
    let i = if rate <= SCALE[1].0 { 0 } else { 1 };
    let ((a, ca), (b, cb)) = (SCALE[i], SCALE[i + 1]);
    let t = (rate - a) / (b - a);
    let mix = |k: usize| (ca[k] as f64 + (cb[k] as f64 - ca[k] as f64) * t).round() as u8;
    RGBColor(mix(0), mix(1), mix(2))
}

/// White text on dark cells, black on light ones (BT.601 luma threshold).
fn ink_for(bg: RGBColor) -> RGBColor {
    let luma = 0.299 * bg.0 as f64 + 0.587 * bg.1 as f64 + 0.114 * bg.2 as f64;
    if luma < 140.0 { WHITE } else { BLACK }
}

pub(crate) const PAD: i32 = 16;
pub(crate) const TITLE_PX: f64 = 22.0;
pub(crate) const LABEL_PX: f64 = 14.0;
pub(crate) const DESC_PX: f64 = 16.0;
const TICK_PX: f64 = 12.0;
/// Longest class-name label before it is shortened with an ellipsis.
const MAX_LABEL_W: i32 = 240;
/// Widest title before it is shortened, so a long run description cannot stretch the image.
const MAX_TITLE_W: i32 = 900;
const BAR_W: i32 = 18;

/// Pixel geometry of a confusion-matrix chart; drawing and tests share it.
#[derive(Debug, Clone)]
struct ConfusionLayout {
    width: i32,
    height: i32,
    /// The title, shortened if it would make the image wider than `MAX_TITLE_W`.
    title: String,
    n: usize,
    cell: i32,
    /// Top-left corner of the cell grid.
    grid: (i32, i32),
    row_labels: Vec<String>,
    col_labels: Vec<String>,
    /// Column labels read bottom-to-top when any of them is wider than a cell.
    col_rotated: bool,
    col_label_h: i32,
    bar_x: i32,
    tick_w: i32,
}

impl ConfusionLayout {
    fn new(title: &str, classes: &[String], totals: &[usize], text: bool) -> Self {
        let n = classes.len();
        let cell = (560 / n as i32).clamp(24, 110);
        let row_labels: Vec<String> = classes
            .iter()
            .zip(totals)
            .map(|(c, t)| {
                // Shorten the name, never the count after it.
                let total = format!(" (n={t})");
                let room = MAX_LABEL_W - text_size(&total, LABEL_PX, text).0;
                fit_text(c, LABEL_PX, room, text) + &total
            })
            .collect();
        let col_labels: Vec<String> = classes.iter().map(|c| fit_text(c, LABEL_PX, MAX_LABEL_W, text)).collect();
        let widest = |labels: &[String]| labels.iter().map(|l| text_size(l, LABEL_PX, text).0).max().unwrap_or(0);
        let row_label_w = widest(&row_labels);
        let col_label_w = widest(&col_labels);
        let col_rotated = col_label_w > cell - 8;
        let label_h = text_size("Xg", LABEL_PX, text).1;
        let col_label_h = if col_rotated { col_label_w } else { label_h };
        let title = fit_text(title, TITLE_PX, MAX_TITLE_W, text);
        let title_h = text_size(&title, TITLE_PX, text).1;
        let desc_h = text_size("Xg", DESC_PX, text).1;
        let gap = if text { 10 } else { 0 };

        let grid_x = PAD + desc_h + gap + row_label_w + gap;
        let grid_y = PAD + title_h + if text { 18 } else { 0 };
        let grid_side = cell * n as i32;
        let bar_x = grid_x + grid_side + 24;
        let tick_w = text_size("100%", TICK_PX, text).0;
        let right = bar_x + BAR_W + if text { 6 + tick_w + gap + desc_h } else { 0 } + PAD;
        let bottom = grid_y + grid_side + gap + col_label_h + gap + desc_h + PAD;
        let width = right.max(text_size(&title, TITLE_PX, text).0 + 2 * PAD);
        ConfusionLayout {
            width,
            height: bottom,
            title,
            n,
            cell,
            grid: (grid_x, grid_y),
            row_labels,
            col_labels,
            col_rotated,
            col_label_h,
            bar_x,
            tick_w,
        }
    }

    /// Top-left and bottom-right pixel of cell (row = true class, col = predicted class).
    fn cell_rect(&self, row: usize, col: usize) -> ((i32, i32), (i32, i32)) {
        let x0 = self.grid.0 + col as i32 * self.cell;
        let y0 = self.grid.1 + row as i32 * self.cell;
        ((x0, y0), (x0 + self.cell - 1, y0 + self.cell - 1))
    }

    fn grid_side(&self) -> i32 {
        self.cell * self.n as i32
    }
}

fn validate_confusion(classes: &[String], counts: &[Vec<usize>]) -> Result<()> {
    ensure!(!classes.is_empty(), "confusion matrix needs at least one class");
    ensure!(counts.len() == classes.len(), "confusion matrix has {} rows but {} classes", counts.len(), classes.len());
    for (i, row) in counts.iter().enumerate() {
        ensure!(
            row.len() == classes.len(),
            "confusion matrix row {i} ({}) has {} columns; a square {n}x{n} matrix is needed",
            classes[i],
            row.len(),
            n = classes.len()
        );
    }
    Ok(())
}

/// Confusion matrix as a PNG: rows = true class, columns = predicted; cells coloured by
/// row-normalised rate, annotated with counts (and the rate); title; axis labels with class
/// names.
///
/// Rows are normalised so that a rare class reads as well as a frequent one (the per-class
/// recall that UAR averages lies on the diagonal). A class without samples is drawn grey with
/// no rate, instead of pretending 0%.
pub fn confusion_png(path: &Path, title: &str, classes: &[String], counts: &[Vec<usize>]) -> Result<()> {
    render_confusion(path, title, classes, counts, text_enabled()).map(|_| ())
}

fn render_confusion(path: &Path, title: &str, classes: &[String], counts: &[Vec<usize>], text: bool) -> Result<ConfusionLayout> {
    validate_confusion(classes, counts)?;
    ensure_png_path(path)?;
    let totals: Vec<usize> = counts.iter().map(|r| r.iter().sum()).collect();
    let lay = ConfusionLayout::new(title, classes, &totals, text);
    let err = draw_err(path);
    let size = (lay.width as u32, lay.height as u32);
    let mut canvas = blank_canvas(size);
    {
        let root = BitMapBackend::with_buffer(&mut canvas, size).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        draw_confusion(&root, &lay, counts, &totals, text).map_err(&err)?;
        root.present().map_err(&err)?;
    }
    write_png(path, size, canvas)?;
    Ok(lay)
}

fn draw_confusion<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    lay: &ConfusionLayout,
    counts: &[Vec<usize>],
    totals: &[usize],
    text: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let n = lay.n;
    let side = lay.grid_side();
    let (gx, gy) = lay.grid;
    // Counts on a first line, the rate below it, when the cell is tall enough for both.
    let count_px = even_px((lay.cell as f64 * 0.24).clamp(10.0, 22.0));
    let rate_px = even_px(count_px * 0.75).max(10.0);
    let show_rate = lay.cell >= 56;

    for (r, row) in counts.iter().enumerate() {
        for (c, &count) in row.iter().enumerate() {
            let rate = (totals[r] > 0).then(|| count as f64 / totals[r] as f64);
            let bg = rate.map_or(NO_DATA, rate_color);
            let ((x0, y0), (x1, y1)) = lay.cell_rect(r, c);
            root.draw(&Rectangle::new([(x0, y0), (x1, y1)], bg.filled()))?;
            if !text {
                continue;
            }
            let ink = ink_for(bg);
            let (cx, cy) = ((x0 + x1) / 2, (y0 + y1) / 2);
            if show_rate {
                let rate_text = rate.map_or("–".to_string(), |v| format!("{:.1}%", 100.0 * v));
                let count_text = count.to_string();
                put_text(root, &count_text, count_px, ink, HPos::Center, VAlign::Baseline, FontTransform::None, (cx, cy - 2))?;
                put_text(root, &rate_text, rate_px, ink, HPos::Center, VAlign::Top, FontTransform::None, (cx, cy + 6))?;
            } else {
                let count_text = count.to_string();
                put_text(root, &count_text, count_px, ink, HPos::Center, VAlign::Middle, FontTransform::None, (cx, cy))?;
            }
        }
    }
    // Thin white lines keep neighbouring cells of similar colour apart; a frame closes the grid.
    for k in 1..n as i32 {
        let p = k * lay.cell;
        root.draw(&PathElement::new(vec![(gx + p, gy), (gx + p, gy + side - 1)], WHITE))?;
        root.draw(&PathElement::new(vec![(gx, gy + p), (gx + side - 1, gy + p)], WHITE))?;
    }
    let frame = RGBColor(90, 90, 90);
    root.draw(&Rectangle::new([(gx - 1, gy - 1), (gx + side, gy + side)], frame))?;

    // Colour bar: rate 1 at the top, 0 at the bottom.
    let bx = lay.bar_x;
    for y in 0..side {
        let rate = 1.0 - y as f64 / (side - 1).max(1) as f64;
        root.draw(&PathElement::new(vec![(bx, gy + y), (bx + BAR_W - 1, gy + y)], rate_color(rate)))?;
    }
    root.draw(&Rectangle::new([(bx - 1, gy - 1), (bx + BAR_W, gy + side)], frame))?;

    if !text {
        return Ok(());
    }
    let none = || FontTransform::None;
    let up = || FontTransform::Rotate270;
    put_text(root, &lay.title, TITLE_PX, BLACK, HPos::Center, VAlign::Top, none(), (lay.width / 2, PAD))?;
    for (r, label) in lay.row_labels.iter().enumerate() {
        let cy = gy + r as i32 * lay.cell + lay.cell / 2;
        put_text(root, label, LABEL_PX, BLACK, HPos::Right, VAlign::Middle, none(), (gx - 10, cy))?;
    }
    let labels_top = gy + side + 10;
    for (c, label) in lay.col_labels.iter().enumerate() {
        let cx = gx + c as i32 * lay.cell + lay.cell / 2;
        if lay.col_rotated {
            // Read bottom-to-top with the end of the name against the grid.
            put_text(root, label, LABEL_PX, BLACK, HPos::Right, VAlign::Middle, up(), (cx, labels_top))?;
        } else {
            put_text(root, label, LABEL_PX, BLACK, HPos::Center, VAlign::Top, none(), (cx, labels_top))?;
        }
    }
    let desc_y = labels_top + lay.col_label_h + 10;
    put_text(root, "Predicted class", DESC_PX, BLACK, HPos::Center, VAlign::Top, none(), (gx + side / 2, desc_y))?;
    put_text(root, "True class", DESC_PX, BLACK, HPos::Center, VAlign::Top, up(), (PAD, gy + side / 2))?;

    for k in 0..=4 {
        let rate = k as f64 / 4.0;
        let y = gy + ((1.0 - rate) * (side - 1) as f64).round() as i32;
        root.draw(&PathElement::new(vec![(bx + BAR_W, y), (bx + BAR_W + 4, y)], frame))?;
        let label = format!("{}%", (rate * 100.0).round());
        put_text(root, &label, TICK_PX, BLACK, HPos::Left, VAlign::Middle, none(), (bx + BAR_W + 6, y))?;
    }
    // Reads bottom-to-top like the other vertical labels, its top facing the tick labels.
    let desc_x = bx + BAR_W + 6 + lay.tick_w + 10;
    put_text(root, "share of true class", TICK_PX, BLACK, HPos::Center, VAlign::Top, up(), (desc_x, gy + side / 2))?;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Line charts

/// One named line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

const CURVES_SIZE: (u32, u32) = (960, 560);
/// Distinct hues that stay apart in gray as well (the "tab10" cycle).
const LINE_COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Up to this many points per series each get a marker, so short curves (a few epochs) show
/// where the measurements are.
const MARKER_MAX_POINTS: usize = 60;
/// Legend line sample length and the widest series name before it is shortened.
const LEGEND_SWATCH: i32 = 24;
const LEGEND_MAX_W: i32 = 220;

/// Where each series' finite points landed in pixels; tests sample colours there.
#[derive(Debug, Clone)]
struct CurvesDrawn {
    #[cfg_attr(not(test), allow(dead_code))]
    pixels: Vec<Vec<(i32, i32)>>,
}

fn validate_series(series: &[Series]) -> Result<()> {
    ensure!(!series.is_empty(), "line chart needs at least one series");
    for s in series {
        ensure!(!s.points.is_empty(), "series '{}' has no points", s.name);
    }
    let finite = series.iter().flat_map(|s| &s.points).any(|&(x, y)| x.is_finite() && y.is_finite());
    ensure!(finite, "no series has a finite point to plot (all x or y are NaN or infinite)");
    Ok(())
}

/// Splits a series at non-finite points so a NaN leaves a gap instead of being bridged.
fn finite_runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            run.push((x, y));
        } else if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// Data range widened by `frac` on both sides; a degenerate range (one point, a flat line) is
/// opened up so it still has an extent to draw in.
pub(crate) fn padded(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    if hi > lo {
        let p = (hi - lo) * frac;
        (lo - p, hi + p)
    } else {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - d, hi + d)
    }
}

/// Line chart (e.g. loss vs. iteration, UF1/UAR vs. epoch) with a legend.
///
/// Non-finite points are skipped and break the line there, so a diverged stretch of training
/// shows as a gap. Series with 60 points or fewer get a marker on every point.
pub fn curves_png(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    render_curves(path, title, x_label, y_label, series, text_enabled()).map(|_| ())
}

fn render_curves(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series], text: bool) -> Result<CurvesDrawn> {
    validate_series(series)?;
    ensure_png_path(path)?;
    let finite = || series.iter().flat_map(|s| &s.points).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in finite() {
        (x_lo, x_hi, y_lo, y_hi) = (x_lo.min(x), x_hi.max(x), y_lo.min(y), y_hi.max(y));
    }
    let (x_lo, x_hi) = padded(x_lo, x_hi, 0.02);
    let (y_lo, y_hi) = padded(y_lo, y_hi, 0.06);

    let runs: Vec<Vec<Vec<(f64, f64)>>> = series.iter().map(|s| finite_runs(&s.points)).collect();
    let legend: Vec<String> = series
        .iter()
        .zip(&runs)
        .map(|(s, r)| {
            let name = if r.is_empty() { format!("{} (no finite values)", s.name) } else { s.name.clone() };
            fit_text(&name, LABEL_PX, LEGEND_MAX_W, text)
        })
        .collect();
    // The legend sits beside the plot rather than on it, so it never hides a curve.
    let legend_w =
        if text { LEGEND_SWATCH + 8 + legend.iter().map(|l| text_size(l, LABEL_PX, true).0).max().unwrap_or(0) + PAD } else { 0 };
    let title = fit_text(title, TITLE_PX, CURVES_SIZE.0 as i32 - 2 * PAD, text);
    let title_h = if text { PAD + text_size(&title, TITLE_PX, true).1 + 8 } else { 0 };

    let err = draw_err(path);
    let mut canvas = blank_canvas(CURVES_SIZE);
    let drawn = {
        let root = BitMapBackend::with_buffer(&mut canvas, CURVES_SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let (head, body) = root.split_vertically(title_h);
        let (plot_area, legend_area) = body.split_horizontally(CURVES_SIZE.0 as i32 - legend_w);
        if text {
            let centre = CURVES_SIZE.0 as i32 / 2;
            put_text(&head, &title, TITLE_PX, BLACK, HPos::Center, VAlign::Top, FontTransform::None, (centre, PAD)).map_err(&err)?;
        }

        let mut builder = ChartBuilder::on(&plot_area);
        builder.margin(PAD);
        if text {
            builder.x_label_area_size(52).y_label_area_size(78);
        }
        let mut chart = builder.build_cartesian_2d(x_lo..x_hi, y_lo..y_hi).map_err(&err)?;
        {
            let mut mesh = chart.configure_mesh();
            mesh.light_line_style(TRANSPARENT).bold_line_style(RGBColor(225, 225, 225));
            if text {
                mesh.x_label_formatter(&tick_label).y_label_formatter(&tick_label).label_style((FAMILY, LABEL_PX));
            } else {
                // Grid positions come from label positions, and labels need a font: axes only.
                mesh.x_labels(0).y_labels(0);
            }
            mesh.draw().map_err(&err)?;
        }
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        if text {
            // Axis titles are drawn here rather than by the mesh so they get the corrected spacing.
            let (none, up) = (FontTransform::None, FontTransform::Rotate270);
            let x_label = fit_text(x_label, DESC_PX, xs.end - xs.start, true);
            let y_label = fit_text(y_label, DESC_PX, ys.end - ys.start, true);
            let below = ((xs.start + xs.end) / 2, ys.end + 30);
            put_text(&root, &x_label, DESC_PX, BLACK, HPos::Center, VAlign::Top, none, below).map_err(&err)?;
            let left = (PAD, (ys.start + ys.end) / 2);
            put_text(&root, &y_label, DESC_PX, BLACK, HPos::Center, VAlign::Top, up, left).map_err(&err)?;
        }

        let mut pixels = Vec::with_capacity(series.len());
        for (i, (s, runs)) in series.iter().zip(&runs).enumerate() {
            let color = series_color(i);
            let markers = s.points.len() <= MARKER_MAX_POINTS;
            for run in runs {
                chart.draw_series(LineSeries::new(run.iter().copied(), color.stroke_width(2))).map_err(&err)?;
                // A lone point between gaps has no line to show it, so it always gets a marker.
                if markers || run.len() == 1 {
                    chart.draw_series(run.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(&err)?;
                }
            }
            pixels.push(runs.iter().flatten().map(|p| chart.backend_coord(p)).collect());
        }

        if text {
            // Entries start level with the top of the plotting area.
            let top = ys.start - title_h;
            for (i, name) in legend.iter().enumerate() {
                let y = top + 6 + i as i32 * 22;
                let color = series_color(i);
                let line = PathElement::new(vec![(0, y), (LEGEND_SWATCH, y)], color.stroke_width(2));
                legend_area.draw(&line).map_err(&err)?;
                if series[i].points.len() <= MARKER_MAX_POINTS {
                    legend_area.draw(&Circle::new((LEGEND_SWATCH / 2, y), 3, color.filled())).map_err(&err)?;
                }
                let at = (LEGEND_SWATCH + 8, y);
                put_text(&legend_area, name, LABEL_PX, BLACK, HPos::Left, VAlign::Middle, FontTransform::None, at).map_err(&err)?;
            }
        }
        root.present().map_err(&err)?;
        CurvesDrawn { pixels }
    };
    write_png(path, CURVES_SIZE, canvas)?;
    Ok(drawn)
}

fn series_color(i: usize) -> RGBColor {
    LINE_COLORS[i % LINE_COLORS.len()]
}

/// Axis numbers without trailing zeros ("20000", "0.35"), in scientific notation only when
/// very large or small; plotters' default prints "20000.0".
pub(crate) fn tick_label(v: &f64) -> String {
    let v = *v;
    if v == 0.0 {
        return "0".to_string();
    }
    if v.abs() >= 1e7 || v.abs() < 1e-4 {
        return format!("{v:.2e}");
    }
    let fixed = format!("{v:.6}");
    let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
    if trimmed == "-0" { "0".to_string() } else { trimmed.to_string() }
}

// ------------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use mer_shared::image::load_gray;

    fn luma(c: RGBColor) -> f32 {
        (0.299 * c.0 as f32 + 0.587 * c.1 as f32 + 0.114 * c.2 as f32) / 255.0
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Reads width and height from the IHDR chunk, independently of any decoder.
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
        (be(16), be(20))
    }

    fn seven_classes() -> Vec<String> {
        names(&["happiness", "surprise", "disgust", "repression", "fear", "sadness", "others (ambiguous, not otherwise specified)"])
    }

    #[test]
    fn confusion_perfect_classifier_dark_diagonal_light_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cm.png");
        let classes = seven_classes();
        let n = classes.len();
        let counts: Vec<Vec<usize>> = (0..n).map(|r| (0..n).map(|c| if r == c { 3 + 10 * r } else { 0 }).collect()).collect();
        let text = text_enabled();
        let lay = render_confusion(&path, "LOSO, 7 classes", &classes, &counts, text).unwrap();
        assert_eq!(png_size(&path), (lay.width as u32, lay.height as u32));
        let img = load_gray(&path).unwrap();
        assert_eq!((img.width(), img.height()), (lay.width as usize, lay.height as usize));

        // Sample just inside each cell's corner, away from the centred annotation.
        let corner = |r: usize, c: usize| {
            let ((x0, y0), _) = lay.cell_rect(r, c);
            img.get((x0 + 4) as usize, (y0 + 4) as usize)
        };
        for r in 0..n {
            for c in 0..n {
                let want = luma(rate_color(if r == c { 1.0 } else { 0.0 }));
                let got = corner(r, c);
                assert!((got - want).abs() < 0.02, "cell ({r},{c}): luma {got}, want {want}");
            }
        }
        assert!(corner(2, 2) + 0.5 < corner(2, 3), "diagonal must be much darker than an empty cell");

        if text {
            // Counts are legible on both ends of the scale: white ink on the dark diagonal, black
            // ink on the light off-diagonal cells.
            let centre_extremes = |r: usize, c: usize| {
                let ((x0, y0), (x1, y1)) = lay.cell_rect(r, c);
                let (cx, cy) = ((x0 + x1) / 2, (y0 + y1) / 2);
                let mut lo = 1.0f32;
                let mut hi = 0.0f32;
                for y in cy - 14..cy + 14 {
                    for x in cx - 20..cx + 20 {
                        let v = img.get(x as usize, y as usize);
                        lo = lo.min(v);
                        hi = hi.max(v);
                    }
                }
                (lo, hi)
            };
            let (_, hi) = centre_extremes(4, 4);
            assert!(hi > 0.8, "white count on dark cell, max luma {hi}");
            let (lo, _) = centre_extremes(4, 1);
            assert!(lo < 0.3, "black count on light cell, min luma {lo}");
            assert!(lay.col_rotated, "the long class name must rotate the column labels");
            assert!(lay.col_labels[6].ends_with('…'), "long name shortened: {}", lay.col_labels[6]);
            assert!(lay.width < 1400 && lay.height < 1400, "layout stays compact: {lay:?}");
        }
    }

    #[test]
    fn confusion_rates_are_row_normalised_and_empty_rows_are_grey() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cm.png");
        let classes = names(&["negative", "positive", "surprise"]);
        // Row 0: 1/4 correct; row 1: no samples; row 2: 30/40 correct.
        let counts = vec![vec![1, 3, 0], vec![0, 0, 0], vec![10, 0, 30]];
        let lay = render_confusion(&path, "rates", &classes, &counts, text_enabled()).unwrap();
        let img = load_gray(&path).unwrap();
        let corner = |r: usize, c: usize| {
            let ((x0, y0), _) = lay.cell_rect(r, c);
            img.get((x0 + 4) as usize, (y0 + 4) as usize)
        };
        let expect = [(0, 0, 0.25), (0, 1, 0.75), (0, 2, 0.0), (2, 0, 0.25), (2, 2, 0.75)];
        for (r, c, rate) in expect {
            let want = luma(rate_color(rate));
            assert!((corner(r, c) - want).abs() < 0.02, "cell ({r},{c}) luma {} want {want}", corner(r, c));
        }
        // Same rate, different counts, same colour: normalisation is per row.
        assert!((corner(0, 0) - corner(2, 0)).abs() < 0.01);
        for c in 0..3 {
            assert!((corner(1, c) - luma(NO_DATA)).abs() < 0.02, "empty row cell {c} is grey");
        }
        assert!((luma(NO_DATA) - luma(rate_color(0.0))).abs() > 0.05, "grey differs from 0%");
    }

    #[test]
    fn confusion_without_font_still_draws_cells() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cm.png");
        let classes = names(&["a", "b"]);
        let lay = render_confusion(&path, "no text", &classes, &[vec![5, 0], vec![0, 5]], false).unwrap();
        assert_eq!(png_size(&path), (lay.width as u32, lay.height as u32));
        let img = load_gray(&path).unwrap();
        let ((x0, y0), _) = lay.cell_rect(1, 1);
        let ((x1, y1), _) = lay.cell_rect(0, 1);
        let (dark, light) = (img.get(x0 as usize + 4, y0 as usize + 4), img.get(x1 as usize + 4, y1 as usize + 4));
        assert!(dark < 0.3 && light > 0.9, "diagonal {dark}, off-diagonal {light}");
    }

    #[test]
    fn long_titles_do_not_stretch_the_image() {
        if !text_enabled() {
            assert!(!Path::new(DEFAULT_FONTS[0]).exists() || std::env::var_os(FONT_ENV).is_some());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let long = "fold results for a very long run description ".repeat(10);
        let lay = render_confusion(&dir.path().join("cm.png"), &long, &names(&["a", "b"]), &[vec![1, 0], vec![0, 1]], true).unwrap();
        assert!(lay.title.ends_with('…') && lay.width <= MAX_TITLE_W + 2 * PAD, "{} px", lay.width);
        let series = [Series { name: long.clone(), points: vec![(0.0, 1.0), (1.0, 0.5)] }];
        let path = dir.path().join("c.png");
        render_curves(&path, &long, &long, &long, &series, true).unwrap();
        assert_eq!(png_size(&path), CURVES_SIZE);
    }

    #[test]
    fn confusion_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cm.png");
        let two = names(&["a", "b"]);
        let msg = |r: Result<()>| r.unwrap_err().to_string();
        assert!(msg(confusion_png(&path, "t", &[], &[])).contains("at least one class"));
        assert!(msg(confusion_png(&path, "t", &two, &[vec![1, 2]])).contains("1 rows but 2 classes"));
        assert!(msg(confusion_png(&path, "t", &two, &[vec![1, 2], vec![3]])).contains("row 1 (b) has 1 columns"));
        let jpg = dir.path().join("cm.jpg");
        assert!(msg(confusion_png(&jpg, "t", &two, &[vec![1, 0], vec![0, 1]])).contains(".png"));
        assert!(!path.exists() && !jpg.exists(), "nothing written for invalid input");
    }

    #[test]
    fn curves_draw_each_series_in_its_colour_with_gaps_at_nan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.png");
        let loss = Series { name: "train loss".into(), points: vec![(0.0, 2.0), (1.0, 1.6), (2.0, f64::NAN), (3.0, 1.2), (4.0, 1.0)] };
        let uf1 = Series { name: "UF1".into(), points: vec![(0.0, 0.2), (1.0, 0.3), (2.0, 0.35), (4.0, 0.5)] };
        let single = Series { name: "best epoch".into(), points: vec![(3.0, 0.7)] };
        let series = [loss, uf1, single];
        let drawn = render_curves(&path, "training", "epoch", "value", &series, text_enabled()).unwrap();
        assert_eq!(png_size(&path), CURVES_SIZE);
        let img = load_gray(&path).unwrap();
        let at = |(x, y): (i32, i32)| img.get(x as usize, y as usize);

        assert_eq!(drawn.pixels.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 1], "NaN point skipped");
        for (i, pts) in drawn.pixels.iter().enumerate() {
            let want = luma(LINE_COLORS[i]);
            for &p in pts {
                assert!((at(p) - want).abs() < 0.03, "series {i} at {p:?}: luma {} want {want}", at(p));
            }
        }
        // Between (1, 1.6) and (3, 1.2) the NaN at x=2 leaves a gap: the straight line that would
        // bridge it is absent there (background or a light grid line only).
        let (a, b) = (drawn.pixels[0][1], drawn.pixels[0][2]);
        let mid = ((a.0 + b.0) / 2, (a.1 + b.1) / 2);
        assert!(at(mid) > 0.8, "gap expected at {mid:?}, luma {}", at(mid));
        // The connected stretch of the same series is drawn: its midpoint carries the line colour.
        let (c, d) = (drawn.pixels[0][2], drawn.pixels[0][3]);
        let mid = ((c.0 + d.0) / 2, (c.1 + d.1) / 2);
        assert!((at(mid) - luma(LINE_COLORS[0])).abs() < 0.05, "line expected at {mid:?}, luma {}", at(mid));
    }

    #[test]
    fn curves_single_point_and_no_font() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.png");
        let series = [Series { name: "UAR".into(), points: vec![(5.0, 0.0)] }];
        for text in [true, false] {
            let drawn = render_curves(&path, "one", "epoch", "UAR", &series, text && text_enabled()).unwrap();
            let img = load_gray(&path).unwrap();
            let p = drawn.pixels[0][0];
            assert!((img.get(p.0 as usize, p.1 as usize) - luma(LINE_COLORS[0])).abs() < 0.03);
            // The lone point sits mid-chart, since the degenerate range is opened around it.
            let (w, h) = (CURVES_SIZE.0 as i32, CURVES_SIZE.1 as i32);
            assert!(p.0 > w / 4 && p.0 < 3 * w / 4 && p.1 > h / 4 && p.1 < 3 * h / 4, "{p:?}");
        }
    }

    #[test]
    fn curves_reject_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.png");
        let msg = |s: &[Series]| curves_png(&path, "t", "x", "y", s).unwrap_err().to_string();
        assert!(msg(&[]).contains("at least one series"));
        assert!(msg(&[Series { name: "loss".into(), points: vec![] }]).contains("'loss' has no points"));
        let nan = Series { name: "loss".into(), points: vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)] };
        assert!(msg(std::slice::from_ref(&nan)).contains("no series has a finite point"));
        // One all-NaN series next to a good one is drawn (and named in the legend), not refused.
        let good = Series { name: "uf1".into(), points: vec![(0.0, 0.1), (1.0, 0.2)] };
        curves_png(&path, "t", "x", "y", &[nan, good]).unwrap();
        assert!(path.exists());
    }

    #[test]
    fn finite_runs_and_padding() {
        let runs = finite_runs(&[(0.0, 1.0), (1.0, f64::NAN), (2.0, 2.0), (3.0, 3.0), (f64::INFINITY, 0.0)]);
        assert_eq!(runs, vec![vec![(0.0, 1.0)], vec![(2.0, 2.0), (3.0, 3.0)]]);
        assert_eq!(padded(0.0, 10.0, 0.1), (-1.0, 11.0));
        assert_eq!(padded(0.0, 0.0, 0.1), (-1.0, 1.0));
        assert_eq!(padded(-5.0, -5.0, 0.1), (-5.5, -4.5));
    }

    #[test]
    fn font_search_reports_a_bad_override_and_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let not_font = dir.path().join("notes.ttf");
        std::fs::write(&not_font, b"plain text, not a font").unwrap();
        let missing = dir.path().join("missing.ttf");
        let real = dir.path().join("real.ttf");
        let mut sfnt = vec![0u8, 1, 0, 0];
        sfnt.extend_from_slice(&[0; 60]);
        std::fs::write(&real, &sfnt).unwrap();
        let real_str = real.to_str().unwrap();

        let s = locate_font(Some(&not_font), &[real_str]);
        assert_eq!(s.found.as_ref().map(|(p, _)| p.clone()), Some(real.clone()));
        assert!(s.problems[0].contains("not a TrueType/OpenType font"), "{:?}", s.problems);

        let s = locate_font(Some(&missing), &[]);
        assert!(s.found.is_none());
        assert!(s.problems[0].contains(FONT_ENV), "{:?}", s.problems);

        // Missing default locations are silent; only the override is worth a complaint.
        let s = locate_font(None, &[missing.to_str().unwrap()]);
        assert!(s.found.is_none() && s.problems.is_empty());
    }

    #[test]
    fn default_font_is_used_when_installed() {
        // Where the Debian font exists (bootstrap installs it), charts must have text.
        if Path::new(DEFAULT_FONTS[0]).exists() && std::env::var_os(FONT_ENV).is_none() {
            assert!(text_enabled(), "DejaVu Sans is installed but was not registered");
            assert!(metrics().is_some(), "DejaVu Sans metrics were not read");
        }
    }

    #[test]
    fn font_metrics_match_the_rasteriser() {
        let Some(bytes) = DEFAULT_FONTS.iter().find_map(|p| std::fs::read(p).ok()) else {
            assert!(!Path::new(DEFAULT_FONTS[0]).exists());
            return;
        };
        let m = HMetrics::parse(&bytes).expect("DejaVu Sans parses");
        let (adv_m, _) = m.of('M', 20.0);
        let (adv_i, lsb_l) = (m.of('i', 20.0).0, m.of('l', 20.0).1);
        assert!(adv_m > 1.5 * adv_i, "M {adv_m} vs i {adv_i}");
        assert!(lsb_l > 1.0, "'l' has a visible left bearing at 20 px: {lsb_l}");
        assert!(m.of('…', 14.0).0 > 0.0 && m.0.glyph_id('…').0 != 0);
        // Same scale as plotters' own layout estimate (which also adds kerning and truncates).
        if text_enabled() {
            for text in ["class", "Predicted class", "happiness (n=32)", "0.75"] {
                let ours = m.width(text, LABEL_PX);
                let theirs = (FAMILY, LABEL_PX).into_font().box_size(text).unwrap().0 as f64;
                assert!((ours - theirs).abs() <= 2.0, "{text}: {ours} vs {theirs}");
            }
        }
        // Truncated or foreign data is rejected without panicking.
        for len in [0, 4, 12, 100, 1000, bytes.len() / 2] {
            let _ = HMetrics::parse(&bytes[..len]);
        }
        assert!(HMetrics::parse(b"ttcf\0\0\0\0\0\0\0\0\xff\xff\xff\xff").is_none());
    }

    /// Ink columns of a rendered line of text, as runs of consecutive columns.
    fn ink_runs(text: &str, px: f64) -> Vec<(u32, u32)> {
        let (w, h) = (120u32, 40u32);
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let area = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            put_text(&area, text, px, BLACK, HPos::Left, VAlign::Top, FontTransform::None, (4, 8)).unwrap();
            area.present().unwrap();
        }
        let inked = |x: u32| (0..h).any(|y| buf[((y * w + x) * 3) as usize] < 160);
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for x in 0..w {
            if inked(x) {
                match runs.last_mut() {
                    Some(r) if r.1 + 1 == x => r.1 = x,
                    _ => runs.push((x, x)),
                }
            }
        }
        runs
    }

    #[test]
    fn neighbouring_letters_do_not_touch() {
        if !text_enabled() || metrics().is_none() {
            assert!(!Path::new(DEFAULT_FONTS[0]).exists() || std::env::var_os(FONT_ENV).is_some());
            return;
        }
        // Without the side bearings "cl" renders as one blob and "class" reads "dass".
        for px in [12.0, 14.0, 16.0] {
            let runs = ink_runs("cl", px);
            assert_eq!(runs.len(), 2, "'c' and 'l' separate at {px} px: {runs:?}");
        }
        let runs = ink_runs("class", LABEL_PX);
        assert!(runs.len() >= 4, "c, l, a, s, s mostly separate: {runs:?}");
    }

    #[test]
    fn tick_labels_are_short() {
        let t = |v: f64| tick_label(&v);
        assert_eq!(t(20000.0), "20000");
        assert_eq!(t(0.35), "0.35");
        assert_eq!(t(0.1 + 0.2), "0.3");
        assert_eq!(t(-1.5), "-1.5");
        assert_eq!(t(0.0), "0");
        assert_eq!(t(-0.0000001), "-1.00e-7");
        assert_eq!(t(2.5e8), "2.50e8");
    }

    #[test]
    fn long_labels_are_shortened_to_fit() {
        if !text_enabled() {
            // Widths are all zero without a font, so there is nothing to shorten.
            assert_eq!(fit_text("abc", LABEL_PX, 1, false), "abc");
            return;
        }
        let long = "a very long class name that will not fit in the margin of the chart";
        let fitted = fit_text(long, LABEL_PX, 120, true);
        assert!(fitted.ends_with('…') && fitted.len() < long.len());
        assert!(text_size(&fitted, LABEL_PX, true).0 <= 120);
        assert_eq!(fit_text("fear", LABEL_PX, 120, true), "fear");
    }
}
