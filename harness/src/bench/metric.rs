//! One benchmark figure next to its baseline from the same run, printed as a line or JSON.

use serde::{Deserialize, Serialize};

/// One result line: `{"name","value","unit","baseline","ratio"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub baseline: Option<f64>,
    pub ratio: Option<f64>,
}

impl Metric {
    pub fn new(name: &str, value: f64, unit: &str, baseline: Option<f64>) -> Metric {
        let ratio = baseline.filter(|b| *b > 0.0).map(|b| value / b);
        Metric { name: name.into(), value, unit: unit.into(), baseline, ratio }
    }

    pub fn print(&self, json: bool) {
        if json {
            println!("{}", serde_json::to_string(self).expect("metric serializes"));
        } else {
            let b = self.baseline.map(|b| format!("{b:.3}")).unwrap_or_else(|| "-".into());
            let r = self.ratio.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into());
            println!("{:<28} {:>12.3} {:<6} baseline {:>10} ratio {:>6}", self.name, self.value, self.unit, b, r);
        }
    }
}
