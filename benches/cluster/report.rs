//! The results: one row per figure (measured, reference, ratio, target, met), printed as a
//! table and written as JSON together with each section's raw numbers.

use std::path::Path;

use serde_json::{json, Map, Value};

/// One figure of the table.
pub struct Row {
    pub figure: String,
    pub measured: String,
    pub reference: String,
    /// Measured over reference, when the target is a ratio.
    pub ratio: Option<f64>,
    pub target: String,
    /// Whether the target is met; `None` when the figure has no target.
    pub met: Option<bool>,
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    json: Map<String, Value>,
}

impl Report {
    /// Records a figure and prints it at once, so that a long run shows progress.
    pub fn row(&mut self, row: Row) {
        println!(
            "  {}: {} (reference: {}; ratio {}; target {}; met {})",
            row.figure,
            row.measured,
            row.reference,
            ratio_text(row.ratio),
            row.target,
            met_text(row.met)
        );
        self.rows.push(row);
    }

    /// Records a section's raw numbers under `name` in the JSON.
    pub fn section(&mut self, name: &str, value: Value) {
        self.json.insert(name.into(), value);
    }

    /// Prints the table and writes the JSON to `path`.
    pub fn finish(&self, path: &Path) {
        println!();
        println!("| figure | measured | reference in the same run | ratio | target | met |");
        println!("|---|---|---|---|---|---|");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                r.figure,
                r.measured,
                r.reference,
                ratio_text(r.ratio),
                r.target,
                met_text(r.met)
            );
        }
        let mut json = self.json.clone();
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({"figure": r.figure, "measured": r.measured, "reference": r.reference,
                       "ratio": r.ratio, "target": r.target, "met": r.met})
            })
            .collect();
        json.insert("rows".into(), Value::Array(rows));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the results dir");
        }
        let text = serde_json::to_string_pretty(&Value::Object(json)).expect("results as JSON");
        std::fs::write(path, text).expect("write results");
        println!("\nJSON written to {}", path.display());
    }
}

fn ratio_text(ratio: Option<f64>) -> String {
    ratio.map_or("-".into(), |r| format!("{r:.2}"))
}

fn met_text(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}
