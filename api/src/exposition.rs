//! Metric exposition formats. berth's registries encode OpenMetrics 1.0; a scraper that asks
//! for the Prometheus text format 0.0.4 (`Accept: text/plain; version=0.0.4`, what Prometheus
//! sends when OpenMetrics is disabled, and what many agents and `curl` users get by default)
//! receives that format instead, converted from the OpenMetrics text:
//!
//! * a counter family `x` with samples `x_total` is announced as `x_total` (0.0.4 names the
//!   family by its sample), `_created` samples are dropped;
//! * `info` and `stateset` families become gauges, `unknown` and `gaugehistogram` untyped;
//! * `# UNIT` and `# EOF` lines and exemplars go (0.0.4 has none of them).

use std::collections::HashMap;
use std::fmt::Write as _;

/// The content type of an OpenMetrics 1.0 body.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of a Prometheus text format 0.0.4 body.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An exposition format a scrape can be answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    PrometheusText,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS,
            Format::PrometheusText => PROMETHEUS_TEXT,
        }
    }
}

/// The format to answer a scrape with, from its `Accept` header: the acceptable one with the
/// higher quality, OpenMetrics on a tie, the Prometheus text format when the header is absent,
/// unparsable or names neither (as Prometheus' own client libraries do).
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::PrometheusText;
    };
    let (mut om, mut text) = (0.0f32, 0.0f32);
    // A header longer than this is not from a scraper; the prefix decides.
    let accept = accept.get(..accept.len().min(4096)).unwrap_or(accept);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut q = 1.0f32;
        for p in parts {
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                q = v
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .unwrap_or(0.0);
            }
        }
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" => text = text.max(q),
            "*/*" => text = text.max(q.min(1.0) * 0.999),
            _ => {}
        }
    }
    if om > 0.0 && om >= text {
        Format::OpenMetrics
    } else {
        Format::PrometheusText
    }
}

/// The body for `format`, from an OpenMetrics text.
pub fn render(openmetrics: &str, format: Format) -> String {
    match format {
        Format::OpenMetrics => openmetrics.to_owned(),
        Format::PrometheusText => to_prometheus_text(openmetrics),
    }
}

/// Converts an OpenMetrics 1.0 text into the Prometheus text format 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let types: HashMap<&str, &str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, ty)| (name, ty.trim()))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    let mut family: Option<(&str, &str)> = None; // (name, OpenMetrics type)
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut it = rest.splitn(3, ' ');
            let (kw, name, tail) = (
                it.next().unwrap_or_default(),
                it.next().unwrap_or_default(),
                it.next().unwrap_or_default(),
            );
            let ty = types.get(name).copied().unwrap_or("unknown");
            family = Some((name, ty));
            match kw {
                "HELP" => {
                    let help = tail.replace("\\\"", "\"");
                    let _ = writeln!(out, "# HELP {} {}", text_name(name, ty), help);
                }
                "TYPE" => {
                    let _ = writeln!(out, "# TYPE {} {}", text_name(name, ty), text_type(ty));
                }
                // UNIT, EOF and anything else have no 0.0.4 form.
                _ => {}
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        // Exemplars follow the value as ` # {labels} value [timestamp]`.
        let sample = match line.find(" # {") {
            Some(i) => &line[..i],
            None => line,
        };
        let metric = sample.split(['{', ' ']).next().unwrap_or_default();
        if let Some((name, ty)) = family
            && matches!(ty, "counter" | "histogram" | "summary")
            && metric.strip_suffix("_created") == Some(name)
        {
            continue;
        }
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// The name 0.0.4 announces a family under.
fn text_name(name: &str, om_type: &str) -> String {
    match om_type {
        "counter" => format!("{name}_total"),
        "info" => format!("{name}_info"),
        _ => name.to_owned(),
    }
}

fn text_type(om_type: &str) -> &'static str {
    match om_type {
        "counter" => "counter",
        "gauge" | "info" | "stateset" => "gauge",
        "histogram" => "histogram",
        "summary" => "summary",
        _ => "untyped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = "# HELP berth_reconciles Reconciles by \\\"result\\\".\n\
# TYPE berth_reconciles counter\n\
berth_reconciles_total{class=\"berth.io/http\",result=\"success\"} 3\n\
berth_reconciles_created{class=\"berth.io/http\",result=\"success\"} 1700000000.0\n\
# HELP berth_reconcile_duration_seconds Reconcile time.\n\
# TYPE berth_reconcile_duration_seconds histogram\n\
# UNIT berth_reconcile_duration_seconds seconds\n\
berth_reconcile_duration_seconds_sum{class=\"a\"} 0.5\n\
berth_reconcile_duration_seconds_count{class=\"a\"} 2\n\
berth_reconcile_duration_seconds_bucket{le=\"0.1\",class=\"a\"} 1 # {trace_id=\"x\"} 0.05\n\
berth_reconcile_duration_seconds_bucket{le=\"+Inf\",class=\"a\"} 2\n\
# HELP berth_leader Classes led.\n\
# TYPE berth_leader gauge\n\
berth_leader 1\n\
# HELP berth_build Build.\n\
# TYPE berth_build info\n\
berth_build_info{version=\"0.1.0\"} 1\n\
# EOF\n";

    #[test]
    fn converts_openmetrics_to_text_0_0_4() {
        let t = to_prometheus_text(OM);
        assert_eq!(
            t,
            "# HELP berth_reconciles_total Reconciles by \"result\".\n\
# TYPE berth_reconciles_total counter\n\
berth_reconciles_total{class=\"berth.io/http\",result=\"success\"} 3\n\
# HELP berth_reconcile_duration_seconds Reconcile time.\n\
# TYPE berth_reconcile_duration_seconds histogram\n\
berth_reconcile_duration_seconds_sum{class=\"a\"} 0.5\n\
berth_reconcile_duration_seconds_count{class=\"a\"} 2\n\
berth_reconcile_duration_seconds_bucket{le=\"0.1\",class=\"a\"} 1\n\
berth_reconcile_duration_seconds_bucket{le=\"+Inf\",class=\"a\"} 2\n\
# HELP berth_leader Classes led.\n\
# TYPE berth_leader gauge\n\
berth_leader 1\n\
# HELP berth_build_info Build.\n\
# TYPE berth_build_info gauge\n\
berth_build_info{version=\"0.1.0\"} 1\n"
        );
        assert!(!t.contains("# EOF") && !t.contains("# UNIT"));
    }

    #[test]
    fn negotiates_like_a_scraper_expects() {
        use Format::*;
        let prometheus_default = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let cases: &[(Option<&str>, Format)] = &[
            (None, PrometheusText),
            (Some(""), PrometheusText),
            (Some("*/*"), PrometheusText),
            (Some("text/plain; version=0.0.4"), PrometheusText),
            (
                Some("text/plain;version=0.0.4;q=1,*/*;q=0.1"),
                PrometheusText,
            ),
            (
                Some("application/openmetrics-text; version=1.0.0"),
                OpenMetrics,
            ),
            (Some(prometheus_default), OpenMetrics),
            (
                Some("application/openmetrics-text;q=0.2,text/plain;q=0.9"),
                PrometheusText,
            ),
            (
                Some("application/openmetrics-text;q=0.9,text/plain;q=0.9"),
                OpenMetrics,
            ),
            (Some("application/openmetrics-text;q=0"), PrometheusText),
            (
                Some("application/openmetrics-text;q=banana"),
                PrometheusText,
            ),
            (Some("application/json"), PrometheusText),
            (Some(";;;,,,=q;"), PrometheusText),
        ];
        for (accept, want) in cases {
            assert_eq!(negotiate(*accept), *want, "Accept: {accept:?}");
        }
        assert_eq!(render(OM, OpenMetrics), OM);
        assert_eq!(PrometheusText.content_type(), PROMETHEUS_TEXT);
    }
}
