//! Printing results as tables or JSON: the typed results of the services' functions, as JSON
//! objects ([`print_json_rows`], [`print_sections`]), and the rows of the user's own SQL
//! (`dbos sql`, the only SQL the CLI runs).
//!
//! The user's SQL runs through the simple-query protocol, so every value arrives as text
//! whatever its type; the column types then decide how a value is written in JSON.

use std::io::Write;

use anyhow::Result;
use futures_util::TryStreamExt;
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::{Column, Either, PgConnection, Row, TypeInfo, ValueRef};

/// Output style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    Table,
    Json,
}

impl Format {
    pub(super) fn from_json_flag(json: bool) -> Format {
        if json {
            Format::Json
        } else {
            Format::Table
        }
    }
}

/// The result of one statement.
#[derive(Debug, Default)]
pub(super) struct ResultSet {
    columns: Vec<(String, String)>,
    rows: Vec<Vec<Option<String>>>,
    rows_affected: u64,
}

/// Runs the user's statements (`dbos sql`) and collects each one's rows.
pub(super) async fn run_query(
    conn: &mut PgConnection,
    query: &str,
) -> Result<Vec<ResultSet>, sqlx::Error> {
    let mut sets = Vec::new();
    let mut current = ResultSet::default();
    let mut stream = sqlx::raw_sql(query).fetch_many(&mut *conn);
    while let Some(item) = stream.try_next().await? {
        match item {
            Either::Left(done) => {
                current.rows_affected = done.rows_affected();
                sets.push(std::mem::take(&mut current));
            }
            Either::Right(row) => current.push(&row)?,
        }
    }
    drop(stream);
    // A query of one statement that returned no row: its columns, so it prints as an empty
    // table rather than as a statement that changed nothing. Described only then, and only a
    // single statement can be.
    if let [set] = sets.as_mut_slice() {
        if set.columns.is_empty() && set.rows_affected == 0 {
            if let Ok(d) = sqlx::Executor::describe(&mut *conn, query).await {
                set.columns = d
                    .columns()
                    .iter()
                    .map(|c| (c.name().to_owned(), c.type_info().name().to_owned()))
                    .collect();
            }
        }
    }
    Ok(sets)
}

impl ResultSet {
    fn push(&mut self, row: &PgRow) -> Result<(), sqlx::Error> {
        if self.columns.is_empty() {
            self.columns = row
                .columns()
                .iter()
                .map(|c| (c.name().to_owned(), c.type_info().name().to_owned()))
                .collect();
        }
        let mut values = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            let raw = row.try_get_raw(i)?;
            values.push(if raw.is_null() {
                None
            } else {
                Some(raw.as_str().map_err(sqlx::Error::Decode)?.to_owned())
            });
        }
        self.rows.push(values);
        Ok(())
    }

    fn to_json(&self) -> Vec<Value> {
        self.rows
            .iter()
            .map(|row| {
                let mut obj = Map::new();
                for ((name, ty), v) in self.columns.iter().zip(row) {
                    obj.insert(name.clone(), json_value(ty, v.as_deref()));
                }
                Value::Object(obj)
            })
            .collect()
    }
}

/// A text value as JSON, typed by its Postgres type name.
fn json_value(ty: &str, v: Option<&str>) -> Value {
    let Some(v) = v else { return Value::Null };
    match ty {
        "BOOL" => Value::Bool(v == "t"),
        "INT2" | "INT4" | "INT8" | "OID" => v
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(v.to_owned())),
        "FLOAT4" | "FLOAT8" => match v.parse::<f64>() {
            Ok(f) if f.is_finite() => Value::from(f),
            _ => Value::String(v.to_owned()),
        },
        "NUMERIC" => exact_number(v).unwrap_or_else(|| Value::String(v.to_owned())),
        "JSON" | "JSONB" => serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned())),
        _ => Value::String(v.to_owned()),
    }
}

/// A `numeric` as a JSON number when one holds it exactly: an integer within 64 bits, or a
/// decimal that a double gives back digit for digit (`0.1`, `1.50`). Otherwise `None`, and
/// the caller keeps the exact text as a string (a sum beyond 2^63, `12345678901234567.89`).
fn exact_number(v: &str) -> Option<Value> {
    if let Ok(i) = v.parse::<i64>() {
        return Some(Value::from(i));
    }
    if let Ok(u) = v.parse::<u64>() {
        return Some(Value::from(u));
    }
    let f = v.parse::<f64>().ok().filter(|f| f.is_finite())?;
    let canonical = |t: &str| -> String {
        let t = t.strip_prefix('+').unwrap_or(t);
        match t.split_once('.') {
            Some((int, frac)) => {
                let frac = frac.trim_end_matches('0');
                if frac.is_empty() {
                    int.to_owned()
                } else {
                    format!("{int}.{frac}")
                }
            }
            None => t.to_owned(),
        }
    };
    (!v.contains(['e', 'E']) && canonical(&f.to_string()) == canonical(v)).then(|| Value::from(f))
}

/// Prints every statement's rows: tables for people, or one JSON array of the row objects of
/// every row-returning statement.
pub(super) fn print_sets(sets: &[ResultSet], format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let rows: Vec<Value> = sets.iter().flat_map(ResultSet::to_json).collect();
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        Format::Table => {
            for set in sets {
                if set.columns.is_empty() {
                    writeln!(out, "OK ({} rows affected)", set.rows_affected)?;
                } else {
                    write_table(&mut out, set)?;
                }
            }
        }
    }
    Ok(())
}

/// A titled table of `dbos status`: rows as JSON objects, and the columns it shows.
pub(super) struct Section<'a> {
    /// Its title, and its key in JSON.
    pub(super) name: &'a str,
    /// The keys of each row shown, in order.
    pub(super) columns: &'a [&'a str],
    /// The rows.
    pub(super) rows: Vec<Value>,
}

/// Prints named sections (`dbos status`): titled tables, or one JSON object of row arrays;
/// either way only the section's columns of each row.
pub(super) fn print_sections(sections: &[Section<'_>], format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            let obj: Map<String, Value> = sections
                .iter()
                .map(|s| {
                    let rows = s
                        .rows
                        .iter()
                        .map(|r| {
                            let picked: Map<String, Value> = s
                                .columns
                                .iter()
                                .map(|c| ((*c).to_owned(), r.get(*c).cloned().unwrap_or_default()))
                                .collect();
                            Value::Object(picked)
                        })
                        .collect();
                    (s.name.to_owned(), Value::Array(rows))
                })
                .collect();
            serde_json::to_writer_pretty(&mut out, &obj)?;
            writeln!(out)?;
        }
        Format::Table => {
            for s in sections {
                writeln!(out, "{}:", s.name)?;
                write_table(&mut out, &json_table(&s.rows, s.columns))?;
                writeln!(out)?;
            }
        }
    }
    Ok(())
}

fn write_table(out: &mut impl Write, set: &ResultSet) -> Result<()> {
    let mut widths: Vec<usize> = set.columns.iter().map(|(n, _)| n.chars().count()).collect();
    for row in &set.rows {
        for (w, v) in widths.iter_mut().zip(row) {
            *w = (*w).max(v.as_deref().map_or(0, |v| v.chars().count()));
        }
    }
    let line = |cells: Vec<&str>| -> String {
        cells
            .iter()
            .zip(&widths)
            // Padded by hand: `{:<w$}` panics for widths beyond u16::MAX, and a cell may hold
            // a whole message or argv.
            .map(|(c, w)| format!(" {c}{} ", " ".repeat(w.saturating_sub(c.chars().count()))))
            .collect::<Vec<_>>()
            .join("|")
            .trim_end()
            .to_owned()
    };
    writeln!(
        out,
        "{}",
        line(set.columns.iter().map(|(n, _)| n.as_str()).collect())
    )?;
    writeln!(
        out,
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    )?;
    for row in &set.rows {
        writeln!(
            out,
            "{}",
            line(row.iter().map(|v| v.as_deref().unwrap_or("")).collect())
        )?;
    }
    let n = set.rows.len();
    writeln!(out, "({n} row{})", if n == 1 { "" } else { "s" })?;
    Ok(())
}

/// A database error as a person should read it: the server's message, detail, hint and code.
pub(super) fn describe_db_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>();
            let mut s = db.message().to_owned();
            if let Some(pg) = pg {
                if let Some(d) = pg.detail() {
                    s.push_str(&format!("\ndetail: {d}"));
                }
                if let Some(h) = pg.hint() {
                    s.push_str(&format!("\nhint: {h}"));
                }
                if let Some(sqlx::postgres::PgErrorPosition::Original(p)) = pg.position() {
                    s.push_str(&format!("\nat character {p}"));
                }
            }
            if let Some(code) = db.code() {
                s.push_str(&format!(" (SQLSTATE {code})"));
            }
            s
        }
        other => other.to_string(),
    }
}

/// Prints JSON objects: as JSON, or as a table of `columns` (every key when empty, one
/// `key: value` line each for a single object).
pub(super) fn print_json_rows(rows: &[Value], columns: &[&str], format: Format) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut out, rows)?;
        writeln!(out)?;
        return Ok(());
    }
    if columns.is_empty() {
        for row in rows {
            if let Value::Object(m) = row {
                let w = m.keys().map(|k| k.len()).max().unwrap_or(0);
                for (k, v) in m {
                    writeln!(out, "{k:<w$}  {}", text(v))?;
                }
            }
        }
        return Ok(());
    }
    write_table(&mut out, &json_table(rows, columns))
}

/// JSON objects as a table of `columns`: strings as they are, null as nothing, other values
/// as JSON.
fn json_table(rows: &[Value], columns: &[&str]) -> ResultSet {
    ResultSet {
        columns: columns
            .iter()
            .map(|c| ((*c).to_owned(), String::new()))
            .collect(),
        rows: rows
            .iter()
            .map(|r| {
                columns
                    .iter()
                    .map(|c| r.get(*c).map(text).filter(|s| !s.is_empty()))
                    .collect()
            })
            .collect(),
        rows_affected: 0,
    }
}

/// A JSON value as a table cell.
fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints the result of a command: a JSON object, or `key  value` lines.
pub(super) fn print_message(v: &Value, format: Format) -> Result<()> {
    if format == Format::Json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, v)?;
        writeln!(out)?;
        return Ok(());
    }
    print_json_rows(std::slice::from_ref(v), &[], format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_stay_exact() {
        let n = |v: &str| json_value("NUMERIC", Some(v));
        assert_eq!(
            n("9007199254740993"),
            serde_json::json!(9007199254740993_i64)
        );
        assert_eq!(n("18446744073709551615"), serde_json::json!(u64::MAX));
        assert_eq!(n("0.1"), serde_json::json!(0.1));
        assert_eq!(n("1.50"), serde_json::json!(1.5));
        assert_eq!(n("-2.25"), serde_json::json!(-2.25));
        assert_eq!(
            n("12345678901234567.89"),
            serde_json::json!("12345678901234567.89")
        );
        assert_eq!(
            n("123456789012345678901234"),
            serde_json::json!("123456789012345678901234")
        );
        assert_eq!(n("NaN"), serde_json::json!("NaN"));
    }
}
