//! No SQL is built by string concatenation: every statement the adapters send is a string
//! literal (or a `concat!` of literals, a `const` string, a dialect's associated `const`, or a
//! binding declared `&'static str`), and values go in through binds. This test reads the source
//! of every crate and fails on any query whose text is built at run time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// Calls whose first argument is SQL text.
const SQL_CALLS: &[&str] = &[
    "sqlx::query(",
    "sqlx::query_as(",
    "sqlx::query_scalar(",
    "sqlx::query_as::<",
    "sqlx::query_scalar::<",
    "sqlx::raw_sql(",
    "QueryBuilder::new(",
    "QueryBuilder::<",
    "query(",
    "query_as(",
    "query_scalar(",
    "query_as::<",
    "query_scalar::<",
    "raw_sql(",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without `#[cfg(test)] mod tests { ... }` blocks (tests may create databases by
/// name) and without comments.
fn production_code(source: &str) -> String {
    let source = match source.find("#[cfg(test)]\nmod tests") {
        Some(i) => &source[..i],
        None => source,
    };
    source
        .lines()
        .map(|line| match line.trim_start().starts_with("//") {
            true => "",
            false => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the first argument of the call ending at `open` (just after its `(`) starts.
fn argument_after(code: &str, open: usize) -> &str {
    code[open..].trim_start()
}

fn is_literal(argument: &str) -> bool {
    argument.starts_with('"')
        || argument.starts_with("r\"")
        || argument.starts_with("r#\"")
        || argument.starts_with("concat!(")
}

/// A literal, or a name the compiler holds to a `'static` string: a `const` string (or a loop
/// over a `const` array of them), an associated `const` named through a path (`D::UPSERT`,
/// `Self::SCHEMA`: a trait's or an impl's `const UPSERT: &'static str`), or a binding declared
/// `&'static str`. A `String` built at run time can be none of these.
fn is_static_sql(argument: &str, code: &str) -> bool {
    if is_literal(argument) {
        return true;
    }
    let Some((name, qualified)) = name_or_path(argument) else {
        return false;
    };
    if !argument
        .trim_start_matches(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
        .trim_start()
        .starts_with([')', ','])
    {
        return false;
    }
    let const_str = |n: &str| {
        code.contains(&format!("const {n}: &str"))
            || code.contains(&format!("const {n}: &'static str"))
            || code.contains(&format!("const {n}: [&str"))
            || code.contains(&format!("const {n}: &[&str]"))
            || code.contains(&format!("const {n}: &'static [&'static str]"))
    };
    if const_str(name) {
        return true;
    }
    if qualified {
        return false;
    }
    if code.contains(&format!("{name}: &'static str")) {
        return true;
    }
    // `for name in CONST`, `for name in D::CONST`
    code.split(&format!("for {name} in "))
        .skip(1)
        .any(|rest| name_or_path(rest).is_some_and(|(array, _)| const_str(array)))
}

/// The name `text` starts with, or the last name of the path it starts with (`D::NAME`,
/// `Self::NAME`), and whether it was a path.
fn name_or_path(text: &str) -> Option<(&str, bool)> {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let path = &text[..end];
    let segments: Vec<&str> = path.split("::").collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || s.contains(':') || s.starts_with(|c: char| c.is_ascii_digit()))
    {
        return None;
    }
    segments.last().map(|name| (*name, segments.len() > 1))
}

/// Every SQL call in `code` whose text is not a literal, as `line: excerpt`.
fn dynamic_sql(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for call in SQL_CALLS {
        let mut from = 0;
        while let Some(at) = code[from..].find(call) {
            let start = from + at;
            from = start + call.len();
            // `.query(` is reqwest's query string, `fn query(` a definition.
            let before = code[..start].chars().next_back().unwrap_or(' ');
            if call.starts_with("query") || call.starts_with("raw_sql") {
                if before.is_alphanumeric() || before == '_' || before == '.' || before == ':' {
                    continue;
                }
                if code[..start].trim_end().ends_with("fn") {
                    continue;
                }
            }
            // Skip the generic arguments of `query_as::<...>(` and `QueryBuilder::<...>::new(`.
            let open = if call.ends_with('<') {
                // Past the matching `>` (generic arguments may hold tuples), then `(` or `::new(`.
                let mut depth = 1;
                let mut end = None;
                for (i, c) in code[from..].char_indices() {
                    match c {
                        '<' => depth += 1,
                        '>' => {
                            depth -= 1;
                            if depth == 0 {
                                end = Some(from + i + 1);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let Some(end) = end else { continue };
                match code[end..].find('(') {
                    Some(i) => end + i + 1,
                    None => continue,
                }
            } else {
                from
            };
            let argument = argument_after(code, open);
            if !is_static_sql(argument, code) {
                let line = code[..start].lines().count();
                let excerpt: String = code[start..].chars().take(80).collect();
                found.push(format!("line {line}: {excerpt}"));
            }
        }
    }
    // QueryBuilder appends SQL text with push(): only static text, as for the calls above.
    // (`push((..))` is a Vec of tuples, `push_bind` binds a value.)
    if code.contains("QueryBuilder") {
        let mut from = 0;
        while let Some(at) = code[from..].find(".push(") {
            let start = from + at;
            from = start + ".push(".len();
            let argument = argument_after(code, from);
            if !is_static_sql(argument, code) && !argument.starts_with('(') {
                let line = code[..start].lines().count();
                let excerpt: String = code[start..].chars().take(80).collect();
                found.push(format!("line {line}: {excerpt}"));
            }
        }
    }
    found
}

#[test]
fn every_sql_statement_is_a_literal() {
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&crates).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    assert!(files.len() > 50, "the crates' sources were not found");
    let mut calls = 0;
    let mut offenders = Vec::new();
    for file in &files {
        let code = production_code(&std::fs::read_to_string(file).unwrap());
        calls += SQL_CALLS
            .iter()
            .map(|c| code.matches(c).count())
            .sum::<usize>();
        for hit in dynamic_sql(&code) {
            offenders.push(format!("{}: {hit}", file.display()));
        }
    }
    assert!(
        calls > 50,
        "only {calls} SQL calls found: is the scan looking in the right place?"
    );
    assert!(
        offenders.is_empty(),
        "SQL built at run time (use a literal and binds):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_scan_catches_built_sql() {
    let bad = [
        r#"let q = sqlx::query(&format!("SELECT * FROM books WHERE id = {id}"));"#,
        r#"sqlx::query_scalar::<_, i64>(&sql).fetch_one(&pool)"#,
        r#"let mut q = QueryBuilder::<Sqlite>::new("SELECT "); q.push(column);"#,
        r#"sqlx::raw_sql(&format!("DROP TABLE {t}"))"#,
        r#"query(sql.as_str())"#,
        r#"let sql = format!("SELECT {c}"); sqlx::query(sql)"#,
        // An associated name that is not a declared `const` string, or a call.
        r#"impl Dialect for Sqlite { type Sql = String; } sqlx::query(D::SQL).bind(1)"#,
        r#"trait Dialect { fn upsert() -> String; } sqlx::query(D::upsert()).bind(1)"#,
        r#"let mut q = QueryBuilder::<D::Db>::new("INSERT INTO t (a) "); q.push(D::TAIL);"#,
    ];
    for code in bad {
        assert_eq!(dynamic_sql(code).len(), 1, "not caught: {code}");
    }
    let good = [
        r#"sqlx::query("SELECT 1").execute(&pool)"#,
        r#"sqlx::query(concat!("SELECT a ", "FROM b")).bind(x)"#,
        r#"sqlx::query_as::<_, (i64,)>("SELECT 1")"#,
        r#"let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO t (a) "); q.push_values(rows, |mut b, r| { b.push_bind(r); }); q.push(" ON CONFLICT DO NOTHING");"#,
        r#"http.get(url).query(&[("q", q)])"#,
        r#"pub async fn query(&self, q: &str) {}"#,
        r#"const SCHEMA: &[&str] = &["CREATE TABLE t (a)"]; for statement in SCHEMA { sqlx::query(statement) }"#,
        r#"const UPSERT: &str = "INSERT INTO t VALUES (?)"; sqlx::query(UPSERT).bind(1)"#,
        r#"let rows = |sql: &'static str| sqlx::query(sql);"#,
        // Associated consts, named through a path.
        r#"trait Dialect { const UPSERT: &'static str; } fn f<D: Dialect>() { sqlx::query(D::UPSERT).bind(1) }"#,
        r#"impl Dialect for Sqlite { const TAIL: &str = " ON CONFLICT DO NOTHING"; } let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO t (a) "); q.push(Self::TAIL);"#,
        r#"trait Dialect { const SCHEMA: &'static [&'static str]; } for statement in D::SCHEMA { sqlx::query(statement) }"#,
        r#"enum Locking { Rows { lock: &'static str } } let mut q = QueryBuilder::<D::Db>::new("SELECT "); if let Locking::Rows { lock } = D::LOCKING { q.push(lock); }"#,
    ];
    for code in good {
        assert!(dynamic_sql(code).is_empty(), "false alarm: {code}");
    }
}
