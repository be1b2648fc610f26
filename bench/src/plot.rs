//! Plots: one SVG and one PNG per suite, written beside its JSON.
//!
//! A suite whose rate rows name a concurrency (see [`Row::point`]) gets throughput versus
//! concurrency: one solid line per plot line of ours, with min–max bars, a dashed line of the
//! same colour for the baseline measured in the same run where the rows have one (the DBOS peer,
//! the commit bound), and the machine's durable commit ceiling in black; the y axis turns
//! logarithmic when the figures span more than 20×. Any other suite gets
//! one bar per row of its most common unit. Nothing here knows a suite by name.
//!
//! Text in the PNG is drawn with a TrueType font read at run time: `DBOS_BENCH_FONT` if set,
//! else DejaVu Sans or Liberation Sans from the usual Debian, Fedora and Arch paths (Debian's
//! `fonts-dejavu-core`, which `scripts/setup` installs). The font is not embedded so that the
//! repository carries no font files; without one, no plot is written and the run says why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Mode, Row};

/// Width of a plot, pixels.
const WIDTH_PX: u32 = 1000;
/// Height of a plot, pixels.
const HEIGHT_PX: u32 = 620;
/// Largest ÷ smallest figure above which a plot's y axis is logarithmic.
const LOG_Y_SPREAD: f64 = 20.0;

/// Font files tried in order when `DBOS_BENCH_FONT` is unset.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
];

/// Registers the plot font once; the error says which files were tried.
fn font() -> Result<&'static Path> {
    static FONT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let found = FONT.get_or_init(|| {
        let candidates: Vec<PathBuf> = match std::env::var_os("DBOS_BENCH_FONT") {
            Some(p) => vec![PathBuf::from(p)],
            None => FONT_PATHS.iter().map(PathBuf::from).collect(),
        };
        for path in &candidates {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            // Registered fonts live for the whole process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(path.clone());
            }
        }
        Err(format!(
            "no TrueType font found (tried {}); install fonts-dejavu-core (scripts/setup does) \
             or set DBOS_BENCH_FONT to a .ttf file",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    });
    found.as_deref().map_err(|e| anyhow!("{e}"))
}

/// A point of a line: (concurrency, figure, min, max).
type Point = (u32, f64, f64, f64);

/// One line of a throughput-versus-concurrency plot.
#[derive(Debug)]
struct Line {
    name: String,
    /// (concurrency, figure, min, max), by concurrency.
    points: Vec<Point>,
    dashed: bool,
    /// Index into [`COLOURS`]; `None` for the ceiling (black).
    colour: Option<usize>,
}

/// What a suite's plot shows.
#[derive(Debug)]
enum Chart {
    Lines { unit: String, lines: Vec<Line> },
    Bars { unit: String, rows: Vec<Row> },
}

const COLOURS: &[RGBColor] = &[
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
    RGBColor(188, 189, 34),
    RGBColor(127, 127, 127),
];

fn colour(i: Option<usize>) -> RGBColor {
    i.map_or(BLACK, |i| COLOURS[i % COLOURS.len()])
}

/// The unit most rows have (the first such in row order on a tie).
fn main_unit<'a>(rows: impl Iterator<Item = &'a Row>) -> Option<String> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in rows {
        match counts.iter_mut().find(|(u, _)| *u == r.unit) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.unit.clone(), 1)),
        }
    }
    let best = counts.iter().map(|(_, n)| *n).max()?;
    counts.into_iter().find(|(_, n)| *n == best).map(|(u, _)| u)
}

fn same_figures(a: &[Point], b: &[Point]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(p, q)| p.0 == q.0 && (p.1 - q.1).abs() <= 1e-9 * p.1.abs().max(1.0))
}

impl Chart {
    fn of(rows: &[Row], reference: &[Row]) -> Option<Chart> {
        let placed: Vec<(&Row, String, u32)> = rows
            .iter()
            .filter(|r| r.is_rate())
            .filter_map(|r| r.point().map(|(s, x)| (r, s, x)))
            .collect();
        let Some(unit) = main_unit(placed.iter().map(|(r, ..)| *r)) else {
            let unit = main_unit(rows.iter())?;
            let rows = rows.iter().filter(|r| r.unit == unit).cloned().collect();
            return Some(Chart::Bars { unit, rows });
        };
        // Plot lines in the order their first row appears.
        let mut order: Vec<String> = Vec::new();
        let mut ours: BTreeMap<&str, Vec<Point>> = BTreeMap::new();
        let mut baseline: BTreeMap<&str, (String, Vec<Point>)> = BTreeMap::new();
        for (r, series, x) in placed.iter().filter(|(r, ..)| r.unit == unit) {
            if !order.contains(series) {
                order.push(series.clone());
            }
            ours.entry(series)
                .or_default()
                .push((*x, r.ours, r.min, r.max));
            if let Some(b) = r.baseline {
                let name = r.baseline_name.clone().unwrap_or_else(|| "baseline".into());
                let entry = baseline.entry(series).or_insert_with(|| (name, Vec::new()));
                entry.1.push((*x, b, b, b));
            }
        }
        let mut lines = Vec::new();
        for (i, series) in order.iter().enumerate() {
            let mut points = ours.remove(series.as_str()).unwrap_or_default();
            points.sort_by_key(|p| p.0);
            lines.push(Line {
                name: series.clone(),
                points,
                dashed: false,
                colour: Some(i),
            });
            if let Some((name, mut points)) = baseline.remove(series.as_str()) {
                points.sort_by_key(|p| p.0);
                // A baseline that is already a line of its own (the D mode under R and M)
                // is not drawn twice.
                if lines
                    .iter()
                    .any(|l: &Line| same_figures(&l.points, &points))
                {
                    continue;
                }
                lines.push(Line {
                    name: format!("{series}: {name}"),
                    points,
                    dashed: true,
                    colour: Some(i),
                });
            }
        }
        let mut ceiling: Vec<Point> = reference
            .iter()
            .filter(|r| r.mode == Mode::D && r.is_rate())
            .filter_map(|r| r.point().map(|(_, x)| (x, r.ours, r.min, r.max)))
            .collect();
        if !ceiling.is_empty() {
            ceiling.sort_by_key(|p| p.0);
            let unit = reference
                .iter()
                .find(|r| r.mode == Mode::D)
                .map_or("/s", |r| r.unit.as_str());
            lines.push(Line {
                name: format!("machine ceiling: durable single-row INSERT, {unit}"),
                points: ceiling,
                dashed: true,
                colour: None,
            });
        }
        Some(Chart::Lines { unit, lines })
    }
}

/// Writes `<dir>/<suite>.svg` and `<dir>/<suite>.png` for the suite's rows; `reference` holds
/// the ceiling suite's rows (drawn as the machine's limit) or nothing. Returns the files
/// written, none when there is nothing to plot.
///
/// # Errors
/// No usable font, or a file cannot be written.
pub fn suite(dir: &Path, suite: &str, rows: &[Row], reference: &[Row]) -> Result<Vec<PathBuf>> {
    let Some(chart) = Chart::of(rows, reference) else {
        return Ok(Vec::new());
    };
    font()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let svg = dir.join(format!("{suite}.svg"));
    let png = dir.join(format!("{suite}.png"));
    {
        let root = SVGBackend::new(&svg, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
        draw(&root, suite, &chart).with_context(|| format!("drawing {}", svg.display()))?;
        root.present()
            .map_err(|e| anyhow!("writing {}: {e}", svg.display()))?;
    }
    {
        let root = BitMapBackend::new(&png, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
        draw(&root, suite, &chart).with_context(|| format!("drawing {}", png.display()))?;
        root.present()
            .map_err(|e| anyhow!("writing {}: {e}", png.display()))?;
    }
    Ok(vec![svg, png])
}

/// An axis figure: 0 as "0", else as in the tables.
fn axis_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else {
        crate::fmt_num(v)
    }
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    suite: &str,
    chart: &Chart,
) -> Result<()> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    match chart {
        Chart::Lines { unit, lines } => {
            let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
            let x_max = xs.clone().max().unwrap_or(1).max(1);
            let x_min = xs.min().unwrap_or(1).max(1);
            let y_max = lines
                .iter()
                .flat_map(|l| l.points.iter().map(|p| p.3))
                .fold(0.0f64, f64::max)
                .max(f64::MIN_POSITIVE);
            let y_min = lines
                .iter()
                .flat_map(|l| l.points.iter().map(|p| p.2))
                .filter(|v| *v > 0.0)
                .fold(f64::INFINITY, f64::min);
            // Figures more than LOG_Y_SPREAD apart (a peer 20× slower than us under the
            // ceiling) go on a log10 axis, so the small ones stay readable.
            let log_y = y_min.is_finite() && y_max / y_min > LOG_Y_SPREAD;
            let fy = move |v: f64| if log_y { v.max(y_min).log10() } else { v };
            let (y_lo, y_hi) = if log_y {
                (y_min.log10() - 0.15, y_max.log10() + 0.15)
            } else {
                (0.0, y_max * 1.12)
            };
            // Concurrency on a log2 axis: 1, 8 and 32 clients are evenly apart.
            let (lo, hi) = ((x_min as f64).log2() - 0.5, (x_max as f64).log2() + 0.5);
            let mut c = ChartBuilder::on(root)
                .caption(
                    format!("{suite}: throughput versus concurrency"),
                    ("sans-serif", 24),
                )
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(80)
                .build_cartesian_2d(lo..hi, y_lo..y_hi)
                .map_err(err)?;
            c.configure_mesh()
                .x_desc("concurrent clients (log scale)")
                .y_desc(if log_y {
                    format!("{unit} (log scale)")
                } else {
                    unit.clone()
                })
                .x_labels(((hi - lo).ceil() as usize + 1).max(2))
                .x_label_formatter(&|v| {
                    let r = v.round();
                    if (v - r).abs() < 1e-6 {
                        format!("{}", 2f64.powf(r).round())
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&|v| axis_num(if log_y { 10f64.powf(*v) } else { *v }))
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(err)?;
            for line in lines {
                let col = colour(line.colour);
                let style = col.stroke_width(if line.colour.is_none() { 1 } else { 2 });
                let pts: Vec<(f64, f64)> = line
                    .points
                    .iter()
                    .map(|p| ((p.0 as f64).log2(), fy(p.1)))
                    .collect();
                let legend = move |(x, y): (i32, i32)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], col.stroke_width(2))
                };
                let dashed_legend = move |(x, y): (i32, i32)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (7, 0)], col.stroke_width(2))
                        + PathElement::new(vec![(11, 0), (18, 0)], col.stroke_width(2))
                        + PathElement::new(vec![(22, 0), (24, 0)], col.stroke_width(2))
                };
                if line.dashed {
                    c.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style))
                        .map_err(err)?
                        .label(line.name.as_str())
                        .legend(dashed_legend);
                    c.draw_series(pts.iter().map(|&p| TriangleMarker::new(p, 4, col.filled())))
                        .map_err(err)?;
                } else {
                    c.draw_series(LineSeries::new(pts.clone(), style))
                        .map_err(err)?
                        .label(line.name.as_str())
                        .legend(legend);
                    c.draw_series(pts.iter().map(|&p| Circle::new(p, 4, col.filled())))
                        .map_err(err)?;
                    c.draw_series(line.points.iter().filter(|p| p.2 < p.3).map(|p| {
                        ErrorBar::new_vertical(
                            (p.0 as f64).log2(),
                            fy(p.2),
                            fy(p.1),
                            fy(p.3),
                            col.stroke_width(1),
                            8,
                        )
                    }))
                    .map_err(err)?;
                }
            }
            c.configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(err)?;
        }
        Chart::Bars { unit, rows } => {
            let n = rows.len().max(1);
            let y_max = rows
                .iter()
                .map(|r| r.max.max(r.ours))
                .fold(0.0f64, f64::max)
                .max(f64::MIN_POSITIVE);
            let mut c = ChartBuilder::on(root)
                .caption(format!("{suite} (median, min–max)"), ("sans-serif", 24))
                .margin(16)
                .x_label_area_size(36)
                .y_label_area_size(80)
                .build_cartesian_2d(0.0..n as f64, 0.0..y_max * 1.25)
                .map_err(err)?;
            c.configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .y_desc(unit.as_str())
                .y_label_formatter(&|v| axis_num(*v))
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(err)?;
            for (i, r) in rows.iter().enumerate() {
                let col = colour(Some(i));
                let x = i as f64;
                let name = match r.mode {
                    Mode::D => format!("#{} {}", i + 1, r.workload),
                    m => format!("#{} {} ({m:?})", i + 1, r.workload),
                };
                c.draw_series(std::iter::once(Rectangle::new(
                    [(x + 0.2, 0.0), (x + 0.8, r.ours)],
                    col.mix(0.8).filled(),
                )))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], col.filled()));
                if r.min < r.max {
                    c.draw_series(std::iter::once(ErrorBar::new_vertical(
                        x + 0.5,
                        r.min,
                        r.ours,
                        r.max,
                        BLACK.stroke_width(1),
                        10,
                    )))
                    .map_err(err)?;
                }
            }
            c.configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &str, unit: &str, v: f64) -> Row {
        Row::new("s", workload.into(), &[v], unit, 1)
    }

    #[test]
    fn rates_with_a_concurrency_become_lines_and_baselines_dashed_lines() {
        let mut a = row("3-step workflow, 1 caller, direct", "workflows/s", 10.0);
        a.baseline = Some(5.0);
        a.baseline_name = Some("peer".into());
        let b = row("3-step workflow, 8 callers, direct", "workflows/s", 40.0);
        let ceiling = vec![row("INSERT commit, 8 clients", "commits/s", 900.0)];
        let Some(Chart::Lines { unit, lines }) = Chart::of(&[b, a], &ceiling) else {
            panic!("a line chart");
        };
        assert_eq!(unit, "workflows/s");
        let names: Vec<&str> = lines.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "3-step workflow, direct",
                "3-step workflow, direct: peer",
                "machine ceiling: durable single-row INSERT, commits/s"
            ]
        );
        assert_eq!(
            lines[0].points,
            [(1, 10.0, 10.0, 10.0), (8, 40.0, 40.0, 40.0)]
        );
        assert!(lines[1].dashed && lines[2].colour.is_none());
    }

    #[test]
    fn rows_without_a_concurrency_become_bars_of_the_main_unit() {
        let rows = [
            row("1000 pending", "s", 1.0),
            row("x", "MB", 2.0),
            row("10000 pending", "s", 9.0),
        ];
        let Some(Chart::Bars { unit, rows }) = Chart::of(&rows, &[]) else {
            panic!("a bar chart");
        };
        assert_eq!((unit.as_str(), rows.len()), ("s", 2));
        assert!(Chart::of(&[], &[]).is_none());
    }
}
