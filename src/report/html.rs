//! The report's pages: one self-contained HTML page per run (charts inline as SVG, tables), and
//! an index of a report's runs. Written by hand: they are a few fixed elements around the SVG
//! that `plotters` draws and the cells arrow formats, not worth a template engine.

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::Result;

/// Rows shown in a page's table; the CSV and Parquet files hold all of them.
pub const SHOWN_ROWS: usize = 1000;

/// One query's part of a run page.
pub struct Section<'a> {
    /// Heading.
    pub title: &'a str,
    /// The chart, when the report asks for one.
    pub svg: Option<String>,
    /// The result.
    pub batches: &'a [RecordBatch],
    /// Names of the column headers.
    pub columns: Vec<String>,
    /// File names of the result's CSV and Parquet copies, next to the page.
    pub files: (String, String),
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;font-size:14px;margin:.5em 0}\
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}\
td.text{text-align:left}.meta{color:#666}section{margin-bottom:2.5em}";

/// The page of one run.
pub fn run_page(title: &str, meta: &str, sections: &[Section]) -> Result<String> {
    let mut page = head(title);
    page.push_str(&format!(
        "<h1>{}</h1>\n<p class=\"meta\">{}</p>\n",
        escape(title),
        escape(meta)
    ));
    for (i, section) in sections.iter().enumerate() {
        page.push_str(&format!(
            "<section id=\"q{}\">\n<h2>{}</h2>\n",
            i + 1,
            escape(section.title)
        ));
        if let Some(svg) = &section.svg {
            page.push_str("<figure>");
            page.push_str(svg);
            page.push_str("</figure>\n");
        }
        table(&mut page, section)?;
        page.push_str("</section>\n");
    }
    page.push_str("</body></html>\n");
    Ok(page)
}

fn table(page: &mut String, section: &Section) -> Result<()> {
    page.push_str("<table>\n<thead><tr>");
    for name in &section.columns {
        page.push_str(&format!("<th>{}</th>", escape(name)));
    }
    page.push_str("</tr></thead>\n<tbody>\n");
    let options = FormatOptions::default().with_null("NULL");
    let total: usize = section.batches.iter().map(|b| b.num_rows()).sum();
    let mut shown = 0;
    'rows: for batch in section.batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let numeric: Vec<bool> = batch
            .columns()
            .iter()
            .map(|c| c.data_type().is_numeric())
            .collect();
        for row in 0..batch.num_rows() {
            if shown == SHOWN_ROWS {
                break 'rows;
            }
            page.push_str("<tr>");
            for (formatter, numeric) in formatters.iter().zip(&numeric) {
                let class = if *numeric { "" } else { " class=\"text\"" };
                page.push_str(&format!(
                    "<td{class}>{}</td>",
                    escape(&formatter.value(row).to_string())
                ));
            }
            page.push_str("</tr>\n");
            shown += 1;
        }
    }
    page.push_str("</tbody>\n</table>\n");
    let (csv, parquet) = &section.files;
    let more = if total > shown {
        format!("the first {shown} of {total} rows shown; ")
    } else {
        format!("{total} rows; ")
    };
    page.push_str(&format!(
        "<p class=\"meta\">{more}all as <a href=\"{csv}\">CSV</a> and <a href=\"{parquet}\">Parquet</a></p>\n",
        csv = escape(csv),
        parquet = escape(parquet)
    ));
    Ok(())
}

/// The index of a report's runs, newest first: (run folder, label).
pub fn index_page(title: &str, runs: &[(String, String)]) -> String {
    let mut page = head(title);
    page.push_str(&format!(
        "<h1>{}</h1>\n<p class=\"meta\">{} runs</p>\n<ul>\n",
        escape(title),
        runs.len()
    ));
    for (folder, label) in runs {
        page.push_str(&format!(
            "<li><a href=\"{}/index.html\">{}</a></li>\n",
            escape(folder),
            escape(label)
        ));
    }
    page.push_str("</ul>\n</body></html>\n");
    page
}

fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>\n",
        escape(title)
    )
}

/// Text made safe inside HTML elements and attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
