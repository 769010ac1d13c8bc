//! Figures and the table: one [`Group`] per row, one [`Line`] per contender.

use std::fmt::Write as _;

/// One contender's figures in one row.
pub struct Line {
    pub label: String,
    pub samples: Vec<f64>,
    /// Containers (or runs) behind the figures, failures included.
    pub n: usize,
    pub failures: usize,
    /// A single total-based figure (no spread): min and max are not shown.
    pub mean_only: bool,
}

impl Line {
    pub fn new(label: &str) -> Line {
        Line {
            label: label.into(),
            samples: Vec::new(),
            n: 0,
            failures: 0,
            mean_only: false,
        }
    }

    /// One run: its figure, or why it failed (counted, left out of the figures).
    pub fn record(&mut self, value: Result<f64, String>) {
        self.n += 1;
        match value {
            Ok(v) => self.samples.push(v),
            Err(why) => {
                self.failures += 1;
                eprintln!("bench:   {} failed: {why}", self.label);
            }
        }
    }

    pub fn median(&self) -> Option<f64> {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(s[n / 2]),
            _ => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
        }
    }

    pub fn min(&self) -> Option<f64> {
        self.samples.iter().copied().reduce(f64::min)
    }

    pub fn max(&self) -> Option<f64> {
        self.samples.iter().copied().reduce(f64::max)
    }
}

/// One row of the table: contenders side by side, ratios against the first line.
pub struct Group {
    pub title: String,
    pub unit: &'static str,
    pub lines: Vec<Line>,
    pub notes: Vec<String>,
}

impl Group {
    pub fn new(title: &str, unit: &'static str, lines: Vec<Line>) -> Group {
        Group {
            title: title.into(),
            unit,
            lines,
            notes: Vec::new(),
        }
    }

    /// The median the ratios divide by: the first line's.
    fn baseline(&self) -> Option<f64> {
        self.lines.first().and_then(Line::median)
    }

    pub fn median_of(&self, label: &str) -> Option<f64> {
        self.lines
            .iter()
            .find(|l| l.label == label)
            .and_then(Line::median)
    }
}

/// Wide enough for the longest row title with its unit.
const TITLE_WIDTH: usize = 40;

/// The whole table, under the machine's header.
pub fn render(header: &str, groups: &[Group]) -> String {
    let mut out = String::from(header);
    let _ = writeln!(
        out,
        "\n{:<TITLE_WIDTH$} {:<10} {:>9} {:>9} {:>9} {:>7} {:>5} {:>5}",
        "row", "runtime", "median", "min", "max", "ratio", "n", "fail"
    );
    for group in groups {
        out.push_str(&render_group(group));
    }
    let _ = writeln!(
        out,
        "\nratio: median / median of the row's first line (its baseline). n: runs (containers for\n\
         throughput) behind the figures; fail: runs that did not exit 0 with the expected output,\n\
         left out of the figures."
    );
    out
}

fn render_group(group: &Group) -> String {
    let mut out = String::new();
    let title = format!("{} [{}]", group.title, group.unit);
    for (i, line) in group.lines.iter().enumerate() {
        let first = if i == 0 { title.as_str() } else { "" };
        let cell = |v: Option<f64>| v.map_or("-".to_string(), figure);
        let spread = |v: Option<f64>| {
            if line.mean_only {
                "-".to_string()
            } else {
                cell(v)
            }
        };
        let ratio = match (line.median(), group.baseline()) {
            (Some(m), Some(b)) if b > 0.0 => format!("{:.2}", m / b),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{first:<TITLE_WIDTH$} {:<10} {:>9} {:>9} {:>9} {ratio:>7} {:>5} {:>5}",
            line.label,
            cell(line.median()),
            spread(line.min()),
            spread(line.max()),
            line.n,
            line.failures
        );
    }
    for note in &group.notes {
        let _ = writeln!(out, "{:TITLE_WIDTH$}   {note}", "");
    }
    out
}

/// Three significant figures or so, whatever the magnitude.
pub fn figure(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}
