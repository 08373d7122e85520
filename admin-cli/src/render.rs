//! Output. Each resource describes a value once as a [`Record`] of typed fields; the
//! record then renders either as a table (`comfy-table`) or as a JSON object.
//!
//! JSON conventions (stable, for scripts): snake_case keys as in the proto; money field
//! `x` appears as `x_nanos` (integer) and `x_usd` (exact decimal string); time field `x`
//! as `x_ms` (unix ms) and `x` (RFC 3339 UTC), both `null` when unset. Lists are objects
//! `{"<items>": [...], "next_page_token": "..."}`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use comfy_table::{ContentArrangement, Table, presets};
use serde_json::{Map, Value, json};
use tollgate_shared::money::format_usd;

use super::CliError;
use super::values::format_time;

/// One typed field value.
#[derive(Debug, Clone)]
pub enum V {
    Null,
    Int(i64),
    Str(String),
    Bool(bool),
    /// nano-USD.
    Usd(i64),
    /// unix ms; `None` = not set.
    Time(Option<i64>),
    OptInt(Option<i64>),
    List(Vec<String>),
    Map(BTreeMap<String, String>),
    Rec(Record),
    Recs(Vec<Record>),
}

/// An ordered list of named fields.
#[derive(Debug, Clone, Default)]
pub struct Record(Vec<(&'static str, V)>);

impl Record {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, key: &'static str, v: V) -> Self {
        self.0.push((key, v));
        self
    }

    pub fn int(self, key: &'static str, v: impl Into<i64>) -> Self {
        self.with(key, V::Int(v.into()))
    }

    pub fn opt_int(self, key: &'static str, v: Option<i64>) -> Self {
        self.with(key, V::OptInt(v))
    }

    pub fn str(self, key: &'static str, v: &str) -> Self {
        self.with(key, V::Str(v.to_owned()))
    }

    pub fn bool(self, key: &'static str, v: bool) -> Self {
        self.with(key, V::Bool(v))
    }

    /// Money: `key` without the `_nanos` suffix.
    pub fn usd(self, key: &'static str, nanos: i64) -> Self {
        self.with(key, V::Usd(nanos))
    }

    /// A time: `key` without the `_ms` suffix.
    pub fn time(self, key: &'static str, ms: i64) -> Self {
        self.with(key, V::Time(Some(ms)))
    }

    pub fn opt_time(self, key: &'static str, ms: Option<i64>) -> Self {
        self.with(key, V::Time(ms))
    }

    pub fn list(self, key: &'static str, v: &[String]) -> Self {
        self.with(key, V::List(v.to_vec()))
    }

    pub fn map(self, key: &'static str, v: &HashMap<String, String>) -> Self {
        let sorted = v.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.with(key, V::Map(sorted))
    }

    pub fn rec(self, key: &'static str, v: Option<Record>) -> Self {
        self.with(key, v.map_or(V::Null, V::Rec))
    }

    pub fn recs(self, key: &'static str, v: Vec<Record>) -> Self {
        self.with(key, V::Recs(v))
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (key, v) in &self.0 {
            match v {
                V::Usd(n) => {
                    m.insert(format!("{key}_nanos"), json!(n));
                    m.insert(format!("{key}_usd"), json!(format_usd(*n)));
                }
                V::Time(t) => {
                    m.insert(format!("{key}_ms"), json!(t));
                    m.insert((*key).to_owned(), json!(t.map(format_time)));
                }
                other => {
                    m.insert((*key).to_owned(), other.to_json());
                }
            }
        }
        Value::Object(m)
    }

    /// The field at `path` ("usage.requests" looks into a nested record).
    fn lookup(&self, path: &str) -> Option<&V> {
        let (head, rest) = match path.split_once('.') {
            Some((h, r)) => (h, Some(r)),
            None => (path, None),
        };
        let v = self.0.iter().find(|(k, _)| *k == head).map(|(_, v)| v)?;
        match (rest, v) {
            (None, v) => Some(v),
            (Some(r), V::Rec(inner)) => inner.lookup(r),
            _ => None,
        }
    }

    /// (label, cell) rows, nested records flattened with dotted labels.
    fn rows(&self, prefix: &str, out: &mut Vec<(String, String)>) {
        for (key, v) in &self.0 {
            let name = format!("{prefix}{key}");
            match v {
                V::Rec(inner) => inner.rows(&format!("{name}."), out),
                other => out.push((label(&name, other), other.cell())),
            }
        }
    }

    /// `k=v k=v` on one line, for records inside a table cell.
    fn compact(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={}", v.cell()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl V {
    fn to_json(&self) -> Value {
        match self {
            V::Null => Value::Null,
            V::Int(n) | V::Usd(n) => json!(n),
            V::Str(s) => json!(s),
            V::Bool(b) => json!(b),
            V::Time(t) | V::OptInt(t) => json!(t),
            V::List(l) => json!(l),
            V::Map(m) => json!(m),
            V::Rec(r) => r.to_json(),
            V::Recs(rs) => Value::Array(rs.iter().map(Record::to_json).collect()),
        }
    }

    fn cell(&self) -> String {
        match self {
            V::Null | V::Time(None) | V::OptInt(None) => "-".into(),
            V::Int(n) | V::OptInt(Some(n)) => n.to_string(),
            V::Str(s) => s.clone(),
            V::Bool(b) => if *b { "yes" } else { "no" }.into(),
            V::Usd(n) => format_usd(*n),
            V::Time(Some(t)) => format_time(*t),
            V::List(l) => l.join(", "),
            V::Map(m) => m
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            V::Rec(r) => r.compact(),
            V::Recs(rs) => rs
                .iter()
                .map(Record::compact)
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

fn label(name: &str, v: &V) -> String {
    match v {
        V::Usd(_) => format!("{name} (USD)"),
        _ => name.to_owned(),
    }
}

fn new_table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    t
}

/// A vertical `field | value` table of one record.
pub fn detail_table(r: &Record) -> Table {
    let mut rows = Vec::new();
    r.rows("", &mut rows);
    let mut t = new_table();
    t.set_header(["field", "value"]);
    for (k, v) in rows {
        t.add_row([k, v]);
    }
    t
}

/// One row per record, the given columns (dotted paths reach into nested records).
pub fn list_table(records: &[Record], columns: &[&str]) -> Table {
    let mut t = new_table();
    let header: Vec<String> = columns
        .iter()
        .map(|c| {
            let sample = records.iter().find_map(|r| r.lookup(c));
            sample.map_or_else(|| (*c).to_owned(), |v| label(c, v))
        })
        .collect();
    t.set_header(header);
    for r in records {
        t.add_row(
            columns
                .iter()
                .map(|c| r.lookup(c).map_or_else(|| "-".to_owned(), V::cell)),
        );
    }
    t
}

/// Where output goes, and in which form.
pub struct Out<'a> {
    w: &'a mut dyn Write,
    json: bool,
}

impl<'a> Out<'a> {
    pub fn new(w: &'a mut dyn Write, json: bool) -> Self {
        Self { w, json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    pub fn json(&mut self, v: &Value) -> Result<(), CliError> {
        serde_json::to_writer_pretty(&mut *self.w, v)?;
        writeln!(self.w)?;
        Ok(())
    }

    pub fn line(&mut self, s: &str) -> Result<(), CliError> {
        writeln!(self.w, "{s}")?;
        Ok(())
    }

    pub fn table(&mut self, t: &Table) -> Result<(), CliError> {
        writeln!(self.w, "{t}")?;
        Ok(())
    }

    /// One object: a field/value table or a JSON object.
    pub fn record(&mut self, r: &Record) -> Result<(), CliError> {
        if self.json {
            self.json(&r.to_json())
        } else {
            self.table(&detail_table(r))
        }
    }

    /// A page of a list: a table of `columns`, or `{"<items>": [...], "next_page_token"}`.
    pub fn page(
        &mut self,
        items: &str,
        records: &[Record],
        columns: &[&str],
        next_page_token: &str,
    ) -> Result<(), CliError> {
        if self.json {
            let list: Vec<Value> = records.iter().map(Record::to_json).collect();
            let mut m = Map::new();
            m.insert(items.to_owned(), Value::Array(list));
            m.insert("next_page_token".into(), json!(next_page_token));
            return self.json(&Value::Object(m));
        }
        if records.is_empty() {
            self.line(&format!("no {items}"))?;
        } else {
            self.table(&list_table(records, columns))?;
        }
        if !next_page_token.is_empty() {
            self.line(&format!(
                "more results: repeat with --page-token {next_page_token}"
            ))?;
        }
        Ok(())
    }

    /// A call with an empty answer (deletes): `{"deleted": true, "<what>": id}` or a line.
    pub fn deleted(&mut self, what: &'static str, id: Value) -> Result<(), CliError> {
        if self.json {
            let mut m = Map::new();
            m.insert("deleted".into(), json!(true));
            m.insert(what.to_owned(), id.clone());
            self.json(&Value::Object(m))
        } else {
            let shown = id.as_str().map_or_else(|| id.to_string(), str::to_owned);
            self.line(&format!("deleted {what} {shown}"))
        }
    }

    /// A delete that may have disabled API keys (`--cascade`): says how many.
    pub fn deleted_disabling(
        &mut self,
        what: &'static str,
        id: i64,
        keys_disabled: i64,
    ) -> Result<(), CliError> {
        if self.json {
            let r = json!({"deleted": true, what: id, "keys_disabled": keys_disabled});
            self.json(&r)
        } else if keys_disabled == 0 {
            self.line(&format!("deleted {what} {id}"))
        } else {
            let s = if keys_disabled == 1 { "" } else { "s" };
            self.line(&format!(
                "deleted {what} {id}; disabled {keys_disabled} API key{s}"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record::new()
            .int("id", 7)
            .str("name", "ops")
            .usd("balance", 12_500_000_000)
            .time("created_at", 1_738_324_800_000)
            .opt_time("expires_at", None)
            .opt_int("group_id", None)
            .list("ip_allow", &["10.0.0.0/8".to_owned()])
            .rec("usage", Some(Record::new().int("requests", 3)))
    }

    #[test]
    fn json_carries_money_and_times_both_ways() {
        let j = sample().to_json();
        assert_eq!(j["id"], 7);
        assert_eq!(j["balance_nanos"], 12_500_000_000_i64);
        assert_eq!(j["balance_usd"], "12.5");
        assert_eq!(j["created_at_ms"], 1_738_324_800_000_i64);
        assert_eq!(j["created_at"], "2025-01-31T12:00:00Z");
        assert!(j["expires_at_ms"].is_null() && j["expires_at"].is_null());
        assert!(j["group_id"].is_null());
        assert_eq!(j["ip_allow"][0], "10.0.0.0/8");
        assert_eq!(j["usage"]["requests"], 3);
    }

    #[test]
    fn tables_show_usd_and_rfc3339() {
        let text = detail_table(&sample()).to_string();
        assert!(text.contains("balance (USD)"), "{text}");
        assert!(text.contains("12.5"), "{text}");
        assert!(text.contains("2025-01-31T12:00:00Z"), "{text}");
        assert!(text.contains("usage.requests"), "{text}");
        let text =
            list_table(&[sample()], &["id", "balance", "usage.requests", "nope"]).to_string();
        assert!(
            text.contains("balance (USD)") && text.contains("12.5"),
            "{text}"
        );
        assert!(text.contains("usage.requests"), "{text}");
    }

    #[test]
    fn pages_and_deletes() {
        let mut buf = Vec::new();
        let mut out = Out::new(&mut buf, true);
        out.page("users", &[sample()], &["id"], "next").unwrap();
        out.deleted("user", json!(7)).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let mut it = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
        let page = it.next().unwrap().unwrap();
        assert_eq!(page["users"][0]["id"], 7);
        assert_eq!(page["next_page_token"], "next");
        let del = it.next().unwrap().unwrap();
        assert_eq!(del, json!({"deleted": true, "user": 7}));

        let mut buf = Vec::new();
        let mut out = Out::new(&mut buf, false);
        out.page("users", &[], &["id"], "").unwrap();
        out.deleted("price", json!("gpt-5")).unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "no users\ndeleted price gpt-5\n"
        );
    }
}
