//! Numbered bind arguments for statements assembled at run time (partial updates,
//! optional filters). `sqlx::QueryBuilder` would write `?` placeholders for `Any`, which
//! Postgres rejects, so placeholders are numbered here: each value pushed returns its
//! `$n`, and `bind` attaches the values in the same order.

use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;

use crate::model::{Page, Paged};

#[derive(Debug, Clone)]
enum Arg {
    Int(i64),
    OptInt(Option<i64>),
    Text(String),
}

#[derive(Debug, Default)]
pub(crate) struct Args {
    values: Vec<Arg>,
}

impl Args {
    fn push(&mut self, arg: Arg) -> String {
        self.values.push(arg);
        format!("${}", self.values.len())
    }

    pub(crate) fn int(&mut self, v: i64) -> String {
        self.push(Arg::Int(v))
    }

    pub(crate) fn opt_int(&mut self, v: Option<i64>) -> String {
        self.push(Arg::OptInt(v))
    }

    pub(crate) fn text(&mut self, v: impl Into<String>) -> String {
        self.push(Arg::Text(v.into()))
    }

    pub(crate) fn bind<'q>(
        &self,
        mut q: Query<'q, Any, AnyArguments<'q>>,
    ) -> Query<'q, Any, AnyArguments<'q>> {
        for v in &self.values {
            q = match v {
                Arg::Int(i) => q.bind(*i),
                Arg::OptInt(i) => q.bind(*i),
                Arg::Text(s) => q.bind(s.clone()),
            };
        }
        q
    }
}

/// `" WHERE a AND b"`, or nothing when there are no conditions.
pub(crate) fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

/// Largest page a caller may ask for; 0 means the default.
const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 50;

/// Adds the keyset condition on `id_col` and returns the `ORDER BY .. LIMIT ..` tail.
pub(crate) fn page_clause(
    args: &mut Args,
    conds: &mut Vec<String>,
    id_col: &str,
    page: Page,
) -> String {
    conds.push(format!("{id_col} > {}", args.int(page.after_id)));
    format!(" ORDER BY {id_col} LIMIT {}", args.int(page_limit(page)))
}

pub(crate) fn page_limit(page: Page) -> i64 {
    let limit = if page.limit == 0 {
        DEFAULT_PAGE
    } else {
        page.limit.min(MAX_PAGE)
    };
    i64::from(limit)
}

/// Wraps rows fetched with `page_clause`; a full page may have a successor.
pub(crate) fn paged<T>(items: Vec<T>, page: Page, id_of: impl Fn(&T) -> i64) -> Paged<T> {
    let full = i64::try_from(items.len()).unwrap_or(i64::MAX) >= page_limit(page);
    let next_after_id = if full { items.last().map(id_of) } else { None };
    Paged {
        items,
        next_after_id,
    }
}
