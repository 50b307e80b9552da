//! SVG plots of latency: the percentile spectrum (latency against percentile on the
//! 1/(1-p) axis, as HdrHistogram's plotter draws it) and latency over time. One series per
//! input, so that runs compare at a glance. Written by hand: a few dozen elements.

use std::fmt::Write as _;

use super::Latency;
use super::hgrm::TICKS_PER_HALF;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
/// Room under the plot for the x labels and one legend line per series.
const BOTTOM_BASE: f64 = 70.0;
const LEGEND_LINE: f64 = 18.0;
/// Percentile decades shown at least (to 99%) and at most (to 99.99999%).
const MIN_DECADES: f64 = 2.0;
const MAX_DECADES: f64 = 7.0;

/// Series colours, reused in order.
const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One input's latency over time: `(end of interval in seconds from the plot's start,
/// Some((p99 in ns, max in ns)))` per interval, `None` for an interval without values (a gap
/// in the lines, not a point at 0).
#[derive(Debug, Clone, Default)]
pub struct TimeSeries {
    /// The series' label (the input file).
    pub name: String,
    /// Points in time order.
    pub points: Vec<(f64, Option<(u64, u64)>)>,
}

/// The percentile spectrum of each `(name, histogram)`, whose recorded values are
/// `ns_per_value` nanoseconds each.
pub fn spectrum(title: &str, series: &[(String, &Latency)], ns_per_value: f64) -> String {
    let curves: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, h)| spectrum_points(h, ns_per_value))
        .collect();
    let decades = curves
        .iter()
        .flatten()
        .map(|&(x, _)| x.ceil())
        .fold(MIN_DECADES, f64::max)
        .min(MAX_DECADES);
    let y_max = curves.iter().flatten().map(|&(_, y)| y).fold(0.0, f64::max);
    let mut plot = Plot::new(title, series.len(), (0.0, decades), y_max);
    for d in 0..=decades as u32 {
        plot.x_tick(f64::from(d), &percent_label(d));
    }
    plot.x_title("percentile");
    for (i, ((name, _), points)) in series.iter().zip(&curves).enumerate() {
        plot.begin_series(i, name);
        plot.polyline(i, points, false);
        plot.end_series();
    }
    plot.finish()
}

/// Each series' p99 (solid) and max (dashed) per interval against time.
pub fn over_time(title: &str, series: &[TimeSeries]) -> String {
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1).map(|(_, max)| max as f64))
        .fold(0.0, f64::max);
    let mut plot = Plot::new(title, series.len(), (0.0, x_max), y_max);
    let step = nice_step(x_max);
    let mut t = 0.0;
    while t <= x_max + step * 1e-9 {
        plot.x_tick(t, &format!("{t}"));
        t += step;
    }
    plot.x_title("time (s); solid: p99, dashed: max");
    for (i, s) in series.iter().enumerate() {
        plot.begin_series(i, &s.name);
        // A line per run of intervals with values: an empty interval breaks both lines.
        for run in s.points.split(|p| p.1.is_none()).filter(|run| !run.is_empty()) {
            let line = |pick: fn((u64, u64)) -> u64| -> Vec<(f64, f64)> {
                run.iter()
                    .filter_map(|&(t, v)| v.map(|v| (t, pick(v) as f64)))
                    .collect()
            };
            plot.polyline(i, &line(|(p99, _)| p99), false);
            plot.polyline(i, &line(|(_, max)| max), true);
        }
        plot.end_series();
    }
    plot.finish()
}

/// `(log10(1/(1-q)), value in ns)` for the spectrum rows below 100% (the rows HdrHistogram's
/// plotter uses), values being `ns_per_value` ns each.
fn spectrum_points(h: &Latency, ns_per_value: f64) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(TICKS_PER_HALF)
        .filter(|v| v.quantile_iterated_to() < 1.0)
        .map(|v| {
            let x = (1.0 / (1.0 - v.quantile_iterated_to())).log10();
            (x.min(MAX_DECADES), v.value_iterated_to() as f64 * ns_per_value)
        })
        .collect()
}

/// The label of decade `d` on the 1/(1-p) axis: 0%, 90%, 99%, 99.9%...
fn percent_label(d: u32) -> String {
    match d {
        0 => "0%".into(),
        1 => "90%".into(),
        _ => format!("99.{}%", "9".repeat(d as usize - 2)).replace("99.%", "99%"),
    }
}

/// A step of 1, 2 or 5 × 10^n giving at most about 8 ticks over `0..span`.
fn nice_step(span: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / 8.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// The unit of a latency axis that reaches `max_ns`: `(ns per unit, name)`.
fn axis_unit(max_ns: f64) -> (f64, &'static str) {
    if max_ns >= 1e9 {
        (1e9, "s")
    } else if max_ns >= 1e6 {
        (1e6, "ms")
    } else if max_ns >= 1e3 {
        (1e3, "µs")
    } else {
        (1.0, "ns")
    }
}

/// A tick value without trailing zeros (ticks are 1, 2 or 5 × 10^n, so 3 decimals do).
fn tick_label(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Escapes text for XML content and attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The frame shared by both plots: axes, a linear latency y axis, series, and a legend.
struct Plot {
    svg: String,
    height: f64,
    x_range: (f64, f64),
    y_max: f64,
    legend: Vec<(usize, String)>,
}

impl Plot {
    fn new(title: &str, series: usize, x_range: (f64, f64), y_max_ns: f64) -> Self {
        let height = HEIGHT + LEGEND_LINE * series as f64;
        let y_step = nice_step(y_max_ns.max(1.0));
        let y_max = (y_max_ns / y_step).ceil().max(1.0) * y_step;
        let mut plot = Self {
            svg: String::new(),
            height,
            x_range,
            y_max,
            legend: Vec::new(),
        };
        let _ = write!(
            plot.svg,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
             viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <title>{t}</title>\n\
             <rect width=\"{WIDTH}\" height=\"{height}\" fill=\"white\"/>\n\
             <text x=\"{cx}\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">{t}</text>\n\
             <g class=\"axes\" stroke=\"#ccc\">\n",
            t = escape(title),
            cx = WIDTH / 2.0,
        );
        let (scale, unit) = axis_unit(y_max);
        let mut v = 0.0;
        while v <= y_max + y_step * 1e-9 {
            let y = plot.py(v);
            let _ = writeln!(
                plot.svg,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" stroke=\"none\">{}</text>",
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                tick_label(v / scale)
            );
            v += y_step;
        }
        let _ = writeln!(
            plot.svg,
            "<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\" \
             stroke=\"none\">latency ({unit})</text>",
            TOP + plot.plot_height() / 2.0
        );
        plot
    }

    fn plot_height(&self) -> f64 {
        self.height - TOP - BOTTOM_BASE - LEGEND_LINE * self.legend_slots()
    }

    fn legend_slots(&self) -> f64 {
        (self.height - HEIGHT) / LEGEND_LINE
    }

    fn px(&self, x: f64) -> f64 {
        let (lo, hi) = self.x_range;
        let span = if hi > lo { hi - lo } else { 1.0 };
        LEFT + (x - lo) / span * (WIDTH - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        TOP + self.plot_height() * (1.0 - y / self.y_max)
    }

    fn x_tick(&mut self, x: f64, label: &str) {
        let px = self.px(x);
        let bottom = TOP + self.plot_height();
        let _ = writeln!(
            self.svg,
            "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{bottom:.1}\"/>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\" stroke=\"none\">{}</text>",
            bottom + 16.0,
            escape(label)
        );
    }

    fn x_title(&mut self, title: &str) {
        let _ = writeln!(
            self.svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" stroke=\"none\">{}</text>\n</g>",
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
            TOP + self.plot_height() + 36.0,
            escape(title)
        );
    }

    fn begin_series(&mut self, i: usize, name: &str) {
        let _ = writeln!(self.svg, "<g class=\"series\" data-name=\"{}\">", escape(name));
        self.legend.push((i, name.to_owned()));
    }

    fn end_series(&mut self) {
        self.svg.push_str("</g>\n");
    }

    fn polyline(&mut self, i: usize, points: &[(f64, f64)], dashed: bool) {
        let mut coords = String::new();
        for &(x, y) in points {
            let _ = write!(coords, "{:.1},{:.1} ", self.px(x), self.py(y));
        }
        let dash = if dashed { " stroke-dasharray=\"5 4\"" } else { "" };
        let _ = writeln!(
            self.svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            PALETTE[i % PALETTE.len()],
            coords.trim_end()
        );
    }

    fn finish(mut self) -> String {
        self.svg.push_str("<g class=\"legend\">\n");
        let top = TOP + self.plot_height() + 58.0;
        for (slot, (i, name)) in self.legend.iter().enumerate() {
            let y = top + LEGEND_LINE * slot as f64;
            let _ = writeln!(
                self.svg,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\" \
                 stroke-width=\"3\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                LEFT + 24.0,
                PALETTE[i % PALETTE.len()],
                LEFT + 32.0,
                y + 4.0,
                escape(name)
            );
        }
        self.svg.push_str("</g>\n</svg>\n");
        self.svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::hdr::new_histogram;

    fn hist(scale: u64) -> Latency {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * scale).unwrap();
        }
        h
    }

    #[test]
    fn spectrum_has_one_series_per_input() {
        let (a, b) = (hist(1_000), hist(3_000));
        let svg = spectrum("t <&>", &[("a.hlog".into(), &a), ("b&c.hlog".into(), &b)], 1.0);
        assert_eq!(svg.matches("<g class=\"series\"").count(), 2);
        assert!(svg.contains("data-name=\"b&amp;c.hlog\""));
        assert!(svg.contains("<title>t &lt;&amp;&gt;</title>"));
        assert!(svg.contains(">99.9%<"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn over_time_draws_p99_and_max() {
        let s = TimeSeries {
            name: "run".into(),
            points: vec![(1.0, Some((1_000, 5_000))), (2.0, Some((2_000, 9_000)))],
        };
        let svg = over_time("over time", &[s]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("stroke-dasharray"));
    }

    #[test]
    fn an_empty_interval_is_a_gap_not_a_point_at_zero() {
        let s = TimeSeries {
            name: "run".into(),
            points: vec![
                (1.0, Some((1_000, 5_000))),
                (2.0, Some((2_000, 9_000))),
                (3.0, None),
                (4.0, Some((3_000, 8_000))),
                (5.0, None),
            ],
        };
        let svg = over_time("gap", &[s]);
        // Two runs of intervals with values, a p99 and a max line each.
        assert_eq!(svg.matches("<polyline").count(), 4, "{svg}");
        let bottom = format!(",{:.1}", HEIGHT - BOTTOM_BASE);
        let lines: Vec<&str> = svg.lines().filter(|l| l.starts_with("<polyline")).collect();
        assert!(lines.iter().all(|l| !l.contains(&bottom)), "no point at 0: {svg}");
        assert_eq!(lines[2].matches(',').count(), 1, "one point: {}", lines[2]);
    }

    #[test]
    fn spectrum_values_scale_by_the_unit() {
        let us = hist(1);
        let (ns_max, us_max) = (spectrum_points(&us, 1.0), spectrum_points(&us, 1e3));
        assert_eq!(us_max.last().unwrap().1, ns_max.last().unwrap().1 * 1e3);
    }

    #[test]
    fn empty_inputs_still_plot() {
        let empty = new_histogram();
        let svg = spectrum("empty", &[("e".into(), &empty)], 1.0);
        assert_eq!(svg.matches("<g class=\"series\"").count(), 1);
        assert!(!over_time("none", &[]).is_empty());
    }

    #[test]
    fn helpers() {
        assert_eq!(percent_label(0), "0%");
        assert_eq!(percent_label(2), "99%");
        assert_eq!(percent_label(4), "99.99%");
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(1e6), 200_000.0);
        assert_eq!(nice_step(0.0), 1.0);
        let points = spectrum_points(&hist(1000), 1.0);
        assert!(points.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(escape("a\"b'"), "a&quot;b&apos;");
        assert_eq!(axis_unit(35e6), (1e6, "ms"));
        assert_eq!(axis_unit(500.0), (1.0, "ns"));
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(10.0), "10");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(0.02), "0.02");
    }
}
