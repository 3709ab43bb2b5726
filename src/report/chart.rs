//! Charts of query results as inline SVG, drawn with `plotters` (its SVG backend; text is left
//! to the browser, so no font files are needed).

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use plotters::prelude::*;

use super::config::{ChartConfig, ChartKind};
use crate::error::{Error, Result};

const SIZE: (u32, u32) = (860, 360);

/// One drawn line or bar group: its name and a value per x label (None where it has none).
struct Series {
    name: String,
    values: Vec<Option<f64>>,
}

/// Draws a result as an SVG document (`<svg ...>...</svg>`).
pub fn svg(batches: &[RecordBatch], chart: &ChartConfig) -> Result<String> {
    let (labels, series) = series_of(batches, chart)?;
    let mut out = String::new();
    draw(&mut out, &labels, &series, chart)
        .map_err(|e| Error::Internal(format!("cannot draw the chart of x = {}: {e}", chart.x)))?;
    Ok(out)
}

/// The x labels (in the order rows give them) and the series to draw.
fn series_of(batches: &[RecordBatch], chart: &ChartConfig) -> Result<(Vec<String>, Vec<Series>)> {
    let mut labels: Vec<String> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    // (series name, y column) -> values by x index.
    let mut values: Vec<((String, String), BTreeMap<usize, f64>)> = Vec::new();
    for batch in batches {
        let x = texts(batch, &chart.x)?;
        let split = chart.series.as_ref().map(|s| texts(batch, s)).transpose()?;
        for y_name in &chart.y {
            let y = numbers(batch, y_name)?;
            for row in 0..batch.num_rows() {
                let label = x[row].clone().unwrap_or_default();
                let at = *index.entry(label.clone()).or_insert_with(|| {
                    labels.push(label);
                    labels.len() - 1
                });
                let group = split
                    .as_ref()
                    .map(|s| s[row].clone().unwrap_or_else(|| "NULL".to_string()))
                    .unwrap_or_default();
                let key = (group, y_name.clone());
                let slot = match values.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        values.push((key, BTreeMap::new()));
                        values.len() - 1
                    }
                };
                if let Some(v) = y[row] {
                    values[slot].1.insert(at, v);
                }
            }
        }
    }
    let several_y = chart.y.len() > 1;
    let series = values
        .into_iter()
        .map(|((group, y), points)| Series {
            name: match (group.is_empty(), several_y) {
                (true, _) => y,
                (false, false) => group,
                (false, true) => format!("{group} {y}"),
            },
            values: (0..labels.len()).map(|i| points.get(&i).copied()).collect(),
        })
        .collect();
    Ok((labels, series))
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| {
            let names: Vec<&str> = batch
                .schema_ref()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            Error::Invalid(format!(
                "chart: the result has no column '{name}' (it has {})",
                names.join(", ")
            ))
        })
}

/// A column's values as text (labels and series names).
fn texts(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let array = arrow::compute::cast(column(batch, name)?, &DataType::Utf8)?;
    let strings = array.as_string::<i32>();
    Ok((0..strings.len())
        .map(|i| strings.is_valid(i).then(|| strings.value(i).to_string()))
        .collect())
}

/// A column's values as numbers (what is drawn).
fn numbers(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let array = column(batch, name)?;
    if !array.data_type().is_numeric() {
        return Err(Error::Invalid(format!(
            "chart: y column '{name}' is {}, not a number",
            array.data_type()
        )));
    }
    let floats = arrow::compute::cast(array, &DataType::Float64)?;
    Ok(floats.as_primitive::<Float64Type>().iter().collect())
}

type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

/// Width of the legend beside the plot, when there is one.
const LEGEND_WIDTH: u32 = 170;

fn draw(out: &mut String, labels: &[String], series: &[Series], chart: &ChartConfig) -> Drawn {
    let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    // The legend sits to the right of the plot, never over its lines or bars.
    let legend = series.len() > 1 || chart.series.is_some();
    let (area, legend_area) = if legend {
        let (plot, side) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        (plot, Some(side))
    } else {
        (root.clone(), None)
    };
    let all = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied());
    let (mut low, mut high) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    if !low.is_finite() {
        (low, high) = (0.0, 1.0);
    }
    if chart.kind == ChartKind::Bar {
        (low, high) = (low.min(0.0), high.max(0.0));
    }
    let pad = ((high - low) * 0.05).max(1e-9);
    let n = labels.len().max(1);
    let mut plot = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(52)
        .y_label_area_size(76)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), (low - pad)..(high + pad))?;
    let label_at = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 {
            labels.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    plot.configure_mesh()
        .disable_x_mesh()
        .x_labels(n.min(12))
        .x_label_formatter(&label_at)
        .y_label_formatter(&|v: &f64| {
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .light_line_style(WHITE)
        .x_label_style(("sans-serif", 13))
        .y_label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .x_desc(chart.x.as_str())
        .draw()?;
    let width = 0.8 / series.len().max(1) as f64;
    for (k, one) in series.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        match chart.kind {
            ChartKind::Line => {
                let points: Vec<(f64, f64)> = one
                    .values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|v| (i as f64, v)))
                    .collect();
                // A series with one point draws no line: it shows as a dot.
                if let [point] = points[..] {
                    plot.draw_series([Circle::new(point, 4, color.filled())])?;
                }
                plot.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
            }
            ChartKind::Bar => {
                plot.draw_series(one.values.iter().enumerate().filter_map(|(i, v)| {
                    let left = i as f64 - 0.4 + k as f64 * width;
                    v.map(|v| Rectangle::new([(left, 0.0), (left + width, v)], color.filled()))
                }))?;
            }
        }
    }
    if let Some(side) = legend_area {
        for (k, one) in series.iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            let y = 24 + 22 * k as i32;
            side.draw(&Rectangle::new([(6, y - 6), (20, y + 6)], color.filled()))?;
            side.draw(&Text::new(
                one.name.clone(),
                (28, y - 8),
                ("sans-serif", 14),
            ))?;
        }
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            (
                "day",
                Arc::new(StringArray::from(vec!["d1", "d1", "d2", "d2"])) as _,
            ),
            (
                "region",
                Arc::new(StringArray::from(vec!["bj", "sh", "bj", "sh"])) as _,
            ),
            ("dau", Arc::new(Int64Array::from(vec![10, 20, 30, 40])) as _),
        ])
        .unwrap()
    }

    #[test]
    fn series_split_rows_by_their_column_in_row_order() {
        let chart = ChartConfig {
            kind: ChartKind::Line,
            x: "day".into(),
            y: vec!["dau".into()],
            series: Some("region".into()),
        };
        let (labels, series) = series_of(&[batch()], &chart).unwrap();
        assert_eq!(labels, ["d1", "d2"]);
        let drawn: Vec<(&str, Vec<Option<f64>>)> = series
            .iter()
            .map(|s| (s.name.as_str(), s.values.clone()))
            .collect();
        assert_eq!(
            drawn,
            [
                ("bj", vec![Some(10.0), Some(30.0)]),
                ("sh", vec![Some(20.0), Some(40.0)])
            ]
        );
        let svg = svg(&[batch()], &chart).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split("</text>").next()?.trim()))
            .collect();
        assert!(texts.contains(&"bj") && texts.contains(&"d2"), "{texts:?}");
    }

    /// A series with a value on one day only (a region open one day of the week) is a dot: a
    /// line needs two points, and without the dot the series would not show at all.
    #[test]
    fn a_series_of_one_point_is_a_dot() {
        let chart = ChartConfig {
            kind: ChartKind::Line,
            x: "day".into(),
            y: vec!["dau".into()],
            series: Some("region".into()),
        };
        // bj on d1 and d2, sh on d1 only.
        let drawn = svg(&[batch().slice(0, 3)], &chart).unwrap();
        assert_eq!(drawn.matches("<circle").count(), 1, "{drawn}");
        let drawn = svg(&[batch()], &chart).unwrap();
        assert_eq!(drawn.matches("<circle").count(), 0, "{drawn}");
    }

    #[test]
    fn a_missing_or_text_column_is_a_clear_error() {
        let chart = |y: &str| ChartConfig {
            kind: ChartKind::Bar,
            x: "day".into(),
            y: vec![y.into()],
            series: None,
        };
        let err = svg(&[batch()], &chart("revenue")).unwrap_err().to_string();
        assert!(
            err.contains("no column 'revenue' (it has day, region, dau)"),
            "{err}"
        );
        let err = svg(&[batch()], &chart("region")).unwrap_err().to_string();
        assert!(err.contains("'region' is Utf8, not a number"), "{err}");
    }
}
