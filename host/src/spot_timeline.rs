//! One video's spotting on a time line (PNG): the spotter's contrast and the threshold it was held
//! against, the true intervals as shaded spans (micro and macro apart) and the spotted intervals as
//! bars along the top, true and false positives apart. Text as in [`crate::plots`].

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;
use plotters::style::FontTransform;
use plotters::style::text_anchor::HPos;

use crate::dataset::long_video::ExpressionKind;
use crate::plots::{
    DESC_PX, FAMILY, LABEL_PX, PAD, TITLE_PX, VAlign, blank_canvas, draw_err, ensure_png_path, fit_text, padded, put_text, text_enabled,
    text_size, tick_label, write_png,
};

const SIZE: (u32, u32) = (1400, 520);
const CONTRAST: RGBColor = RGBColor(40, 40, 40);
const THRESHOLD: RGBColor = RGBColor(214, 39, 40);
const TRUE_MICRO: RGBColor = RGBColor(44, 160, 44);
const TRUE_MACRO: RGBColor = RGBColor(255, 127, 14);
const SPOT_TP: RGBColor = RGBColor(31, 119, 180);
const SPOT_FP: RGBColor = RGBColor(227, 119, 194);
/// Opacity of the true spans, which lie under the lines.
const SPAN_ALPHA: f64 = 0.25;
/// Share of the plot's height taken by the bar of spotted intervals along its top.
const SPOT_BAND: f64 = 0.08;
const SWATCH: i32 = 24;

/// What one timeline shows; frame numbers are the video's, intervals inclusive.
#[derive(Debug, Clone)]
pub struct Timeline<'a> {
    pub title: String,
    pub fps: f64,
    /// The video's first and last frame numbers: the x range.
    pub frames: (i64, i64),
    /// (frame, contrast, threshold) of each decision, in frame order.
    pub signal: &'a [(i64, f32, f32)],
    pub truth: &'a [(i64, i64, ExpressionKind)],
    /// (onset, offset, matched a true interval).
    pub spots: &'a [(i64, i64, bool)],
}

/// Where things landed in pixels; tests sample colours there.
#[derive(Debug, Clone)]
pub(crate) struct TimelineDrawn {
    /// Centre of each spot's bar.
    #[cfg_attr(not(test), allow(dead_code))]
    pub spots: Vec<(i32, i32)>,
}

pub fn timeline_png(path: &Path, timeline: &Timeline) -> Result<()> {
    render(path, timeline, text_enabled()).map(|_| ())
}

/// Splits the signal where frames are not consecutive (faceless frames, a restart of spotting), so
/// no line bridges a stretch without decisions.
fn runs(signal: &[(i64, f32, f32)], fps: f64, unit: f64, pick: impl Fn(&(i64, f32, f32)) -> f32) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut last = None;
    for d in signal {
        let v = pick(d) as f64 / unit;
        if !v.is_finite() {
            last = None;
            continue;
        }
        if last.is_none_or(|l| d.0 != l + 1) {
            runs.push(Vec::new());
        }
        last = Some(d.0);
        runs.last_mut().expect("pushed above").push((d.0 as f64 / fps, v));
    }
    runs
}

pub(crate) fn render(path: &Path, t: &Timeline, text: bool) -> Result<TimelineDrawn> {
    ensure_png_path(path)?;
    let fps = if t.fps > 0.0 { t.fps } else { 1.0 };
    let x_lo = t.frames.0.min(t.frames.1) as f64 / fps;
    let x_hi = (t.frames.1.max(t.frames.0) + 1) as f64 / fps;
    let values = t.signal.iter().flat_map(|d| [d.1, d.2]).map(f64::from).filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // Zero (no change) stays in sight; no signal at all (no decisions yet) gives a unit range.
    let (lo, hi) = if lo <= hi { (lo.min(0.0), hi.max(0.0)) } else { (0.0, 1.0) };
    // Contrasts are small numbers (1e-4 for intensity features): drawn in units of a power of ten.
    let power = if hi > lo { lo.abs().max(hi.abs()).log10().floor() as i32 } else { 0 };
    let power = if (-2..=3).contains(&power) { 0 } else { power };
    let unit = 10f64.powi(power);
    let (y_lo, y_hi) = padded(lo / unit, hi / unit, 0.04);
    let decimals = (-((y_hi - y_lo) / 10.0).log10()).ceil().max(0.0) as usize;
    let y_tick = |v: &f64| {
        let text = format!("{v:.decimals$}");
        let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.') } else { &text };
        if text == "-0" { "0".to_string() } else { text.to_string() }
    };
    // Room above the data for the spotted intervals.
    let band = SPOT_BAND / (1.0 - SPOT_BAND) * (y_hi - y_lo);
    let y_top = y_hi + band;

    let entries: [(&str, RGBColor, bool); 6] = [
        ("contrast", CONTRAST, true),
        ("threshold", THRESHOLD, true),
        ("true micro", TRUE_MICRO, false),
        ("true macro", TRUE_MACRO, false),
        ("spotted: true positive", SPOT_TP, false),
        ("spotted: false positive", SPOT_FP, false),
    ];
    let legend_w = if text { SWATCH + 8 + entries.iter().map(|e| text_size(e.0, LABEL_PX, true).0).max().unwrap_or(0) + PAD } else { 0 };
    let title = fit_text(&t.title, TITLE_PX, SIZE.0 as i32 - 2 * PAD, text);
    let title_h = if text { PAD + text_size(&title, TITLE_PX, true).1 + 8 } else { 0 };

    let err = draw_err(path);
    let mut canvas = blank_canvas(SIZE);
    let drawn = {
        let root = BitMapBackend::with_buffer(&mut canvas, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let (head, body) = root.split_vertically(title_h);
        let (plot_area, legend_area) = body.split_horizontally(SIZE.0 as i32 - legend_w);
        if text {
            put_text(&head, &title, TITLE_PX, BLACK, HPos::Center, VAlign::Top, FontTransform::None, (SIZE.0 as i32 / 2, PAD))
                .map_err(&err)?;
        }
        let mut builder = ChartBuilder::on(&plot_area);
        builder.margin(PAD);
        if text {
            builder.x_label_area_size(52).y_label_area_size(78);
        }
        let mut chart = builder.build_cartesian_2d(x_lo..x_hi, y_lo..y_top).map_err(&err)?;
        {
            let mut mesh = chart.configure_mesh();
            mesh.light_line_style(TRANSPARENT).bold_line_style(RGBColor(225, 225, 225));
            if text {
                mesh.x_label_formatter(&tick_label).y_label_formatter(&y_tick).label_style((FAMILY, LABEL_PX));
            } else {
                mesh.x_labels(0).y_labels(0);
            }
            mesh.draw().map_err(&err)?;
        }
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        if text {
            let x_label = fit_text("time (s)", DESC_PX, xs.end - xs.start, true);
            let y_label = if power == 0 { "spotting contrast".to_string() } else { format!("spotting contrast (×1e{power})") };
            let y_label = fit_text(&y_label, DESC_PX, ys.end - ys.start, true);
            let at = ((xs.start + xs.end) / 2, ys.end + 30);
            put_text(&root, &x_label, DESC_PX, BLACK, HPos::Center, VAlign::Top, FontTransform::None, at).map_err(&err)?;
            put_text(&root, &y_label, DESC_PX, BLACK, HPos::Center, VAlign::Top, FontTransform::Rotate270, (PAD, (ys.start + ys.end) / 2))
                .map_err(&err)?;
        }

        let span = |onset: i64, offset: i64| (onset as f64 / fps, (offset + 1) as f64 / fps);
        for &(onset, offset, kind) in t.truth {
            let color = if kind == ExpressionKind::Micro { TRUE_MICRO } else { TRUE_MACRO };
            let (a, b) = span(onset, offset);
            chart.draw_series([Rectangle::new([(a, y_lo), (b, y_hi)], color.mix(SPAN_ALPHA).filled())]).map_err(&err)?;
        }
        for (pick, color) in [(0usize, THRESHOLD), (1, CONTRAST)] {
            let runs = runs(t.signal, fps, unit, |d| if pick == 0 { d.2 } else { d.1 });
            for run in runs {
                if run.len() == 1 {
                    chart.draw_series([Circle::new(run[0], 2, color.filled())]).map_err(&err)?;
                } else {
                    chart.draw_series(LineSeries::new(run, color.stroke_width(if pick == 0 { 2 } else { 1 }))).map_err(&err)?;
                }
            }
        }
        let mut spots = Vec::with_capacity(t.spots.len());
        for &(onset, offset, matched) in t.spots {
            let (a, b) = span(onset, offset);
            let color = if matched { SPOT_TP } else { SPOT_FP };
            let (bottom, top) = (y_hi + 0.15 * band, y_hi + 0.85 * band);
            chart.draw_series([Rectangle::new([(a, bottom), (b, top)], color.filled())]).map_err(&err)?;
            // The span's edges down through the plot, so a spot can be read against the true spans.
            for x in [a, b] {
                chart.draw_series([PathElement::new(vec![(x, y_lo), (x, bottom)], color.mix(0.6).stroke_width(1))]).map_err(&err)?;
            }
            spots.push(chart.backend_coord(&((a + b) / 2.0, (bottom + top) / 2.0)));
        }
        if text {
            let top = ys.start - title_h;
            for (i, (name, color, line)) in entries.iter().enumerate() {
                let y = top + 6 + i as i32 * 22;
                if *line {
                    legend_area.draw(&PathElement::new(vec![(0, y), (SWATCH, y)], color.stroke_width(2))).map_err(&err)?;
                } else {
                    let fill = if name.starts_with("true") { color.mix(SPAN_ALPHA + 0.2).filled() } else { color.filled() };
                    legend_area.draw(&Rectangle::new([(0, y - 6), (SWATCH, y + 6)], fill)).map_err(&err)?;
                }
                put_text(&legend_area, name, LABEL_PX, BLACK, HPos::Left, VAlign::Middle, FontTransform::None, (SWATCH + 8, y))
                    .map_err(&err)?;
            }
        }
        root.present().map_err(&err)?;
        TimelineDrawn { spots }
    };
    write_png(path, SIZE, canvas)?;
    Ok(drawn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::GenericImageView;

    #[test]
    fn spots_are_coloured_by_whether_they_matched_and_lines_break_at_gaps() {
        let signal: Vec<(i64, f32, f32)> = (10..200).filter(|f| !(90..95).contains(f)).map(|f| (f, (f as f32 * 0.1).sin(), 0.8)).collect();
        let r = runs(&signal, 50.0, 1.0, |d| d.1);
        assert_eq!(r.len(), 2, "faceless frames 90..95 split the line");
        assert_eq!((r[0].len(), r[1].len()), (80, 105));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        let truth = [(20, 30, ExpressionKind::Micro), (100, 160, ExpressionKind::Macro)];
        let spots = [(21, 31, true), (60, 70, false)];
        let t = Timeline { title: "clip F1 0.50".into(), fps: 50.0, frames: (0, 199), signal: &signal, truth: &truth, spots: &spots };
        for text in [false, text_enabled()] {
            let drawn = render(&path, &t, text).unwrap();
            let img = image::open(&path).unwrap();
            assert_eq!(img.dimensions(), SIZE);
            let at = |(x, y): (i32, i32)| {
                let p = img.get_pixel(x as u32, y as u32).0;
                RGBColor(p[0], p[1], p[2])
            };
            assert_eq!(at(drawn.spots[0]), SPOT_TP);
            assert_eq!(at(drawn.spots[1]), SPOT_FP);
        }
        // Nothing to draw but the axes still gives a picture.
        let empty = Timeline { title: String::new(), fps: 30.0, frames: (5, 5), signal: &[], truth: &[], spots: &[] };
        render(&path, &empty, false).unwrap();
        assert!(render(&dir.path().join("t.jpg"), &empty, false).is_err());
    }
}
