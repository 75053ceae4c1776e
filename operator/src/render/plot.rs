//! Draws a [`Figure`] (a title over a 2×2 grid of panels) with plotters, on any backend.
//!
//! Long series arrive already downsampled into buckets (min, max, mean); here they are reduced
//! once more to at most one column per pixel of the panel, drawn as the mean line over a light
//! min–max band, so a 100 000-round run draws as fast as a 2 000-round one and a single spike
//! stays visible. Every line is clipped to its panel's plotting area (Liang–Barsky) and bands are
//! clamped to it, so no panel's data spills into another.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::analysis::series::Bucket;

/// A colour as (r, g, b).
pub type Rgb = (u8, u8, u8);

/// The seed's colours (matplotlib's tab10), in order.
pub const PALETTE: [Rgb; 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];
/// Primary blue.
pub const BLUE: Rgb = PALETTE[0];
/// Orange.
pub const ORANGE: Rgb = PALETTE[1];
/// Green.
pub const GREEN: Rgb = PALETTE[2];
/// Red.
pub const RED: Rgb = PALETTE[3];
/// Purple.
pub const PURPLE: Rgb = PALETTE[4];

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Mean line over a min–max band.
    Line,
    /// Bars from zero (one per round while they fit, else per pixel column).
    Bars,
    /// A thin dashed line (expected values, references).
    Dashed,
}

/// One series of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Legend label.
    pub label: String,
    /// Colour.
    pub color: Rgb,
    /// The values.
    pub buckets: Vec<Bucket>,
    /// An explicit band: (lower series, upper series) — e.g. 10th and 90th percentiles.
    pub band: Option<(Vec<Bucket>, Vec<Bucket>)>,
    /// Drawing style.
    pub style: Style,
}

impl Line {
    /// A line of `buckets`.
    pub fn new(label: impl Into<String>, color: Rgb, buckets: &[Bucket]) -> Self {
        Self {
            label: label.into(),
            color,
            buckets: buckets.to_vec(),
            band: None,
            style: Style::Line,
        }
    }

    /// The same series drawn as `style`.
    pub fn styled(mut self, style: Style) -> Self {
        self.style = style;
        self
    }
}

/// Linear or logarithmic y axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Linear.
    Linear,
    /// Base-10 logarithmic (non-positive values are left out).
    Log,
}

/// A horizontal reference line (a target).
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// y value.
    pub y: f64,
    /// Legend label.
    pub label: String,
    /// Colour.
    pub color: Rgb,
}

/// One panel of a figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Title above the panel.
    pub title: String,
    /// x axis label.
    pub x_label: String,
    /// y axis label.
    pub y_label: String,
    /// y axis scale.
    pub scale: Scale,
    /// Fixed y range (before log); `None` = from the data.
    pub y_range: Option<(f64, f64)>,
    /// Fixed x range (raw x values, e.g. the run's first and last round); `None` = from the data.
    pub x_range: Option<(f64, f64)>,
    /// Whether the y axis starts at zero when autoscaled.
    pub y_from_zero: bool,
    /// Divide x values by this for display (e.g. 60 for minutes), after subtracting `x_origin`.
    pub x_unit: f64,
    /// Subtracted from x values (e.g. the first sample's Unix time).
    pub x_origin: f64,
    /// Series.
    pub lines: Vec<Line>,
    /// Horizontal reference lines.
    pub references: Vec<Reference>,
    /// Names for integer x positions (bars per client); empty = numeric axis.
    pub categories: Vec<String>,
    /// Shown instead of a plot when no series has a finite value.
    pub empty_message: String,
    /// Mark buckets holding non-finite values along the bottom edge.
    pub mark_non_finite: bool,
}

impl Panel {
    /// An empty panel with a title and axis labels.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            scale: Scale::Linear,
            y_range: None,
            x_range: None,
            y_from_zero: false,
            x_unit: 1.0,
            x_origin: 0.0,
            lines: Vec::new(),
            references: Vec::new(),
            categories: Vec::new(),
            empty_message: "no data reported".into(),
            mark_non_finite: false,
        }
    }

    fn has_data(&self) -> bool {
        self.lines
            .iter()
            .any(|l| l.buckets.iter().any(|b| b.count > 0 && self.usable(b.max)))
            || (self.mark_non_finite
                && self
                    .lines
                    .iter()
                    .any(|l| l.buckets.iter().any(|b| b.non_finite > 0)))
    }

    fn usable(&self, v: f64) -> bool {
        v.is_finite() && (self.scale == Scale::Linear || v > 0.0)
    }

    /// y as drawn: log10 on a log scale (None for non-positive values).
    fn y(&self, v: f64) -> Option<f64> {
        match self.scale {
            Scale::Linear => v.is_finite().then_some(v),
            Scale::Log => (v.is_finite() && v > 0.0).then(|| v.log10()),
        }
    }

    fn x(&self, v: f64) -> f64 {
        (v - self.x_origin) / self.x_unit
    }
}

/// A titled 2×2 grid of panels.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File stem (`training_progress`).
    pub name: &'static str,
    /// Title over the grid.
    pub title: String,
    /// Panels, row by row.
    pub panels: Vec<Panel>,
}

/// A figure could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("failed to draw figure {figure}: {message}")]
pub struct DrawError {
    /// Figure name.
    pub figure: String,
    /// What the backend reported.
    pub message: String,
}

/// Draws `figure` on `root`, which must already be cleared; sizes scale with the root's size
/// (1.0 at 1500×1000 px, the seed's figure at 100 dpi).
///
/// # Errors
/// What the backend reported.
pub fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, figure: &Figure) -> Result<(), DrawError>
where
    DB::ErrorType: 'static,
{
    let fail = |e: &dyn std::fmt::Display| DrawError {
        figure: figure.name.to_string(),
        message: e.to_string(),
    };
    let (w, h) = root.dim_in_pixel();
    let s = (f64::from(w) / 1500.0).min(f64::from(h) / 1000.0).max(0.2);
    let title_font = ("sans-serif", 26.0 * s).into_font().color(&BLACK);
    // The text backend draws tall glyphs about a quarter of the size above the anchor: leave room
    // so the title's top is not cut off.
    let body = root
        .margin(px(9.0 * s), 0, 0, 0)
        .titled(&figure.title, title_font)
        .map_err(|e| fail(&e))?;
    let areas = body.split_evenly((2, 2));
    for (area, panel) in areas.iter().zip(&figure.panels) {
        draw_panel(area, panel, s).map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

fn px(v: f64) -> u32 {
    v.round().max(1.0) as u32
}

/// Short tick labels: plain decimals with up to 4 significant digits, scientific when tiny or huge.
pub fn tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{v:.1e}");
        return s.replace(".0e", "e");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A panel's y axis: linear over `lo..hi` (in log10 units on a log panel), with ticks at round
/// values of what is drawn — on a log panel 0.01, 0.1, 1 or 0.2, 0.5, 1, never 10^0.2 = 1.585.
struct YAxis {
    inner: RangedCoordf64,
    log: bool,
}

impl YAxis {
    fn new(lo: f64, hi: f64, log: bool) -> Self {
        Self {
            inner: (lo..hi).into(),
            log,
        }
    }
}

impl Ranged for YAxis {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if !self.log {
            return self.inner.key_points(hint);
        }
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        let Range { start, end } = self.inner.range();
        log_ticks(start, end, hint.max_num_points())
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }
}

/// The value at `t` on a log axis, to 10 significant digits (so a tick at log10(0.001) reads
/// 0.001, not 0.000999…).
fn from_log(t: f64) -> f64 {
    format!("{:.9e}", 10f64.powf(t)).parse().unwrap_or(f64::NAN)
}

/// Tick positions, in log10 units, for a log axis over `lo..hi` (log10 units), at most `max`:
/// whole decades when three or more fit; else the sparsest of 1-2-5, 1-2-3-5 and 1…9 times a power
/// of ten that gives four ticks, or the densest that fits; else (the axis spans less than a digit)
/// round linear steps of the values themselves.
fn log_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    if max == 0 || !lo.is_finite() || !hi.is_finite() || hi <= lo {
        return Vec::new();
    }
    let in_range = |mantissas: &[f64]| -> Vec<f64> {
        let (first, last) = (lo.floor() as i32, hi.ceil() as i32);
        (first..=last)
            .flat_map(|decade| mantissas.iter().map(move |m| (m * 10f64.powi(decade)).log10()))
            .filter(|t| (lo..=hi).contains(t))
            .collect()
    };
    let decades = in_range(&[1.0]);
    if decades.len() >= 3 {
        let step = decades.len().div_ceil(max).max(1);
        return decades.into_iter().step_by(step).collect();
    }
    let mut best = decades;
    for mantissas in [
        &[1.0, 2.0, 5.0][..],
        &[1.0, 2.0, 3.0, 5.0],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
    ] {
        let ticks = in_range(mantissas);
        if ticks.len() > max {
            break;
        }
        let enough = ticks.len() >= 4;
        best = ticks;
        if enough {
            break;
        }
    }
    if best.len() >= 2 {
        return best;
    }
    let values = RangedCoordf64::from(10f64.powf(lo)..10f64.powf(hi)).key_points(max);
    values.into_iter().filter(|v| *v > 0.0).map(f64::log10).collect()
}

/// Range of the finite drawn values of a panel's series, bands and references.
fn y_extent(panel: &Panel) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    let mut see = |v: f64| {
        if let Some(y) = panel.y(v) {
            lo = lo.min(y);
            hi = hi.max(y);
        }
    };
    for line in &panel.lines {
        for b in line.buckets.iter().filter(|b| b.count > 0) {
            see(b.min);
            see(b.max);
        }
        if let Some((lower, upper)) = &line.band {
            lower.iter().filter(|b| b.count > 0).for_each(|b| see(b.min));
            upper.iter().filter(|b| b.count > 0).for_each(|b| see(b.max));
        }
    }
    for r in &panel.references {
        see(r.y);
    }
    lo.is_finite().then_some((lo, hi))
}

fn ranges(panel: &Panel) -> ((f64, f64), (f64, f64)) {
    let mut x0 = f64::INFINITY;
    let mut x1 = f64::NEG_INFINITY;
    for line in &panel.lines {
        if let (Some(first), Some(last)) = (line.buckets.first(), line.buckets.last()) {
            x0 = x0.min(panel.x(first.x_start));
            x1 = x1.max(panel.x(last.x_end));
        }
    }
    if let Some((a, b)) = panel.x_range {
        x0 = panel.x(a);
        x1 = panel.x(b);
    }
    if !panel.categories.is_empty() {
        x0 = -0.6;
        x1 = panel.categories.len() as f64 - 0.4;
    } else if panel.lines.iter().any(|l| l.style == Style::Bars) {
        x0 -= 0.5;
        x1 += 0.5;
    }
    if !x0.is_finite() || !x1.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    let (mut y0, mut y1) = match panel.y_range {
        Some((a, b)) => (panel.y(a).unwrap_or(0.0), panel.y(b).unwrap_or(1.0)),
        None => {
            let (lo, hi) = y_extent(panel).unwrap_or((0.0, 1.0));
            let (lo, hi) = if panel.y_from_zero && panel.scale == Scale::Linear {
                (lo.min(0.0), hi.max(0.0))
            } else {
                (lo, hi)
            };
            let pad = if hi - lo > 1e-12 * hi.abs().max(1e-300) {
                (hi - lo) * 0.05
            } else {
                hi.abs().max(1.0) * 0.1
            };
            let lo = if panel.y_from_zero && lo == 0.0 {
                0.0
            } else {
                lo - pad
            };
            (lo, hi + pad)
        }
    };
    if y1 - y0 < 1e-12 {
        (y0, y1) = (y0 - 0.5, y1 + 0.5);
    }
    ((x0, x1), (y0, y1))
}

/// One pixel column of a reduced series.
#[derive(Debug, Clone, Copy)]
struct Column {
    /// Pixel column index from the left edge of the plotting area.
    index: i64,
    x: f64,
    x_lo: f64,
    x_hi: f64,
    min: f64,
    max: f64,
    sum: f64,
    count: u32,
    non_finite: u32,
}

/// Reduces buckets to at most one column per pixel (`width` columns over `x0..x1`).
fn columns(panel: &Panel, buckets: &[Bucket], (x0, x1): (f64, f64), width: u32) -> Vec<Column> {
    let width = f64::from(width.max(1));
    let scale = width / (x1 - x0);
    let mut out: Vec<(i64, Column)> = Vec::with_capacity(buckets.len().min(width as usize * 2));
    for b in buckets {
        let xs = panel.x(b.x_start);
        let xe = panel.x(b.x_end);
        let xm = (xs + xe) / 2.0;
        let (min, max) = match (panel.y(b.min), panel.y(b.max)) {
            (Some(a), Some(c)) => (a, c),
            (None, Some(c)) => (c, c),
            _ => (f64::NAN, f64::NAN),
        };
        let mean = b.mean().and_then(|m| panel.y(m));
        let count = if mean.is_some() && min.is_finite() {
            b.count
        } else {
            0
        };
        let col = ((xm - x0) * scale).floor() as i64;
        let sum = mean.map_or(0.0, |m| m * f64::from(b.count));
        match out.last_mut() {
            Some((c, last)) if *c == col => {
                last.x_lo = last.x_lo.min(xs);
                last.x_hi = last.x_hi.max(xe);
                if count > 0 {
                    last.min = if last.count > 0 { last.min.min(min) } else { min };
                    last.max = if last.count > 0 { last.max.max(max) } else { max };
                    last.sum += sum;
                    last.count += count;
                }
                last.non_finite += b.non_finite;
            }
            _ => out.push((
                col,
                Column {
                    index: col,
                    x: xm,
                    x_lo: xs,
                    x_hi: xe,
                    min,
                    max,
                    sum,
                    count,
                    non_finite: b.non_finite,
                },
            )),
        }
    }
    out.into_iter()
        .map(|(_, mut c)| {
            if c.count > 0 && c.x_hi > c.x_lo {
                c.x = (c.x_lo + c.x_hi) / 2.0;
            }
            c
        })
        .collect()
}

/// A legend sample `len` pixels long as two segments: (0, end of the first) and (start of the
/// second, len). A dashed line's sample shows two dashes, so rx and tx, or a reference line,
/// are told apart in the legend; a solid one draws the same segment twice.
fn legend_dashes(len: i32, dashed: bool) -> (i32, i32) {
    if dashed {
        (len * 9 / 22, len * 14 / 22)
    } else {
        (len, 0)
    }
}

/// A line's points, one per column with data, and `None` where the line must break: a column
/// without data, or a hole in the data — consecutive columns further apart than 1.5 times the
/// series' usual step (its median) and more than two pixels — as when a client skipped rounds or
/// an agent was down for a while. Without the break the line would bridge the hole as if values
/// had been there.
fn line_points(cols: &[Column], x_per_pixel: f64) -> Vec<Option<(f64, f64)>> {
    let with_data: Vec<&Column> = cols.iter().filter(|c| c.count > 0).collect();
    let mut steps: Vec<f64> = with_data
        .windows(2)
        .map(|w| w[1].x_lo - w[0].x_hi)
        .filter(|d| d.is_finite())
        .collect();
    // The median without sorting: this runs for every line of every panel drawn.
    let mid = steps.len() / 2;
    let usual = if steps.is_empty() {
        0.0
    } else {
        *steps.select_nth_unstable_by(mid, f64::total_cmp).1
    }
    .max(0.0);
    let hole = (1.5 * usual).max(2.0 * x_per_pixel);
    let mut points = Vec::with_capacity(cols.len());
    let mut previous: Option<&Column> = None;
    for c in cols {
        if c.count == 0 {
            points.push(None);
            continue;
        }
        if previous.is_some_and(|p| c.x_lo - p.x_hi > hole) {
            points.push(None);
        }
        points.push(Some((c.x, c.sum / f64::from(c.count))));
        previous = Some(c);
    }
    points
}

/// Liang–Barsky: the part of segment p→q inside the rectangle, if any.
fn clip(
    p: (f64, f64),
    q: (f64, f64),
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> Option<((f64, f64), (f64, f64))> {
    let (dx, dy) = (q.0 - p.0, q.1 - p.1);
    let mut t0: f64 = 0.0;
    let mut t1: f64 = 1.0;
    for (pk, qk) in [(-dx, p.0 - x0), (dx, x1 - p.0), (-dy, p.1 - y0), (dy, y1 - p.1)] {
        if pk == 0.0 {
            if qk < 0.0 {
                return None;
            }
        } else {
            let r = qk / pk;
            if pk < 0.0 {
                t0 = t0.max(r);
            } else {
                t1 = t1.min(r);
            }
        }
    }
    (t0 <= t1).then_some(((p.0 + t0 * dx, p.1 + t0 * dy), (p.0 + t1 * dx, p.1 + t1 * dy)))
}

/// Splits a polyline with breaks (`None`) into runs clipped to the rectangle.
fn clipped_paths(points: &[Option<(f64, f64)>], xr: (f64, f64), yr: (f64, f64)) -> Vec<Vec<(f64, f64)>> {
    let mut paths: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    let inside = |p: (f64, f64)| p.0 >= xr.0 && p.0 <= xr.1 && p.1 >= yr.0 && p.1 <= yr.1;
    let mut prev: Option<(f64, f64)> = None;
    for point in points {
        match (prev, *point) {
            (_, None) => {
                if current.len() > 1 {
                    paths.push(std::mem::take(&mut current));
                }
                current.clear();
                prev = None;
            }
            (None, Some(p)) => {
                if inside(p) {
                    current.push(p);
                }
                prev = Some(p);
            }
            (Some(a), Some(b)) => {
                match clip(a, b, xr, yr) {
                    Some((c, d)) => {
                        if current.last() != Some(&c) {
                            if current.len() > 1 {
                                paths.push(std::mem::take(&mut current));
                            }
                            current.clear();
                            current.push(c);
                        }
                        current.push(d);
                        if d != b {
                            paths.push(std::mem::take(&mut current));
                        }
                    }
                    None => {
                        if current.len() > 1 {
                            paths.push(std::mem::take(&mut current));
                        }
                        current.clear();
                    }
                }
                prev = Some(b);
            }
        }
    }
    if current.len() > 1 {
        paths.push(current);
    }
    paths
}

fn rgb((r, g, b): Rgb) -> RGBColor {
    RGBColor(r, g, b)
}

/// A panel's layout at scale 1, in pixels: its margin, caption font and the label areas below and
/// left of the plotting area (shared by the chart and the legend's headroom estimate).
const MARGIN: f64 = 14.0;
const CAPTION_FONT: f64 = 19.0;
const X_LABEL_AREA: f64 = 48.0;
const Y_LABEL_AREA: f64 = 78.0;
/// Tick labels and legend entries.
const TICK_FONT: f64 = 13.0;
/// The legend's margin and the width of its line samples.
const LEGEND_MARGIN: f64 = 6.0;
const LEGEND_SAMPLE: f64 = 28.0;

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    s: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    DB::ErrorType: 'static,
{
    let ((x0, x1), yr) = ranges(panel);
    let (y0, y1) = legend_headroom(panel, area.dim_in_pixel(), s, (x0, x1), yr);
    let label_font = ("sans-serif", 15.0 * s).into_font();
    let tick_font = ("sans-serif", TICK_FONT * s).into_font();
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", CAPTION_FONT * s).into_font())
        .margin(px(MARGIN * s))
        .x_label_area_size(px(X_LABEL_AREA * s))
        .y_label_area_size(px(Y_LABEL_AREA * s))
        .build_cartesian_2d(x0..x1, YAxis::new(y0, y1, panel.scale == Scale::Log))?;
    let categories = &panel.categories;
    // Values within a millionth of the axis span of zero are zero (not -6.8e-21).
    let snap = |v: f64, span: f64| if v.abs() < span * 1e-6 { 0.0 } else { v };
    let x_fmt = |v: &f64| -> String {
        if categories.is_empty() {
            tick(snap(*v, x1 - x0))
        } else {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                categories.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
    };
    let log = panel.scale == Scale::Log;
    let y_fmt = |v: &f64| {
        if log {
            tick(from_log(*v))
        } else {
            tick(snap(*v, y1 - y0))
        }
    };
    // As many category names as fit side by side without overlapping.
    let (area_w, _) = area.dim_in_pixel();
    let longest = categories.iter().map(|c| c.chars().count()).max().unwrap_or(1) as f64;
    let fit = ((f64::from(area_w) - 110.0 * s) / ((longest + 2.0) * TICK_FONT * s * 0.62))
        .floor()
        .max(1.0) as usize;
    // A panel without data shows its message in a bare frame, not a made-up 0–1 scale.
    let empty = !panel.has_data();
    let x_labels = if empty {
        0
    } else if categories.is_empty() {
        8
    } else {
        categories.len().min(fit)
    };
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_labels(x_labels)
        .y_labels(if empty { 0 } else { 7 })
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(tick_font.clone())
        .axis_desc_style(label_font)
        // Major grid lines only, one pixel wide (plotters draws wider lines as polygons, which
        // made the grid the largest cost of a 4500×3000 figure); the seed's grid is major-only too.
        .bold_line_style(RGBColor(205, 205, 205).stroke_width(1))
        .max_light_lines(0)
        .axis_style(BLACK.stroke_width(px(s)))
        .set_all_tick_mark_size(px(6.0 * s))
        .draw()?;
    let (width, _) = chart.plotting_area().dim_in_pixel();
    let xr = (x0, x1);
    let yr = (y0, y1);
    if empty {
        let msg_font = ("sans-serif", 17.0 * s)
            .into_font()
            .color(&RGBColor(110, 110, 110))
            .pos(Pos::new(HPos::Center, VPos::Center));
        let center = ((x0 + x1) / 2.0, (y0 + y1) / 2.0);
        chart
            .plotting_area()
            .draw(&Text::new(panel.empty_message.clone(), center, msg_font))?;
        return Ok(());
    }
    let column_width = (x1 - x0) / f64::from(width.max(1));
    let clamp_y = |v: f64| v.clamp(y0, y1);
    let column_span = |index: i64| {
        let left = x0 + index as f64 * column_width;
        (left.max(x0), (left + column_width).min(x1))
    };
    let mut non_finite_marked = false;
    let mut legend = 0usize;
    for line in &panel.lines {
        let color = rgb(line.color);
        let cols = columns(panel, &line.buckets, xr, width);
        let shown_in_legend = legend < 10 && !line.label.is_empty();
        match line.style {
            Style::Bars => {
                let per_round =
                    line.buckets.iter().all(|b| b.points == 1) && cols.len() == line.buckets.len();
                let base = if log { y0 } else { 0.0f64.clamp(y0, y1) };
                // 70 % of the colour over white, opaque: blending every pixel of every bar was a
                // visible share of drawing a large figure.
                let (r, g, b) = line.color;
                let over_white = |c: u8| (255.0 - 0.7 * (255.0 - f64::from(c))).round() as u8;
                let bar_color = RGBColor(over_white(r), over_white(g), over_white(b));
                let bars: Vec<Rectangle<(f64, f64)>> = cols
                    .iter()
                    .filter(|c| c.count > 0)
                    .map(|c| {
                        // One bar per round while they fit; else a bucket wider than a few
                        // pixels keeps its own span (histogram bins), and narrower ones fill their
                        // pixel column edge to edge.
                        let (left, right) = if per_round {
                            (c.x - 0.4, c.x + 0.4)
                        } else if c.x_hi - c.x_lo > 2.0 * column_width {
                            (c.x_lo, c.x_hi)
                        } else {
                            column_span(c.index)
                        };
                        let (left, right) = (left.max(x0), right.min(x1));
                        let top = clamp_y(c.sum / f64::from(c.count));
                        Rectangle::new([(left, base), (right, top)], bar_color.filled())
                    })
                    .collect();
                let anno = chart.draw_series(bars)?;
                if shown_in_legend {
                    legend += 1;
                    let size = px(10.0 * s) as i32;
                    anno.label(line.label.clone()).legend(move |(x, y)| {
                        Rectangle::new(
                            [(x, y - size / 2), (x + 2 * size, y + size / 2)],
                            bar_color.filled(),
                        )
                    });
                }
            }
            Style::Line | Style::Dashed => {
                // The min–max band of downsampled buckets (or an explicit band).
                let mut band: Vec<Rectangle<(f64, f64)>> = Vec::new();
                // One rectangle per pixel column, edge to edge (overlaps would darken the band).
                if let Some((lower, upper)) = &line.band {
                    let hi: std::collections::HashMap<i64, Column> = columns(panel, upper, xr, width)
                        .into_iter()
                        .map(|c| (c.index, c))
                        .collect();
                    for l in columns(panel, lower, xr, width) {
                        if let Some(h) = hi.get(&l.index).filter(|h| h.count > 0 && l.count > 0) {
                            let (left, right) = column_span(l.index);
                            band.push(Rectangle::new(
                                [(left, clamp_y(l.min)), (right, clamp_y(h.max))],
                                color.mix(0.2).filled(),
                            ));
                        }
                    }
                } else {
                    for c in cols.iter().filter(|c| c.count > 0 && c.max > c.min) {
                        let (left, right) = column_span(c.index);
                        band.push(Rectangle::new(
                            [(left, clamp_y(c.min)), (right, clamp_y(c.max))],
                            color.mix(0.22).filled(),
                        ));
                    }
                }
                if !band.is_empty() {
                    chart.draw_series(band)?;
                }
                let points = line_points(&cols, (x1 - x0) / f64::from(width.max(1)));
                let paths = clipped_paths(&points, xr, yr);
                let width_px = if line.style == Style::Dashed {
                    px(1.6 * s)
                } else {
                    px(2.2 * s)
                };
                let style = color.stroke_width(width_px);
                let anno = if line.style == Style::Dashed {
                    let dash = px(8.0 * s);
                    let gap = px(5.0 * s);
                    chart.draw_series(
                        paths
                            .into_iter()
                            .map(|p| DashedPathElement::new(p, dash, gap, style)),
                    )?
                } else {
                    // Isolated points (a single round between gaps) get a dot.
                    let dots: Vec<(f64, f64)> = points
                        .iter()
                        .enumerate()
                        .filter_map(|(i, p)| {
                            let alone = i.checked_sub(1).is_none_or(|j| points[j].is_none())
                                && points.get(i + 1).is_none_or(|n| n.is_none());
                            p.filter(|q| alone && q.0 >= x0 && q.0 <= x1 && q.1 >= y0 && q.1 <= y1)
                        })
                        .collect();
                    if !dots.is_empty() {
                        chart.draw_series(
                            dots.into_iter()
                                .map(|p| Circle::new(p, px(2.5 * s), color.filled())),
                        )?;
                    }
                    // Segment by segment with round joins: plotters' thick paths join with
                    // unlimited miters, which shoot thin spikes far out of a zigzagging series.
                    let joints: Vec<(f64, f64)> = paths
                        .iter()
                        .flat_map(|p| p.iter().skip(1).take(p.len().saturating_sub(2)).copied())
                        .collect();
                    if width_px > 2 {
                        let radius = width_px / 2;
                        chart.draw_series(
                            joints.into_iter().map(|p| Circle::new(p, radius, color.filled())),
                        )?;
                    }
                    chart.draw_series(
                        paths
                            .iter()
                            .flat_map(|p| p.windows(2).map(|w| PathElement::new(vec![w[0], w[1]], style))),
                    )?
                };
                if shown_in_legend {
                    legend += 1;
                    let len = px(22.0 * s) as i32;
                    let (dash_end, next) = legend_dashes(len, line.style == Style::Dashed);
                    anno.label(line.label.clone()).legend(move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new(vec![(0, 0), (dash_end, 0)], style)
                            + PathElement::new(vec![(next, 0), (len, 0)], style)
                    });
                }
            }
        }
        if panel.mark_non_finite {
            let marks: Vec<Rectangle<(f64, f64)>> = cols
                .iter()
                .filter(|c| c.non_finite > 0)
                .map(|c| {
                    // At least three pixels wide, so a single NaN round shows.
                    let left = (x0 + (c.index - 1) as f64 * column_width).max(x0);
                    let right = (x0 + (c.index + 2) as f64 * column_width).min(x1);
                    Rectangle::new([(left, y0), (right, y0 + (y1 - y0) * 0.03)], rgb(RED).filled())
                })
                .collect();
            if !marks.is_empty() {
                let anno = chart.draw_series(marks)?;
                if !non_finite_marked {
                    non_finite_marked = true;
                    legend += 1;
                    let size = px(10.0 * s) as i32;
                    anno.label("non-finite (NaN/∞)").legend(move |(x, y)| {
                        Rectangle::new(
                            [(x, y - size / 3), (x + 2 * size, y + size / 3)],
                            rgb(RED).filled(),
                        )
                    });
                }
            }
        }
    }
    for r in &panel.references {
        if let Some(y) = panel.y(r.y).filter(|y| *y >= y0 && *y <= y1) {
            let style = rgb(r.color).stroke_width(px(1.6 * s));
            let (dash, gap) = (px(10.0 * s), px(6.0 * s));
            let anno = chart.draw_series(std::iter::once(DashedPathElement::new(
                vec![(x0, y), (x1, y)],
                dash,
                gap,
                style,
            )))?;
            legend += 1;
            let len = px(22.0 * s) as i32;
            let (dash_end, next) = legend_dashes(len, true);
            anno.label(r.label.clone()).legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (dash_end, 0)], style)
                    + PathElement::new(vec![(next, 0), (len, 0)], style)
            });
        }
    }
    if legend > 0 {
        let (entries, longest) = legend_entries(panel, (y0, y1));
        let size = legend_box(entries, longest, s, chart.plotting_area().dim_in_pixel());
        chart
            .configure_series_labels()
            .label_font(tick_font)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .margin(px(LEGEND_MARGIN * s))
            .legend_area_size(px(LEGEND_SAMPLE * s))
            .position(legend_corner(panel, (x0, x1), (y0, y1), size).0)
            .draw()?;
    }
    Ok(())
}

/// The legend's box as fractions of the plotting area (width, height), from its entries' count
/// and longest label: plotters stacks one row per entry, each a tick font's line high, after a
/// sample `legend_area_size` wide.
fn legend_box(entries: usize, longest_label: usize, s: f64, (w, h): (u32, u32)) -> (f64, f64) {
    let row = TICK_FONT * s * 1.3;
    let width = (LEGEND_SAMPLE + longest_label as f64 * TICK_FONT * 0.58 + 4.0 * LEGEND_MARGIN) * s;
    let height = entries as f64 * row + 4.0 * LEGEND_MARGIN * s;
    (
        (width / f64::from(w.max(1))).min(1.0),
        (height / f64::from(h.max(1))).min(1.0),
    )
}

/// How much data a legend box of `(fw, fh)` (fractions of the plotting area) hides in each corner
/// (upper right, upper left, lower right, lower left): lines count the points under the box, bars
/// the columns whose bar reaches into it, and a reference line the share of the box's width it
/// runs under.
fn legend_hidden(
    panel: &Panel,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    (fw, fh): (f64, f64),
) -> [f64; 4] {
    // Upper right, upper left, lower right, lower left, as in the order of the answer below.
    let corners = [(true, true), (true, false), (false, true), (false, false)];
    let under = |(upper, right): (bool, bool), fx: f64, (lo, hi): (f64, f64)| {
        let in_x = if right { fx >= 1.0 - fw } else { fx <= fw };
        let (box_lo, box_hi) = if upper { (1.0 - fh, 1.0) } else { (0.0, fh) };
        in_x && hi >= box_lo && lo <= box_hi
    };
    let frac_y = |v: f64| panel.y(v).map(|y| (y - y0) / (y1 - y0));
    let mut hidden = [0.0f64; 4];
    for line in &panel.lines {
        for b in line.buckets.iter().filter(|b| b.count > 0) {
            let fx = (panel.x(b.x_mid()) - x0) / (x1 - x0);
            let (Some(lo), Some(hi)) = (frac_y(b.min), frac_y(b.max)) else {
                continue;
            };
            let span = if line.style == Style::Bars {
                let base = if panel.scale == Scale::Log {
                    0.0
                } else {
                    (0.0 - y0) / (y1 - y0)
                };
                (lo.min(base), hi.max(base))
            } else {
                (lo, hi)
            };
            for (i, corner) in corners.iter().enumerate() {
                hidden[i] += f64::from(u8::from(under(*corner, fx, span)));
            }
        }
    }
    let points = panel.lines.iter().map(|l| l.buckets.len()).max().unwrap_or(0) as f64;
    for r in &panel.references {
        let Some(fy) = frac_y(r.y) else { continue };
        for (i, (upper, _)) in corners.iter().enumerate() {
            let (box_lo, box_hi) = if *upper { (1.0 - fh, 1.0) } else { (0.0, fh) };
            if (box_lo..=box_hi).contains(&fy) {
                hidden[i] += fw * points;
            }
        }
    }
    hidden
}

/// The corner whose legend hides the least data (upper right on ties), and how much it hides.
fn legend_corner(
    panel: &Panel,
    xr: (f64, f64),
    yr: (f64, f64),
    size: (f64, f64),
) -> (SeriesLabelPosition, f64) {
    let hidden = legend_hidden(panel, xr, yr, size);
    let best = (0..4)
        .min_by(|&a, &b| hidden[a].total_cmp(&hidden[b]).then(a.cmp(&b)))
        .unwrap_or(0);
    let corner = match best {
        1 => SeriesLabelPosition::UpperLeft,
        2 => SeriesLabelPosition::LowerRight,
        3 => SeriesLabelPosition::LowerLeft,
        _ => SeriesLabelPosition::UpperRight,
    };
    (corner, hidden[best])
}

/// The legend's entries and its longest label, as `draw_panel` will add them: the first ten
/// labelled lines, the non-finite marker, and the references on the axis.
fn legend_entries(panel: &Panel, (y0, y1): (f64, f64)) -> (usize, usize) {
    let mut labels: Vec<usize> = (panel.lines.iter())
        .filter(|l| !l.label.is_empty())
        .take(10)
        .map(|l| l.label.chars().count())
        .collect();
    if panel.mark_non_finite
        && panel
            .lines
            .iter()
            .any(|l| l.buckets.iter().any(|b| b.non_finite > 0))
    {
        labels.push("non-finite (NaN/∞)".chars().count());
    }
    for r in &panel.references {
        if panel.y(r.y).is_some_and(|y| y >= y0 && y <= y1) {
            labels.push(r.label.chars().count());
        }
    }
    (labels.len(), labels.into_iter().max().unwrap_or(0))
}

/// An autoscaled y axis raised so that the legend fits above the data when every corner would
/// hide some (at most doubling the span); a fixed range is kept.
fn legend_headroom(panel: &Panel, area: (u32, u32), s: f64, xr: (f64, f64), yr: (f64, f64)) -> (f64, f64) {
    let (entries, longest) = legend_entries(panel, yr);
    if entries == 0 || panel.y_range.is_some() || !panel.has_data() {
        return yr;
    }
    // The plotting area: the panel less its margins, caption and axis label areas.
    let plot = (
        (f64::from(area.0) - (2.0 * MARGIN + Y_LABEL_AREA) * s).max(1.0) as u32,
        (f64::from(area.1) - (2.0 * MARGIN + X_LABEL_AREA + CAPTION_FONT * 1.6) * s).max(1.0) as u32,
    );
    let size = legend_box(entries, longest, s, plot);
    if legend_corner(panel, xr, yr, size).1 == 0.0 {
        return yr;
    }
    let (y0, y1) = yr;
    (y0, y0 + (y1 - y0) / (1.0 - size.1 * 1.1).max(0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A column holding one round's value.
    fn round(r: f64, v: f64) -> Column {
        Column {
            index: r as i64,
            x: r,
            x_lo: r,
            x_hi: r,
            min: v,
            max: v,
            sum: v,
            count: 1,
            non_finite: 0,
        }
    }

    #[test]
    fn a_line_breaks_over_rounds_without_data_and_bridges_none_else() {
        // A client that took part in rounds 1-7 and 13-15 (offline for 8-12).
        let cols: Vec<Column> = (1..=7).chain(13..=15).map(|r| round(f64::from(r), 0.5)).collect();
        let points = line_points(&cols, 0.05);
        let breaks: Vec<usize> = points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.is_none().then_some(i))
            .collect();
        assert_eq!(breaks, [7], "one break, between rounds 7 and 13: {points:?}");
        assert_eq!(clipped_paths(&points, (0.0, 16.0), (0.0, 1.0)).len(), 2);
        // Every round there: one unbroken line.
        let cols: Vec<Column> = (1..=15).map(|r| round(f64::from(r), 0.5)).collect();
        assert!(line_points(&cols, 0.05).iter().all(Option::is_some));
        // Dense data, many points a pixel: columns a pixel apart are no hole.
        let cols: Vec<Column> = (0..100).map(|i| round(f64::from(i) * 10.0, 0.5)).collect();
        assert!(line_points(&cols, 10.0).iter().all(Option::is_some));
    }

    #[test]
    fn a_segment_leaving_the_area_is_cut_at_its_edge() {
        let cut = clip((0.0, 0.5), (2.0, 0.5), (0.0, 1.0), (0.0, 1.0));
        assert_eq!(cut, Some(((0.0, 0.5), (1.0, 0.5))));
        assert_eq!(clip((2.0, 2.0), (3.0, 3.0), (0.0, 1.0), (0.0, 1.0)), None);
    }

    #[test]
    fn a_polyline_through_a_spike_is_split_into_inside_runs() {
        let points = [
            Some((0.0, 0.5)),
            Some((1.0, 5.0)),
            Some((2.0, 0.5)),
            None,
            Some((3.0, 0.5)),
            Some((4.0, 0.6)),
        ];
        let paths = clipped_paths(&points, (0.0, 4.0), (0.0, 1.0));
        assert_eq!(paths.len(), 3, "{paths:?}");
        assert!(paths.iter().flatten().all(|p| p.1 <= 1.0 && p.1 >= 0.0));
    }

    fn series(points: &[(f64, f64)]) -> Vec<Bucket> {
        let mut s = crate::analysis::series::Series::new(1000);
        for &(x, v) in points {
            s.push(x, v);
        }
        s.buckets().to_vec()
    }

    #[test]
    fn a_tall_legend_goes_where_its_own_box_hides_nothing() {
        // x and y from 0 to 100. One line runs along the middle of the right edge, where every
        // quarter-based count misses it but a tall legend on the right would cover it; another
        // sits in the upper left quarter, but away from the corner a narrow legend takes.
        let mut panel = Panel::new("t", "x", "y");
        panel.y_range = Some((0.0, 100.0));
        panel.x_range = Some((0.0, 100.0));
        let right_middle: Vec<(f64, f64)> = (85..=100).map(|x| (f64::from(x), 50.0)).collect();
        let upper_left: Vec<(f64, f64)> = (30..=44).map(|x| (f64::from(x), 90.0)).collect();
        panel.lines.push(Line::new("right", BLUE, &series(&right_middle)));
        panel.lines.push(Line::new("left", GREEN, &series(&upper_left)));
        let corner = |p: &Panel, size| legend_corner(p, (0.0, 100.0), (0.0, 100.0), size).0;
        let tall = (0.2, 0.7);
        assert_eq!(corner(&panel, tall), SeriesLabelPosition::UpperLeft);
        // A short, wide legend covers the upper left line and nothing in the lower right.
        let wide = (0.5, 0.2);
        assert_eq!(corner(&panel, wide), SeriesLabelPosition::UpperRight);
        // A target line along the top counts against both upper corners.
        panel.references.push(Reference {
            y: 95.0,
            label: "target".into(),
            color: RED,
        });
        assert_eq!(corner(&panel, wide), SeriesLabelPosition::LowerRight);
        // Bars reach down to zero: a legend in a lower corner would cover them.
        let mut bars = Panel::new("b", "x", "y");
        bars.y_range = Some((0.0, 100.0));
        bars.x_range = Some((0.0, 100.0));
        let tall_bars: Vec<(f64, f64)> = (0..=30).map(|x| (f64::from(x), 40.0)).collect();
        bars.lines
            .push(Line::new("bars", PURPLE, &series(&tall_bars)).styled(Style::Bars));
        let short = (0.2, 0.2);
        assert_eq!(corner(&bars, short), SeriesLabelPosition::UpperRight);
        bars.lines[0].buckets = series(&(70..=100).map(|x| (f64::from(x), 60.0)).collect::<Vec<_>>());
        assert_eq!(corner(&bars, short), SeriesLabelPosition::UpperRight);
        let low_right = (0.2, 0.5);
        assert_eq!(corner(&bars, low_right), SeriesLabelPosition::UpperLeft);
    }

    #[test]
    fn an_autoscaled_axis_makes_room_for_a_legend_that_would_hide_data_in_every_corner() {
        // Two busy lines across the whole width, high and low: no corner is free.
        let mut panel = Panel::new("t", "x", "y");
        let high: Vec<(f64, f64)> = (0..=100)
            .map(|x| (f64::from(x), 9.0 + f64::from(x % 2)))
            .collect();
        let low: Vec<(f64, f64)> = (0..=100).map(|x| (f64::from(x), f64::from(x % 2))).collect();
        panel.lines.push(Line::new("high", BLUE, &series(&high)));
        panel.lines.push(Line::new("low", GREEN, &series(&low)));
        let area = (700, 450);
        let (xr, yr) = ranges(&panel);
        let raised = legend_headroom(&panel, area, 1.0, xr, yr);
        assert_eq!(raised.0, yr.0, "the bottom stays");
        assert!(raised.1 > yr.1, "the top is raised: {yr:?} → {raised:?}");
        let (entries, longest) = legend_entries(&panel, raised);
        let plot = (700 - 106, 450 - 106);
        let size = legend_box(entries, longest, 1.0, plot);
        assert_eq!(
            legend_corner(&panel, xr, raised, size),
            (SeriesLabelPosition::UpperRight, 0.0)
        );
        // A panel whose legend already has a free corner, or whose range is fixed, keeps its axis.
        panel.lines = vec![Line::new("low", GREEN, &series(&low[..40]))];
        panel.x_range = Some((0.0, 100.0));
        let (xr, yr) = ranges(&panel);
        assert_eq!(legend_headroom(&panel, area, 1.0, xr, yr), yr);
        panel.lines.push(Line::new("high", BLUE, &series(&high)));
        panel.y_range = Some((0.0, 10.0));
        let (xr, yr) = ranges(&panel);
        assert_eq!(legend_headroom(&panel, area, 1.0, xr, yr), yr);
    }

    #[test]
    fn log_axis_ticks_are_round_values() {
        let labels = |lo: f64, hi: f64| -> Vec<String> {
            log_ticks(lo.log10(), hi.log10(), 7)
                .into_iter()
                .map(|t| tick(from_log(t)))
                .collect()
        };
        // Several decades: one tick a decade, or every other decade when they do not fit.
        assert_eq!(labels(0.0008, 2.5), ["0.001", "0.01", "0.1", "1"]);
        assert_eq!(
            labels(1e-9, 2e3),
            ["1e-9", "1e-7", "1e-5", "0.001", "0.1", "10", "1000"]
        );
        // About a decade: 1-2-5 steps.
        assert_eq!(labels(0.04, 2.2), ["0.05", "0.1", "0.2", "0.5", "1", "2"]);
        // Less than a decade, where every digit is too many: 1-2-3-5.
        assert_eq!(labels(0.22, 1.4), ["0.3", "0.5", "1"]);
        // Less than a decade: every digit.
        assert_eq!(
            labels(0.25, 0.95),
            ["0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
        );
        // A narrow range: round linear steps, never powers like 10^0.2 = 1.585.
        let narrow = labels(0.612, 0.689);
        assert!(narrow.len() >= 3, "{narrow:?}");
        assert!(
            narrow.iter().all(|l| l.len() <= 4 && l.starts_with("0.6")),
            "{narrow:?}"
        );
        assert!(log_ticks(0.0, 1.0, 0).is_empty());
        assert!(log_ticks(f64::NAN, 1.0, 7).is_empty());
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(1500.0), "1500");
        assert_eq!(tick(0.000_23), "2.3e-4");
        assert_eq!(tick(2_500_000.0), "2.5e6");
        assert_eq!(tick(97.5), "97.5");
    }
}
