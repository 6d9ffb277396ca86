//! `--plot DIR`: small SVG line charts a person can look at (no plotting dependency).

use super::metric::Metric;
use std::fmt::Write;
use std::path::Path;

const W: f64 = 640.0;
const H: f64 = 400.0;
const L: f64 = 70.0;
const R: f64 = 20.0;
const T: f64 = 40.0;
const B: f64 = 50.0;
const COLORS: [&str; 5] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

/// A line chart: one point per x label, one line per series.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, xs: &[String], series: &[(&str, Vec<f64>)]) -> String {
    let ymax = series.iter().flat_map(|s| s.1.iter().copied()).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let n = xs.len().max(2);
    let px = |i: usize| L + (W - L - R) * i as f64 / (n - 1) as f64;
    let py = |v: f64| H - B - (H - T - B) * v / ymax;
    let mut s = String::new();
    let _ = write!(s, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(s, r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{title}</text>"#, W / 2.0);
    let _ = write!(s, r#"<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="black"/>"#, H - B, W - R, H - B, H - B);
    for k in 0..=4 {
        let v = ymax * k as f64 / 4.0;
        let _ = write!(s, r##"<line x1="{L}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{v:.1}</text>"##, W - R, L - 6.0, py(v) + 4.0, y = py(v));
    }
    for (i, x) in xs.iter().enumerate() {
        let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle">{x}</text>"#, px(i), H - B + 18.0);
    }
    let _ = write!(s, r#"<text x="{}" y="{}" text-anchor="middle">{x_label}</text>"#, (L + W - R) / 2.0, H - 10.0);
    let _ = write!(s, r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{y_label}</text>"#, H / 2.0, H / 2.0);
    for (k, (name, ys)) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        let pts: Vec<String> = ys.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", px(i), py(*v))).collect();
        let _ = write!(s, r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#, pts.join(" "));
        let _ = write!(s, r#"<rect x="{}" y="{}" width="12" height="3" fill="{c}"/><text x="{}" y="{}">{name}</text>"#, L + 10.0, T + 8.0 + 16.0 * k as f64, L + 26.0, T + 12.0 + 16.0 * k as f64);
    }
    s + "</svg>\n"
}

fn value(m: &[Metric], name: &str) -> f64 {
    m.iter().find(|x| x.name == name).map(|x| x.value).unwrap_or(0.0)
}

/// Bandwidth by message size and the PUT+ACK latency CDF.
pub fn dma_charts(dir: &Path, sizes: &[usize], m: &[Metric], rtt_us: &[f64]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let xs: Vec<String> = sizes.iter().map(|s| if *s >= 1 << 20 { format!("{}M", s >> 20) } else { format!("{}K", s >> 10) }).collect();
    let put: Vec<f64> = sizes.iter().map(|s| value(m, &format!("dma_put_{}KiB_GBps", s >> 10))).collect();
    let get: Vec<f64> = sizes.iter().map(|s| value(m, &format!("dma_get_{}KiB_GBps", s >> 10))).collect();
    let base: Vec<f64> = sizes.iter().map(|s| m.iter().find(|x| x.name == format!("dma_put_{}KiB_GBps", s >> 10)).and_then(|x| x.baseline).unwrap_or(0.0)).collect();
    std::fs::write(dir.join("dma_bandwidth_vs_size.svg"), line_chart("DMA LND bandwidth by message size", "message size", "GB/s", &xs, &[("PUT", put), ("GET", get), ("memcpy (limit)", base)]))?;
    let mut v = rtt_us.to_vec();
    v.sort_by(f64::total_cmp);
    let qs: [f64; 7] = [0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999];
    let xs: Vec<String> = qs.iter().map(|q| format!("p{}", (q * 1000.0).round() / 10.0)).collect();
    let ys: Vec<f64> = qs.iter().map(|q| v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1))).copied().unwrap_or(0.0)).collect();
    std::fs::write(dir.join("dma_put_ack_latency.svg"), line_chart("0-byte PUT+ACK round trip (quantiles)", "quantile", "µs", &xs, &[("latency", ys)]))?;
    Ok(())
}
