//! Prometheus exposition for both planes' `/metrics`: OpenMetrics text (what
//! `prometheus-client` writes) when the scraper asks for it in `Accept`, otherwise the
//! classic text format 0.0.4 (what `curl`, older scrapers and `promtool check metrics`
//! read). Names follow `tollgate_<thing>_<unit>`; labels take only bounded values.

use prometheus_client::registry::Registry;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The registry's text in the format `accept` asks for, with its content type.
pub fn render(registry: &Registry, accept: Option<&str>) -> (String, &'static str) {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    if wants_openmetrics(accept) {
        (out, OPENMETRICS)
    } else {
        (to_classic(&out), CLASSIC)
    }
}

/// Prometheus asks with `Accept: application/openmetrics-text;…,text/plain;…`.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// OpenMetrics text → classic text. The two differ, for what `prometheus-client`
/// writes here, in three places: a counter's family is named without `_total` in
/// OpenMetrics (its samples carry it) but with it in the classic format; `# UNIT` lines
/// and the `# EOF` marker exist only in OpenMetrics.
pub fn to_classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                if !tail.is_empty() {
                    out.push(' ');
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    fn registry() -> Registry {
        let mut r = Registry::with_prefix("tollgate");
        let c = Counter::<u64>::default();
        c.inc();
        r.register("things", "Things seen", c);
        let g = Gauge::<i64>::default();
        g.set(3);
        r.register("open", "Open things", g);
        r
    }

    #[test]
    fn classic_text_names_counter_families_with_total_and_has_no_eof() {
        let (text, ct) = render(&registry(), Some("*/*"));
        assert_eq!(ct, CLASSIC);
        assert!(
            text.contains("# HELP tollgate_things_total Things seen.\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE tollgate_things_total counter\n"),
            "{text}"
        );
        assert!(text.contains("tollgate_things_total 1\n"), "{text}");
        assert!(
            text.contains("# TYPE tollgate_open gauge\ntollgate_open 3\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn openmetrics_when_asked() {
        let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        let (text, ct) = render(&registry(), Some(accept));
        assert_eq!(ct, OPENMETRICS);
        assert!(text.contains("# TYPE tollgate_things counter\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
