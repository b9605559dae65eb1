//! Dependency-free SVG charts: line charts (optionally with shaded bands and log axes) and
//! grouped bar charts. The output is plain SVG 1.1 text, so the same string can be written as
//! a file next to the Markdown report and inlined verbatim into the HTML one.
//!
//! Non-finite values (a diverged run's NaN loss, an unmeasured throughput) and values a log
//! axis cannot show (≤ 0) are skipped rather than poisoning the axis range; a chart with
//! nothing left to draw says "no data".

use std::collections::BTreeMap;
use std::fmt::Write;

/// Colours of successive series or bar labels: the Okabe–Ito palette, distinguishable with
/// the common colour-vision deficiencies (its yellow, hard to see on white, is left out).
pub const PALETTE: [&str; 7] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
/// Rough advance of one character at the 12 px label font, for layout (no font metrics here).
const CHAR_WIDTH: f64 = 7.0;
const MARKER_COLOUR: &str = "#B00020";
const REFERENCE_COLOUR: &str = "#444";

/// One line of a [`LineChart`].
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    /// (x, y), drawn in the given order; a point that cannot be drawn breaks the line.
    pub points: Vec<(f64, f64)>,
    /// (x, lo, hi): a shaded band around the line (spread across seeds); may be empty.
    pub band: Vec<(f64, f64, f64)>,
}

#[derive(Clone, Debug, Default)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub y_log: bool,
    pub series: Vec<Series>,
    /// Labelled points, e.g. ("dense OOM", 8192, NaN). A marker whose y is not finite marks
    /// an x where there is no value (out of memory): it is drawn on the top edge.
    pub markers: Vec<(String, f64, f64)>,
}

#[derive(Clone, Debug, Default)]
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    /// (group label, bars as (bar label, value)). Bars with the same label share a colour.
    pub groups: Vec<(String, Vec<(String, f64)>)>,
    /// A horizontal dashed line, e.g. ("even load 1/8", 0.125).
    pub reference: Option<(String, f64)>,
}

// ---------------------------------------------------------------------------------------------
// Line chart
// ---------------------------------------------------------------------------------------------

/// Renders a line chart as a standalone SVG document.
pub fn line_chart(c: &LineChart) -> String {
    let x_ok = |v: f64| drawable(v, c.x_log);
    let y_ok = |v: f64| drawable(v, c.y_log);
    let point_ok = |&(x, y): &(f64, f64)| x_ok(x) && y_ok(y);
    let band_ok = |&(x, lo, hi): &(f64, f64, f64)| x_ok(x) && y_ok(lo) && y_ok(hi);

    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for s in &c.series {
        for &(x, y) in s.points.iter().filter(|p| point_ok(p)) {
            xs.push(x);
            ys.push(y);
        }
        for &(x, lo, hi) in s.band.iter().filter(|b| band_ok(b)) {
            xs.extend([x, x]);
            ys.extend([lo, hi]);
        }
    }
    let markers: Vec<&(String, f64, f64)> = c.markers.iter().filter(|m| x_ok(m.1)).collect();
    xs.extend(markers.iter().map(|m| m.1));
    ys.extend(markers.iter().map(|m| m.2).filter(|&y| y_ok(y)));
    if xs.is_empty() {
        return no_data(&c.title);
    }

    let names: Vec<&str> = c.series.iter().map(|s| s.name.as_str()).collect();
    let legend = LegendEntry::palette(&names, Swatch::Line);
    let frame = Frame::new(legend_width(&legend), 56.0);
    let x = Scale::fit(&xs, c.x_log);
    let y = Scale::fit(&ys, c.y_log);
    let mut svg = Svg::new(&c.title);
    draw_axes(&mut svg, &frame, &x, &y, &c.x_label, &c.y_label);

    for (i, s) in c.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let band: Vec<(f64, f64, f64)> = s.band.iter().copied().filter(|b| band_ok(b)).collect();
        if band.len() >= 2 {
            svg.band(&frame, &x, &y, &band, colour);
        }
        svg.polyline(&frame, &x, &y, &s.points, &point_ok, colour);
        let shown: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| point_ok(p)).collect();
        if shown.len() <= 40 {
            for (px, py) in shown {
                svg.dot(frame.x(&x, px), frame.y(&y, py), colour);
            }
        }
    }
    draw_markers(&mut svg, &frame, &x, &y, &markers);
    draw_legend(&mut svg, &frame, &legend);
    svg.finish()
}

/// Whether `v` can be placed on an axis (finite, and positive on a log axis).
fn drawable(v: f64, log: bool) -> bool {
    v.is_finite() && (!log || v > 0.0)
}

/// Draws labelled crosses; markers without a y value stack downwards along the top edge.
fn draw_markers(svg: &mut Svg, frame: &Frame, x: &Scale, y: &Scale, markers: &[&(String, f64, f64)]) {
    let mut stacked_at: BTreeMap<i64, usize> = BTreeMap::new();
    for (label, mx, my) in markers.iter().map(|m| (&m.0, m.1, m.2)) {
        let px = frame.x(x, mx);
        let py = if drawable(my, y.log) && y.contains(my) {
            frame.y(y, my)
        } else {
            let slot = stacked_at.entry(px.round() as i64).or_insert(0);
            *slot += 1;
            frame.top + 8.0 + 16.0 * (*slot - 1) as f64
        };
        let room_right = frame.right() - px;
        svg.cross(px, py, label, text_width(label) + 10.0 > room_right);
    }
}

// ---------------------------------------------------------------------------------------------
// Bar chart
// ---------------------------------------------------------------------------------------------

/// Renders a grouped bar chart as a standalone SVG document.
pub fn bar_chart(c: &BarChart) -> String {
    let values: Vec<f64> =
        c.groups.iter().flat_map(|g| g.1.iter().map(|b| b.1)).filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return no_data(&c.title);
    }
    let labels = distinct_bar_labels(c);
    let colour_of = |label: &str| {
        let i = labels.iter().position(|l| *l == label).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    };

    let group_width_guess = (WIDTH - 300.0) / c.groups.len() as f64;
    let rotate_labels = c.groups.iter().any(|g| text_width(&g.0) > group_width_guess - 4.0);
    let label_names: Vec<&str> = labels.iter().map(String::as_str).collect();
    // With one kind of bar, the title and axis already say what it is.
    let mut legend =
        if labels.len() > 1 { LegendEntry::palette(&label_names, Swatch::Block) } else { Vec::new() };
    let reference = c.reference.as_ref().filter(|r| r.1.is_finite());
    if let Some((name, _)) = reference {
        legend.push(LegendEntry { name, colour: REFERENCE_COLOUR, swatch: Swatch::Dashed });
    }
    let frame = Frame::new(legend_width(&legend), if rotate_labels { 90.0 } else { 56.0 });

    let mut range = values.clone();
    range.push(0.0);
    range.extend(reference.map(|r| r.1));
    let y = Scale::fit(&range, false);
    let mut svg = Svg::new(&c.title);
    draw_y_axis(&mut svg, &frame, &y, &c.y_label);
    svg.line(frame.left, frame.bottom(), frame.right(), frame.bottom(), "#333", 1.0, None);

    let group_width = frame.width / c.groups.len() as f64;
    let max_bars = c.groups.iter().map(|g| g.1.len()).max().unwrap_or(1).max(1);
    let bar_width = 0.8 * group_width / max_bars as f64;
    let zero = frame.y(&y, 0.0);
    for (g, (group, bars)) in c.groups.iter().enumerate() {
        let centre = frame.left + (g as f64 + 0.5) * group_width;
        let start = centre - 0.5 * bar_width * bars.len() as f64;
        for (b, (label, v)) in bars.iter().enumerate() {
            if v.is_finite() {
                let top = frame.y(&y, *v);
                let x0 = start + b as f64 * bar_width;
                svg.bar(x0, top.min(zero), bar_width, (top - zero).abs(), colour_of(label), label, *v);
            }
        }
        svg.axis_label(centre, frame.bottom() + 16.0, group, rotate_labels);
    }
    // Drawn over the bars, and named in the legend rather than on the plot, where a label
    // would collide with the bars it crosses.
    if let Some((_, v)) = reference {
        let py = frame.y(&y, *v);
        svg.line(frame.left, py, frame.right(), py, REFERENCE_COLOUR, 1.5, Some("6 4"));
    }
    draw_legend(&mut svg, &frame, &legend);
    svg.finish()
}

/// Bar labels in first-seen order: each gets one colour across all groups.
fn distinct_bar_labels(c: &BarChart) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for (label, _) in c.groups.iter().flat_map(|g| &g.1) {
        if !labels.contains(label) {
            labels.push(label.clone());
        }
    }
    labels
}

// ---------------------------------------------------------------------------------------------
// Layout: plot frame, axes, legend
// ---------------------------------------------------------------------------------------------

/// The plot area inside the fixed-size canvas, leaving room for the title, tick labels, axis
/// labels and a legend on the right.
struct Frame {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

impl Frame {
    fn new(legend_width: f64, bottom_margin: f64) -> Self {
        let (left, top, right_margin) = (76.0, 44.0, 24.0 + legend_width);
        Self { left, top, width: WIDTH - left - right_margin, height: HEIGHT - top - bottom_margin }
    }

    fn right(&self) -> f64 {
        self.left + self.width
    }

    fn bottom(&self) -> f64 {
        self.top + self.height
    }

    fn x(&self, scale: &Scale, v: f64) -> f64 {
        self.left + scale.fraction(v) * self.width
    }

    fn y(&self, scale: &Scale, v: f64) -> f64 {
        self.bottom() - scale.fraction(v) * self.height
    }
}

fn draw_axes(svg: &mut Svg, frame: &Frame, x: &Scale, y: &Scale, x_label: &str, y_label: &str) {
    draw_y_axis(svg, frame, y, y_label);
    let max_label = x.ticks.iter().map(|t| text_width(&t.1)).fold(0.0, f64::max);
    let every = thinning(x.ticks.len(), frame.width, max_label + 10.0);
    for (i, (v, label)) in x.ticks.iter().enumerate() {
        let px = frame.x(x, *v);
        svg.line(px, frame.top, px, frame.bottom(), "#e6e6e6", 1.0, None);
        svg.line(px, frame.bottom(), px, frame.bottom() + 4.0, "#333", 1.0, None);
        if i % every == 0 {
            svg.text(px, frame.bottom() + 17.0, "middle", "#333", label);
        }
    }
    svg.line(frame.left, frame.bottom(), frame.right(), frame.bottom(), "#333", 1.0, None);
    svg.text(frame.left + frame.width / 2.0, frame.bottom() + 40.0, "middle", "#111", x_label);
}

fn draw_y_axis(svg: &mut Svg, frame: &Frame, y: &Scale, y_label: &str) {
    let every = thinning(y.ticks.len(), frame.height, 18.0);
    for (i, (v, label)) in y.ticks.iter().enumerate() {
        let py = frame.y(y, *v);
        svg.line(frame.left, py, frame.right(), py, "#e6e6e6", 1.0, None);
        svg.line(frame.left - 4.0, py, frame.left, py, "#333", 1.0, None);
        if i % every == 0 {
            svg.text(frame.left - 7.0, py + 4.0, "end", "#333", label);
        }
    }
    svg.line(frame.left, frame.top, frame.left, frame.bottom(), "#333", 1.0, None);
    svg.rotated_text(18.0, frame.top + frame.height / 2.0, y_label);
}

/// Label every `n`-th tick so that labels `label_size` apart fit in `length` pixels.
fn thinning(ticks: usize, length: f64, label_size: f64) -> usize {
    let fit = (length / label_size).floor().max(1.0) as usize;
    ticks.div_ceil(fit).max(1)
}

#[derive(Clone, Copy)]
enum Swatch {
    Line,
    Block,
    Dashed,
}

/// One legend row: a swatch in the colour of what it names.
struct LegendEntry<'a> {
    name: &'a str,
    colour: &'a str,
    swatch: Swatch,
}

impl<'a> LegendEntry<'a> {
    /// Entries for `names` in palette order.
    fn palette(names: &[&'a str], swatch: Swatch) -> Vec<Self> {
        names
            .iter()
            .enumerate()
            .map(|(i, &name)| Self { name, colour: PALETTE[i % PALETTE.len()], swatch })
            .collect()
    }
}

const LEGEND_MAX_CHARS: usize = 24;
const LEGEND_MAX_ENTRIES: usize = 16;

fn legend_width(entries: &[LegendEntry]) -> f64 {
    let longest = entries.iter().map(|e| e.name.chars().count().min(LEGEND_MAX_CHARS)).max().unwrap_or(0);
    if longest == 0 { 0.0 } else { 34.0 + CHAR_WIDTH * longest as f64 }
}

fn draw_legend(svg: &mut Svg, frame: &Frame, entries: &[LegendEntry]) {
    let x = frame.right() + 16.0;
    for (i, entry) in entries.iter().take(LEGEND_MAX_ENTRIES).enumerate() {
        let y = frame.top + 8.0 + 18.0 * i as f64;
        match entry.swatch {
            Swatch::Line => svg.line(x, y, x + 20.0, y, entry.colour, 3.0, None),
            Swatch::Dashed => svg.line(x, y, x + 20.0, y, entry.colour, 1.5, Some("5 3")),
            Swatch::Block => svg.block_swatch(x, y, entry.colour),
        }
        svg.text(x + 26.0, y + 4.0, "start", "#111", &truncate(entry.name, LEGEND_MAX_CHARS));
    }
    if entries.len() > LEGEND_MAX_ENTRIES {
        let y = frame.top + 8.0 + 18.0 * LEGEND_MAX_ENTRIES as f64;
        svg.text(x, y + 4.0, "start", "#555", &format!("… {} more", entries.len() - LEGEND_MAX_ENTRIES));
    }
}

fn text_width(s: &str) -> f64 {
    CHAR_WIDTH * s.chars().count() as f64
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let kept: String = s.chars().take(max_chars - 1).collect();
        format!("{kept}…")
    }
}

/// A chart with nothing to draw: the title and "no data".
fn no_data(title: &str) -> String {
    let mut svg = Svg::new(title);
    svg.text(WIDTH / 2.0, HEIGHT / 2.0, "middle", "#777", "no data");
    svg.finish()
}

// ---------------------------------------------------------------------------------------------
// Scales and ticks
// ---------------------------------------------------------------------------------------------

/// An axis: its domain (snapped outwards to ticks) and its labelled ticks.
#[derive(Clone, Debug)]
struct Scale {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<(f64, String)>,
}

impl Scale {
    /// A scale covering every drawable value of `values`.
    fn fit(values: &[f64], log: bool) -> Self {
        let shown: Vec<f64> = values.iter().copied().filter(|&v| drawable(v, log)).collect();
        if log && let Some(scale) = Self::powers_of_two(&shown) {
            return scale;
        }
        let (min, max) =
            shown.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let (min, max) = if min > max { if log { (1.0, 10.0) } else { (0.0, 1.0) } } else { (min, max) };
        let ticks = if log { log_ticks(min, max) } else { nice_ticks(min, max, 6) };
        let lo = ticks.first().copied().unwrap_or(min).min(min);
        let hi = ticks.last().copied().unwrap_or(max).max(max);
        let labels = label_ticks(&ticks, log);
        Self { lo, hi, log, ticks: ticks.into_iter().zip(labels).collect() }
    }

    /// A log scale ticked at powers of two, when every value is one (sequence lengths, batch
    /// sizes): ticks then fall on the measured points instead of on decades between them.
    /// The domain reaches a quarter of a doubling beyond the data, so end points are not
    /// drawn on the frame.
    fn powers_of_two(values: &[f64]) -> Option<Self> {
        let exponents: Vec<i32> = values.iter().map(|&v| power_of_two_exponent(v)).collect::<Option<_>>()?;
        let (&first, &last) = (exponents.iter().min()?, exponents.iter().max()?);
        if last - first < 2 {
            return None;
        }
        let stride = ((last - first) as usize + 1).div_ceil(10);
        let ticks = (first..last + stride as i32).step_by(stride).map(|e| {
            let v = 2f64.powi(e);
            (v, power_of_two_label(v))
        });
        let ticks: Vec<(f64, String)> = ticks.collect();
        let hi = ticks.last().map_or(2f64.powi(last), |t| t.0).max(2f64.powi(last));
        Some(Self { lo: 2f64.powf(first as f64 - 0.25), hi: hi * 2f64.powf(0.25), log: true, ticks })
    }

    /// Position of `v` along the axis, 0 at `lo` and 1 at `hi`.
    fn fraction(&self, v: f64) -> f64 {
        if self.log {
            (v.ln() - self.lo.ln()) / (self.hi.ln() - self.lo.ln())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    fn contains(&self, v: f64) -> bool {
        v >= self.lo && v <= self.hi
    }
}

/// About `target` evenly spaced ticks at multiples of 1, 2 or 5 × 10^k, the first at or below
/// `lo` and the last at or above `hi` (so they also give the axis its padded domain).
/// A degenerate range (`lo == hi`) is widened around the value.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
        (lo - pad, hi + pad)
    };
    let step = nice_step((hi - lo) / target.max(1) as f64);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    // k · step rather than repeated addition, so ticks do not accumulate rounding error.
    (first..=last).map(|k| snap(k as f64 * step, step)).collect()
}

/// The 1, 2 or 5 × 10^k nearest `raw` (Heckbert, "Nice numbers for graph labels", Graphics
/// Gems 1990): rounding rather than rounding up keeps the tick count near the target.
fn nice_step(raw: f64) -> f64 {
    let magnitude = 10f64.powf(raw.log10().floor());
    let f = raw / magnitude;
    let m = if f < 1.5 {
        1.0
    } else if f < 3.0 {
        2.0
    } else if f < 7.0 {
        5.0
    } else {
        10.0
    };
    m * magnitude
}

/// Rounds away the last bits of error of `k · step` (0.1 · 3 = 0.30000000000000004).
fn snap(v: f64, step: f64) -> f64 {
    let decimals = (-step.log10().floor()).max(0.0) as i32 + 1;
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// Ticks for a log axis over [`lo`, `hi`] (both > 0): of decades, 1-2-5 multiples and every
/// integer multiple, the coarsest set giving a tick count nearest six (3 to 10 ticks); decades
/// when the range spans more than ten of them; linear ticks when it is too narrow for any.
/// The first tick is at or below `lo` and the last at or above `hi`.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    const TARGET: usize = 6;
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo / 2.0, hi * 2.0) };
    let decades = enclosing_log_ticks(lo, hi, &[1.0]);
    let candidates = [
        decades.clone(),
        enclosing_log_ticks(lo, hi, &[1.0, 2.0, 5.0]),
        enclosing_log_ticks(lo, hi, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]),
    ];
    let best = candidates
        .into_iter()
        .filter(|t| (3..=10).contains(&t.len()))
        .min_by_key(|t| t.len().abs_diff(TARGET));
    match best {
        Some(ticks) => ticks,
        None if decades.len() > 10 => decades,
        None => {
            let mut ticks: Vec<f64> = nice_ticks(lo, hi, 4).into_iter().filter(|&t| t > 0.0).collect();
            if ticks.first().is_none_or(|&t| t > lo) {
                ticks.insert(0, lo);
            }
            ticks
        }
    }
}

/// The candidates `m · 10^e` between the largest one ≤ `lo` and the smallest one ≥ `hi`.
fn enclosing_log_ticks(lo: f64, hi: f64, multipliers: &[f64]) -> Vec<f64> {
    let first_decade = lo.log10().floor() as i32 - 1;
    let last_decade = hi.log10().ceil() as i32 + 1;
    let candidates: Vec<f64> = (first_decade..=last_decade)
        .flat_map(|e| multipliers.iter().map(move |&m| times_power_of_ten(m, e)))
        .collect();
    let start = candidates.iter().rposition(|&c| c <= lo).unwrap_or(0);
    let end = candidates.iter().position(|&c| c >= hi).unwrap_or(candidates.len() - 1);
    candidates[start..=end].to_vec()
}

/// `m · 10^e`, dividing for negative `e` so that 2e-3 comes out as the double nearest 0.002.
fn times_power_of_ten(m: f64, e: i32) -> f64 {
    if e >= 0 { m * 10f64.powi(e) } else { m / 10f64.powi(-e) }
}

/// `k` when `v` is exactly 2^k (k ≥ 0).
fn power_of_two_exponent(v: f64) -> Option<i32> {
    let exact = v >= 1.0 && v <= 2f64.powi(62) && v.fract() == 0.0 && (v as u64).is_power_of_two();
    exact.then(|| (v as u64).trailing_zeros() as i32)
}

/// "512", "4K", "128K", "1M" with binary multiples, as sequence lengths are usually written.
fn power_of_two_label(v: f64) -> String {
    let n = v as u64;
    match n {
        n if n >= 1 << 20 => format!("{}M", n >> 20),
        n if n >= 1 << 10 => format!("{}K", n >> 10),
        n => n.to_string(),
    }
}

/// Short labels: "0", "0.25", "2.5", "800", "1.2k", "30M".
fn label_ticks(ticks: &[f64], log: bool) -> Vec<String> {
    let linear_step = if ticks.len() >= 2 { ticks[1] - ticks[0] } else { 1.0 };
    ticks
        .iter()
        .map(|&t| {
            // On a log axis each tick is its own precision (2e-3 needs three decimals).
            let step = if log && t > 0.0 { 10f64.powf(t.log10().floor()) } else { linear_step };
            format_tick(t, step)
        })
        .collect()
}

/// Formats `v` with as many decimals as a tick spacing of `step` needs, with SI suffixes from
/// a thousand up.
fn format_tick(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let (scale, suffix) = match v.abs() {
        a if a >= 1e9 => (1e9, "G"),
        a if a >= 1e6 => (1e6, "M"),
        a if a >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let decimals = (-(step / scale).log10() - 1e-9).ceil().clamp(0.0, 12.0) as usize;
    let mut s = format!("{:.*}", decimals, v / scale);
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{suffix}")
}

// ---------------------------------------------------------------------------------------------
// SVG text
// ---------------------------------------------------------------------------------------------

/// Escapes text for XML character data and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab/newline are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A minimal SVG writer; coordinates are written with one decimal.
struct Svg {
    out: String,
}

impl Svg {
    fn new(title: &str) -> Self {
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="12">"#
        );
        let title = escape(title);
        let _ = writeln!(out, "<title>{title}</title>");
        let _ = writeln!(out, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="24" text-anchor="middle" font-size="15" font-weight="600" fill="#111">{title}</text>"##,
            WIDTH / 2.0
        );
        Self { out }
    }

    fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }

    #[allow(clippy::too_many_arguments)]
    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, colour: &str, width: f64, dash: Option<&str>) {
        let dash = dash.map(|d| format!(r#" stroke-dasharray="{d}""#)).unwrap_or_default();
        let _ = writeln!(
            self.out,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{colour}" stroke-width="{width}"{dash}/>"#
        );
    }

    fn text(&mut self, x: f64, y: f64, anchor: &str, colour: &str, content: &str) {
        let _ = writeln!(
            self.out,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" fill="{colour}">{}</text>"#,
            escape(content)
        );
    }

    fn rotated_text(&mut self, x: f64, y: f64, content: &str) {
        let _ = writeln!(
            self.out,
            r##"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" fill="#111" transform="rotate(-90 {x:.1} {y:.1})">{}</text>"##,
            escape(content)
        );
    }

    /// A category label under the x axis, slanted when labels would overlap.
    fn axis_label(&mut self, x: f64, y: f64, content: &str, rotate: bool) {
        if rotate {
            let _ = writeln!(
                self.out,
                r##"<text x="{x:.1}" y="{y:.1}" text-anchor="end" fill="#333" transform="rotate(-40 {x:.1} {y:.1})">{}</text>"##,
                escape(content)
            );
        } else {
            self.text(x, y, "middle", "#333", content);
        }
    }

    /// A line through the drawable points, lifting the pen over the others.
    fn polyline(
        &mut self,
        frame: &Frame,
        x: &Scale,
        y: &Scale,
        points: &[(f64, f64)],
        ok: &dyn Fn(&(f64, f64)) -> bool,
        colour: &str,
    ) {
        let mut d = String::new();
        let mut pen_down = false;
        for p in points {
            if ok(p) {
                let command = if pen_down { 'L' } else { 'M' };
                let _ = write!(d, "{command}{:.1},{:.1} ", frame.x(x, p.0), frame.y(y, p.1));
                pen_down = true;
            } else {
                pen_down = false;
            }
        }
        if !d.is_empty() {
            let _ = writeln!(
                self.out,
                r#"<path class="series" d="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round"/>"#,
                d.trim_end()
            );
        }
    }

    /// A translucent area between the lower and upper edges of `band`.
    fn band(&mut self, frame: &Frame, x: &Scale, y: &Scale, band: &[(f64, f64, f64)], colour: &str) {
        let upper = band.iter().map(|b| (frame.x(x, b.0), frame.y(y, b.2)));
        let lower = band.iter().rev().map(|b| (frame.x(x, b.0), frame.y(y, b.1)));
        let mut d = String::new();
        for (i, (px, py)) in upper.chain(lower).enumerate() {
            let _ = write!(d, "{}{px:.1},{py:.1} ", if i == 0 { 'M' } else { 'L' });
        }
        let _ = writeln!(
            self.out,
            r#"<path class="band" d="{}Z" fill="{colour}" fill-opacity="0.18" stroke="none"/>"#,
            d
        );
    }

    fn dot(&mut self, x: f64, y: f64, colour: &str) {
        let _ = writeln!(self.out, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#);
    }

    /// A cross at (x, y) with its label on the right, or on the left near the right edge.
    fn cross(&mut self, x: f64, y: f64, label: &str, label_left: bool) {
        let r = 5.0;
        let _ = writeln!(
            self.out,
            r#"<path class="marker" d="M{:.1},{:.1} L{:.1},{:.1} M{:.1},{:.1} L{:.1},{:.1}" stroke="{MARKER_COLOUR}" stroke-width="2.5"/>"#,
            x - r,
            y - r,
            x + r,
            y + r,
            x - r,
            y + r,
            x + r,
            y - r
        );
        let (tx, anchor) = if label_left { (x - 8.0, "end") } else { (x + 8.0, "start") };
        // A white outline keeps the label legible over grid lines and series.
        let _ = writeln!(
            self.out,
            r#"<text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}" fill="{MARKER_COLOUR}" stroke="white" stroke-width="3" paint-order="stroke">{}</text>"#,
            y + 4.0,
            escape(label)
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn bar(&mut self, x: f64, y: f64, width: f64, height: f64, colour: &str, label: &str, value: f64) {
        let _ = writeln!(
            self.out,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{:.1}" height="{height:.1}" fill="{colour}"><title>{}: {value:.4}</title></rect>"#,
            (width - 1.0).max(0.5),
            escape(label)
        );
    }

    fn block_swatch(&mut self, x: f64, y: f64, colour: &str) {
        let _ = writeln!(
            self.out,
            r#"<rect x="{:.1}" y="{:.1}" width="14" height="10" fill="{colour}"/>"#,
            x + 3.0,
            y - 5.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_round_and_enclose_the_data() {
        assert_eq!(nice_ticks(0.0, 1.0, 5), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(nice_ticks(1.83, 2.61, 6), vec![1.8, 1.9, 2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7]);
        assert_eq!(nice_ticks(0.0, 614_400.0, 6), vec![0.0, 1e5, 2e5, 3e5, 4e5, 5e5, 6e5, 7e5]);
        // A single value still gets an axis around it.
        let t = nice_ticks(2.0, 2.0, 5);
        assert!(t.first().unwrap() < &2.0 && t.last().unwrap() > &2.0);
    }

    #[test]
    fn log_ticks_use_decades_then_finer_multiples() {
        assert_eq!(log_ticks(3e2, 2e5), vec![1e2, 1e3, 1e4, 1e5, 1e6]);
        assert_eq!(log_ticks(128.0, 4096.0), vec![100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]);
        assert_eq!(log_ticks(2.1, 4.5), vec![2.0, 3.0, 4.0, 5.0]);
        assert_eq!(log_ticks(1.1, 5.6), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(log_ticks(1.0, 1e12).len(), 13);
        assert_eq!(log_ticks(0.0015, 0.04), vec![0.001, 0.002, 0.005, 0.01, 0.02, 0.05]);
    }

    #[test]
    fn tick_labels_are_short() {
        let labels = |ticks: &[f64], log| label_ticks(ticks, log);
        assert_eq!(labels(&[0.0, 0.2, 0.4], false), ["0", "0.2", "0.4"]);
        assert_eq!(labels(&[0.0, 500.0, 1000.0, 1500.0], false), ["0", "500", "1k", "1.5k"]);
        assert_eq!(labels(&[0.002, 0.01, 2e6], true), ["0.002", "0.01", "2M"]);
    }

    #[test]
    fn charts_without_data_say_so() {
        let series = Series { name: "nan".into(), points: vec![(1.0, f64::NAN)], band: vec![] };
        let svg =
            line_chart(&LineChart { title: "empty".into(), series: vec![series], ..Default::default() });
        assert!(svg.contains("no data"));
        let svg = bar_chart(&BarChart { title: "empty".into(), ..Default::default() });
        assert!(svg.contains("no data"));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape(r#"a<b & "c">'d'"#), "a&lt;b &amp; &quot;c&quot;&gt;&apos;d&apos;");
        let svg = line_chart(&LineChart {
            title: "<loss> & more".into(),
            series: vec![Series { name: "A&B".into(), points: vec![(1.0, 2.0), (2.0, 1.5)], band: vec![] }],
            ..Default::default()
        });
        assert!(svg.contains("&lt;loss&gt; &amp; more") && svg.contains("A&amp;B"));
        assert!(!svg.contains("<loss>"));
    }
}
