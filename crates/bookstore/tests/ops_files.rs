//! The operations files, checked against the services that feed them:
//!
//! - `ops/prometheus/alerts.yml` passes `promtool check rules`, and `ops/prometheus/alerts_test.yml`
//!   (every alert firing and not firing) passes `promtool test rules`; every alert has a `for`, a
//!   severity and summary, description and runbook annotations, and a test case of each kind;
//! - `ops/grafana/bookstore.json` is a Grafana dashboard whose every panel has a query, every
//!   query valid PromQL (checked by promtool once Grafana's variables are replaced);
//! - every metric the dashboard and the rules name is exported: the all-in-one `bookstore serve`
//!   on the embedded defaults and `bookstore web`, `trend` and `recommend` as separate processes
//!   on Kafka, MariaDB and Redis (from `dev/services`) are started, given a little traffic (and the
//!   all-in-one a few refused connections and live streams, whose counters appear only then), and
//!   every operations port's `/metrics` is scraped. Each name must be a sample name there (a
//!   histogram's `_bucket`, `_sum` or `_count`, never its bare name), each label a selector
//!   matches or an aggregation keeps must be one of its labels, and `rate`/`increase` must be
//!   given counters. The split deployment must export every name but those of the embedded log
//!   and the provoked counters;
//! - on those scrapes (the services idle and healthy), held steady for an hour, no alert fires.
//!
//! promtool comes with Debian's `prometheus` package (`BOOKSTORE_TEST_PROMTOOL` names another
//! binary). Without it the tests fail; they never skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bookstore_testkit::{KillOnDrop, free_port};
use bookstore_testkit_app::{Infra, Processes, test_bus};
use serde_json::{Value, json};

const ALERTS: &str = "ops/prometheus/alerts.yml";
const ALERTS_TEST: &str = "ops/prometheus/alerts_test.yml";
const DASHBOARD: &str = "ops/grafana/bookstore.json";

/// Series Prometheus makes itself for every target, never in `/metrics`.
const SYNTHETIC: &[&str] = &["up"];
/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["job", "instance"];
/// Counters that appear only once what they count happened: the test provokes them in the
/// all-in-one only.
const PROVOKED: &[&str] = &[
    "http_connections_refused_total",
    "http_connections_timed_out_total",
    "bookstore_web_live_streams_refused_total",
];
/// The embedded log's metrics: not in a deployment on Kafka.
const EMBEDDED_ONLY_PREFIX: &str = "bookstore_eventlog_";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn read(path: &str) -> String {
    let full = workspace().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

// ------------------------------------------------------------------ promtool

/// Runs promtool with `args` in `dir`; its output. Fails, saying how to get it, when promtool is
/// missing, and with its whole output when it fails.
fn promtool(args: &[&str], dir: &Path) -> String {
    let program =
        std::env::var("BOOKSTORE_TEST_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let output = Command::new(&program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}): promtool is needed to check the alert rules. \
                 Install Debian's `prometheus` package, which provides it (`dev/services start` \
                 installs it), or point BOOKSTORE_TEST_PROMTOOL at a promtool binary"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "`{program} {}` failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    text
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    let root = workspace();
    let checked = promtool(&["check", "rules", ALERTS], &root);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", ALERTS_TEST], &root);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

// ------------------------------------------------------------------ the rules' form

/// Every alerting rule of the rules file: (group, rule).
fn alert_rules() -> Vec<(String, serde_yaml::Value)> {
    let rules: serde_yaml::Value = serde_yaml::from_str(&read(ALERTS)).unwrap();
    let groups = rules["groups"].as_sequence().expect("groups");
    assert!(!groups.is_empty(), "{ALERTS} has no group");
    groups
        .iter()
        .flat_map(|group| {
            let name = group["name"].as_str().expect("a group's name").to_owned();
            group["rules"]
                .as_sequence()
                .expect("a group's rules")
                .iter()
                .map(move |rule| (name.clone(), rule.clone()))
        })
        .collect()
}

#[test]
fn every_alert_has_a_duration_a_severity_a_runbook_and_tests_both_ways() {
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for (group, rule) in alert_rules() {
        let Some(name) = rule["alert"].as_str() else {
            problems.push(format!("{group}: a rule that is not an alert: {rule:?}"));
            continue;
        };
        if !names.insert(name.to_owned()) {
            problems.push(format!("{name}: defined twice"));
        }
        if rule["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
            problems.push(format!("{name}: no expr"));
        }
        if rule["for"].as_str().is_none_or(|f| f.trim().is_empty()) {
            problems.push(format!("{name}: no `for:`"));
        }
        match rule["labels"]["severity"].as_str() {
            Some("critical" | "warning") => {}
            other => problems.push(format!(
                "{name}: severity {other:?}, not `critical` or `warning`"
            )),
        }
        for annotation in ["summary", "description", "runbook"] {
            if rule["annotations"][annotation]
                .as_str()
                .is_none_or(|a| a.trim().is_empty())
            {
                problems.push(format!("{name}: no `{annotation}` annotation"));
            }
        }
    }
    let tests: serde_yaml::Value = serde_yaml::from_str(&read(ALERTS_TEST)).unwrap();
    assert_eq!(
        tests["rule_files"].as_sequence().map(Vec::len),
        Some(1),
        "{ALERTS_TEST} tests the one rules file"
    );
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for test in tests["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let alert = case["alertname"].as_str().expect("alertname").to_owned();
            if !names.contains(&alert) {
                problems.push(format!("{ALERTS_TEST} tests an unknown alert {alert}"));
            }
            let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected == 0 {
                quiet.insert(alert);
            } else {
                firing.insert(alert);
            }
        }
    }
    for name in &names {
        if !firing.contains(name) {
            problems.push(format!("{name}: no test case where it fires"));
        }
        if !quiet.contains(name) {
            problems.push(format!("{name}: no test case where it does not fire"));
        }
    }
    assert!(
        problems.is_empty(),
        "{ALERTS} / {ALERTS_TEST}:\n{}",
        problems.join("\n")
    );
}

// ------------------------------------------------------------------ the dashboard's form

/// Every panel of the dashboard, those inside collapsed rows too.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD))
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every query of the dashboard: (where, PromQL), the panels' and the variables' (those in
/// Grafana's `label_values(selector, label)` form as their selector).
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                format!(
                    "panel {} {:?} query {}",
                    panel["id"], panel["title"], target["refId"]
                ),
                target["expr"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    queries
}

/// The query variables: (name, query).
fn dashboard_variables(dashboard: &Value) -> Vec<(String, String)> {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let query = v["query"]["query"]
                .as_str()
                .or_else(|| v["query"].as_str())
                .unwrap_or_default();
            (
                v["name"].as_str().unwrap_or_default().to_owned(),
                query.to_owned(),
            )
        })
        .collect()
}

/// PromQL with Grafana's variables replaced by values promtool accepts.
fn without_grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("${job}", ".*")
        .replace("$job", ".*")
        .replace("${service}", ".*")
        .replace("$service", ".*")
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_with_a_valid_query_in_every_panel() {
    let dashboard = dashboard();
    let mut problems = Vec::new();
    for key in ["title", "uid"] {
        if dashboard[key].as_str().is_none_or(str::is_empty) {
            problems.push(format!("no {key}"));
        }
    }
    let datasource = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus");
    let Some(datasource) = datasource else {
        panic!("{DASHBOARD}: no Prometheus data source variable");
    };
    let uid = format!("${{{}}}", datasource["name"].as_str().unwrap());
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        if !ids.insert(panel["id"].as_u64().expect("a panel id")) {
            problems.push(format!("panel id {} used twice", panel["id"]));
        }
        if title.is_empty() {
            problems.push(format!("panel {} has no title", panel["id"]));
        }
        for key in ["h", "w", "x", "y"] {
            if panel["gridPos"][key].as_u64().is_none() {
                problems.push(format!("{title}: no gridPos.{key}"));
            }
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["datasource"]["uid"].as_str() != Some(uid.as_str()) {
            problems.push(format!("{title}: data source is not {uid}"));
        }
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if targets.is_empty() {
            problems.push(format!("{title}: no query"));
        }
        for target in targets {
            if target["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
                problems.push(format!("{title}: query {} is empty", target["refId"]));
            }
            if target["datasource"]["uid"].as_str() != Some(uid.as_str()) {
                problems.push(format!(
                    "{title}: query {} does not use {uid}",
                    target["refId"]
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{DASHBOARD}:\n{}", problems.join("\n"));

    // promtool parses each query as a recording rule's expression.
    let rules: Vec<Value> = dashboard_queries(&dashboard)
        .into_iter()
        .enumerate()
        .map(|(i, (_, expr))| json!({"record": format!("dashboard:query_{i}"), "expr": without_grafana_variables(&expr)}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard_rules.yml");
    let text =
        serde_yaml::to_string(&json!({"groups": [{"name": "dashboard", "rules": rules}]})).unwrap();
    std::fs::write(&file, text).unwrap();
    promtool(&["check", "rules", "dashboard_rules.yml"], dir.path());
}

// ------------------------------------------------------------------ names in PromQL

/// Reading metric names, their label matchers and the labels aggregations keep out of PromQL:
/// enough of the language for the rules and the dashboard, without evaluating anything.
mod promql {
    use std::collections::BTreeSet;

    /// A metric a query reads.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Selector {
        pub metric: String,
        /// Label names its matchers name (`__name__` left out).
        pub labels: Vec<String>,
        /// `rate`, `irate`, `increase` or `resets` when it is their argument.
        pub counter_function: Option<String>,
    }

    /// `by (labels)` of an aggregation, and the metrics it aggregates.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Grouping {
        pub labels: Vec<String>,
        pub metrics: BTreeSet<String>,
    }

    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct Query {
        pub selectors: Vec<Selector>,
        pub groupings: Vec<Grouping>,
    }

    impl Query {
        pub fn metrics(&self) -> BTreeSet<String> {
            self.selectors.iter().map(|s| s.metric.clone()).collect()
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Tok {
        Ident(String),
        /// `{…}`: the label names matched, and the metric name a `__name__="…"` matcher gives.
        Matchers(Vec<String>, Option<String>),
        Open,
        Close,
        /// Numbers, durations, strings, ranges, operators, commas, Grafana variables.
        Other,
    }

    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    /// Words that are never metric names where they stand.
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "atan2",
    ];
    /// Keywords followed by a list of label names.
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const COUNTER_FUNCTIONS: &[&str] = &["rate", "irate", "increase", "resets"];

    fn ident_start(c: char) -> bool {
        c.is_ascii_alphabetic() || c == '_' || c == ':'
    }

    fn ident_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_' || c == ':'
    }

    /// The index just past the string starting at `i` (its quote).
    fn skip_string(c: &[char], mut i: usize) -> Result<usize, String> {
        let quote = c[i];
        i += 1;
        while i < c.len() {
            if c[i] == '\\' && quote != '`' {
                i += 2;
                continue;
            }
            if c[i] == quote {
                return Ok(i + 1);
            }
            i += 1;
        }
        Err("unterminated string".to_owned())
    }

    fn string_value(c: &[char], start: usize, end: usize) -> String {
        c[start + 1..end - 1].iter().collect()
    }

    fn skip_space(c: &[char], mut i: usize) -> usize {
        while i < c.len() && c[i].is_whitespace() {
            i += 1;
        }
        i
    }

    /// The matchers starting at `i` (`{`): label names, a `__name__` value, the index past `}`.
    fn matchers(c: &[char], mut i: usize) -> Result<(Vec<String>, Option<String>, usize), String> {
        i += 1;
        let (mut labels, mut name) = (Vec::new(), None);
        loop {
            i = skip_space(c, i);
            match c.get(i) {
                None => return Err("unterminated {".to_owned()),
                Some('}') => return Ok((labels, name, i + 1)),
                Some(',') => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let start = i;
            if c[i] == '"' {
                i = skip_string(c, i)?;
            } else {
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
            let label: String = c[start..i].iter().filter(|c| **c != '"').collect();
            if label.is_empty() {
                return Err(format!("a label name expected at {start}"));
            }
            i = skip_space(c, i);
            let op_start = i;
            while i < c.len() && matches!(c[i], '=' | '!' | '~') {
                i += 1;
            }
            let op: String = c[op_start..i].iter().collect();
            if !matches!(op.as_str(), "=" | "!=" | "=~" | "!~") {
                return Err(format!("a matcher operator expected after {label}"));
            }
            i = skip_space(c, i);
            if !matches!(c.get(i), Some('"' | '\'' | '`')) {
                return Err(format!("a string expected after {label}{op}"));
            }
            let end = skip_string(c, i)?;
            if label == "__name__" {
                if op == "=" {
                    name = Some(string_value(c, i, end));
                }
            } else {
                labels.push(label);
            }
            i = end;
        }
    }

    fn tokens(expr: &str) -> Result<Vec<Tok>, String> {
        let c: Vec<char> = expr.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < c.len() {
            let ch = c[i];
            if ch.is_whitespace() {
                i += 1;
            } else if ch == '#' {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            } else if matches!(ch, '"' | '\'' | '`') {
                i = skip_string(&c, i)?;
                out.push(Tok::Other);
            } else if ch == '$' {
                // A Grafana variable: `$name` or `${name}`.
                i += 1;
                if c.get(i) == Some(&'{') {
                    while i < c.len() && c[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < c.len() && ident_char(c[i]) {
                        i += 1;
                    }
                }
                out.push(Tok::Other);
            } else if ch.is_ascii_digit()
                || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
            {
                // Numbers and durations (`0.99`, `5m`, `1h30m`, `0x1f`, `1e3`).
                while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.' || c[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Other);
            } else if ident_start(ch) {
                let start = i;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(c[start..i].iter().collect()));
            } else if ch == '{' {
                let (labels, name, next) = matchers(&c, i)?;
                out.push(Tok::Matchers(labels, name));
                i = next;
            } else if ch == '[' {
                // A range or subquery: durations and variables only.
                while i < c.len() && c[i] != ']' {
                    i += 1;
                }
                if i == c.len() {
                    return Err("unterminated [".to_owned());
                }
                i += 1;
                out.push(Tok::Other);
            } else if ch == '(' {
                out.push(Tok::Open);
                i += 1;
            } else if ch == ')' {
                out.push(Tok::Close);
                i += 1;
            } else if ch == '}' || ch == ']' {
                return Err(format!("unbalanced {ch} at {i}"));
            } else {
                out.push(Tok::Other);
                i += 1;
            }
        }
        Ok(out)
    }

    /// For each `(`, the index of its `)`.
    fn closing(toks: &[Tok]) -> Result<Vec<Option<usize>>, String> {
        let mut close = vec![None; toks.len()];
        let mut open = Vec::new();
        for (i, t) in toks.iter().enumerate() {
            match t {
                Tok::Open => open.push(i),
                Tok::Close => {
                    let o = open.pop().ok_or("unbalanced )")?;
                    close[o] = Some(i);
                }
                _ => {}
            }
        }
        if open.is_empty() {
            Ok(close)
        } else {
            Err("unbalanced (".to_owned())
        }
    }

    fn word(t: &Tok) -> Option<String> {
        match t {
            Tok::Ident(s) => Some(s.to_ascii_lowercase()),
            _ => None,
        }
    }

    /// The metrics, matchers and groupings of a PromQL expression.
    pub fn parse(expr: &str) -> Result<Query, String> {
        let toks = tokens(expr)?;
        let close = closing(&toks)?;
        // Label lists after by/without/on/ignoring/group_left/group_right: (keyword index,
        // labels, the list's `(` and `)`).
        let mut in_label_list = vec![false; toks.len()];
        let mut lists = Vec::new();
        for (i, t) in toks.iter().enumerate() {
            let Some(w) = word(t) else { continue };
            if LABEL_LISTS.contains(&w.as_str()) && toks.get(i + 1) == Some(&Tok::Open) {
                let end = close[i + 1].unwrap();
                let labels = toks[i + 2..end]
                    .iter()
                    .filter_map(|t| match t {
                        Tok::Ident(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>();
                for flag in &mut in_label_list[i + 1..=end] {
                    *flag = true;
                }
                lists.push((i, w, labels, i + 1, end));
            }
        }
        // The arguments of the counter functions: (open, close, name).
        let counter_args: Vec<(usize, usize, String)> = toks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let w = word(t)?;
                (COUNTER_FUNCTIONS.contains(&w.as_str()) && toks.get(i + 1) == Some(&Tok::Open))
                    .then(|| (i + 1, close[i + 1].unwrap(), w))
            })
            .collect();
        let function_of = |i: usize| {
            counter_args
                .iter()
                .filter(|(open, end, _)| *open < i && i < *end)
                .max_by_key(|(open, _, _)| *open)
                .map(|(_, _, name)| name.clone())
        };
        // Selectors, at their token's index.
        let mut selectors: Vec<(usize, Selector)> = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            if in_label_list[i] {
                i += 1;
                continue;
            }
            match &toks[i] {
                Tok::Ident(name) => {
                    let lower = name.to_ascii_lowercase();
                    let next = toks.get(i + 1);
                    let called = next == Some(&Tok::Open);
                    let aggregation = AGGREGATIONS.contains(&lower.as_str())
                        && (called
                            || matches!(next, Some(Tok::Ident(w)) if ["by", "without"].contains(&w.to_ascii_lowercase().as_str())));
                    if called || aggregation || KEYWORDS.contains(&lower.as_str()) {
                        i += 1;
                        continue;
                    }
                    let mut labels = Vec::new();
                    if let Some(Tok::Matchers(matched, _)) = next {
                        labels.clone_from(matched);
                        i += 1;
                    }
                    selectors.push((
                        i,
                        Selector {
                            metric: name.clone(),
                            labels,
                            counter_function: function_of(i),
                        },
                    ));
                }
                // `{__name__="…"}`; without a name, nothing to check.
                Tok::Matchers(labels, Some(name)) => {
                    selectors.push((
                        i,
                        Selector {
                            metric: name.clone(),
                            labels: labels.clone(),
                            counter_function: function_of(i),
                        },
                    ));
                }
                _ => {}
            }
            i += 1;
        }
        // `by` groupings: `agg by (l) (body)` or `agg (body) by (l)`.
        let mut groupings = Vec::new();
        for (at, w, labels, _, end) in &lists {
            if w != "by" {
                continue;
            }
            let body = if toks.get(end + 1) == Some(&Tok::Open) && *at > 0 {
                Some((end + 1, close[end + 1].unwrap()))
            } else if *at > 0 && toks[at - 1] == Tok::Close {
                let open = (0..at - 1).rev().find(|o| close[*o] == Some(at - 1));
                open.map(|o| (o, at - 1))
            } else {
                None
            };
            let Some((open, end)) = body else {
                return Err(format!(
                    "cannot find what `by ({})` aggregates",
                    labels.join(", ")
                ));
            };
            let metrics = selectors
                .iter()
                .filter(|(i, _)| open < *i && *i < end)
                .map(|(_, s)| s.metric.clone())
                .collect();
            groupings.push(Grouping {
                labels: labels.clone(),
                metrics,
            });
        }
        Ok(Query {
            selectors: selectors.into_iter().map(|(_, s)| s).collect(),
            groupings,
        })
    }

    /// A Grafana variable's query: `label_values(selector, label)` (the label must be on the
    /// selector's metric), `label_values(label)`, `query_result(expr)`, or plain PromQL.
    pub fn parse_variable(query: &str) -> Result<Query, String> {
        let query = query.trim();
        if let Some(inner) = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
        {
            let Some((selector, label)) = inner.rsplit_once(',') else {
                return Ok(Query::default());
            };
            let mut parsed = parse(selector)?;
            let metrics = parsed.metrics();
            parsed.groupings.push(Grouping {
                labels: vec![label.trim().to_owned()],
                metrics,
            });
            return Ok(parsed);
        }
        if let Some(inner) = query
            .strip_prefix("query_result(")
            .and_then(|q| q.strip_suffix(')'))
        {
            return parse(inner);
        }
        if query.starts_with("label_names(") || query.starts_with("metrics(") {
            return Ok(Query::default());
        }
        parse(query)
    }
}

#[test]
fn promql_names_are_read_as_metrics_labels_and_functions() {
    use promql::{Grouping, Selector, parse, parse_variable};
    let q = parse(
        r#"sum by (service, route) (rate(http_requests_total{job=~"$job", route="/books/{id}", status=~"5.."}[$__rate_interval]))"#,
    )
    .unwrap();
    assert_eq!(
        q.selectors,
        vec![Selector {
            metric: "http_requests_total".into(),
            labels: vec!["job".into(), "route".into(), "status".into()],
            counter_function: Some("rate".into()),
        }]
    );
    assert_eq!(
        q.groupings,
        vec![Grouping {
            labels: vec!["service".into(), "route".into()],
            metrics: ["http_requests_total".to_owned()].into(),
        }]
    );
    let q = parse(
        "histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m]))) > 1\n  # a comment naming not_a_metric\n  and on (job, instance) up offset 10m == 1 or vector(0)",
    )
    .unwrap();
    assert_eq!(q.metrics(), ["h_bucket".to_owned(), "up".to_owned()].into());
    assert_eq!(q.selectors[1].counter_function, None);
    let q = parse("max(gauge_a) by (group) - ignoring (x) group_left (y) Inf * count(b)").unwrap();
    assert_eq!(q.metrics(), ["b".to_owned(), "gauge_a".to_owned()].into());
    assert_eq!(q.groupings[0].labels, vec!["group".to_owned()]);
    assert_eq!(
        q.groupings[0].metrics,
        ["gauge_a".to_owned()].into_iter().collect::<BTreeSet<_>>()
    );
    let q =
        parse(r#"label_replace({__name__="named", a="x"}, "dst", "$1", "src", "(.*)")"#).unwrap();
    assert_eq!(q.selectors[0].metric, "named");
    assert_eq!(q.selectors[0].labels, vec!["a".to_owned()]);
    let q = parse("sum without (instance) (increase(c_total[1h:5m])) / 1e3").unwrap();
    assert_eq!(q.selectors[0].counter_function.as_deref(), Some("increase"));
    assert!(parse("sum(x{a=\"b\"").is_err());
    let v = parse_variable(r#"label_values(http_requests_total{job=~"$job"}, service)"#).unwrap();
    assert_eq!(v.metrics(), ["http_requests_total".to_owned()].into());
    assert_eq!(v.groupings[0].labels, vec!["service".to_owned()]);
    assert!(
        parse_variable("label_values(job)")
            .unwrap()
            .selectors
            .is_empty()
    );
}

/// Every query of the rules and the dashboard, parsed: (where, query).
fn every_query() -> Vec<(String, promql::Query)> {
    let mut all = Vec::new();
    for (_, rule) in alert_rules() {
        let name = rule["alert"].as_str().unwrap_or("a rule").to_owned();
        let expr = rule["expr"].as_str().unwrap_or_default();
        let parsed = promql::parse(expr).unwrap_or_else(|e| panic!("{name}: {e}: {expr}"));
        all.push((format!("alert {name}"), parsed));
    }
    let dashboard = dashboard();
    for (place, expr) in dashboard_queries(&dashboard) {
        let parsed = promql::parse(&expr).unwrap_or_else(|e| panic!("{place}: {e}: {expr}"));
        all.push((format!("dashboard {place}"), parsed));
    }
    for (name, query) in dashboard_variables(&dashboard) {
        let parsed = promql::parse_variable(&query)
            .unwrap_or_else(|e| panic!("variable {name}: {e}: {query}"));
        all.push((format!("dashboard variable {name}"), parsed));
    }
    all
}

// ------------------------------------------------------------------ /metrics

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// One scrape of a `/metrics`: where, and what it said.
#[derive(Debug, Clone)]
struct Scrape {
    /// e.g. `all-in-one web-ops`, `split trend-ops`.
    endpoint: String,
    /// The job and instance a Prometheus would give it.
    job: String,
    instance: String,
    samples: Vec<Sample>,
    /// `# TYPE` lines: metric family → type.
    types: BTreeMap<String, String>,
}

fn parse_exposition(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name.to_owned(), kind.to_owned());
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let c: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < c.len() && c[i] != '{' && !c[i].is_whitespace() {
            i += 1;
        }
        let name: String = c[..i].iter().collect();
        let mut labels = Vec::new();
        if c.get(i) == Some(&'{') {
            i += 1;
            loop {
                while i < c.len() && (c[i] == ',' || c[i].is_whitespace()) {
                    i += 1;
                }
                assert!(i < c.len(), "a sample line ends inside its labels: {line}");
                if c[i] == '}' {
                    i += 1;
                    break;
                }
                let start = i;
                while c[i] != '=' {
                    i += 1;
                }
                let key: String = c[start..i].iter().collect();
                assert_eq!(c[i + 1], '"', "a label value is quoted: {line}");
                i += 2;
                let mut value = String::new();
                while c[i] != '"' {
                    if c[i] == '\\' {
                        i += 1;
                        value.push(match c[i] {
                            'n' => '\n',
                            other => other,
                        });
                    } else {
                        value.push(c[i]);
                    }
                    i += 1;
                }
                i += 1;
                labels.push((key.trim().to_owned(), value));
            }
        }
        let rest: String = c[i..].iter().collect();
        let value = rest.split_whitespace().next().unwrap_or_default();
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("a sample's value is a number: {line}")),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    (samples, types)
}

async fn scrape(http: &reqwest::Client, endpoint: &str, job: &str, base: &str) -> Scrape {
    let url = format!("{base}/metrics");
    let response = http
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(response.status(), 200, "{url}");
    let text = response.text().await.unwrap();
    let (samples, types) = parse_exposition(&text);
    Scrape {
        endpoint: endpoint.to_owned(),
        job: job.to_owned(),
        instance: base.trim_start_matches("http://").to_owned(),
        samples,
        types,
    }
}

fn names_in(scrapes: &[Scrape]) -> BTreeSet<String> {
    scrapes
        .iter()
        .flat_map(|s| s.samples.iter().map(|x| x.name.clone()))
        .collect()
}

/// The metrics the rules and the dashboard name that a scrape must hold.
fn wanted_names() -> BTreeSet<String> {
    every_query()
        .iter()
        .flat_map(|(_, q)| q.metrics())
        .filter(|m| !SYNTHETIC.contains(&m.as_str()))
        .collect()
}

/// Those a deployment on Kafka must export as well.
fn wanted_in_split(all: &BTreeSet<String>) -> BTreeSet<String> {
    all.iter()
        .filter(|m| !m.starts_with(EMBEDDED_ONLY_PREFIX) && !PROVOKED.contains(&m.as_str()))
        .cloned()
        .collect()
}

/// Idle and settled: no outbox row waits and every consumer owns its partitions (not amid a
/// rebalance), as the healthy services the quiet check describes.
fn settled(scrapes: &[Scrape]) -> bool {
    let samples = || scrapes.iter().flat_map(|s| &s.samples);
    samples()
        .filter(|x| x.name == "bookstore_outbox_waiting")
        .all(|x| x.value == 0.0)
        && samples()
            .filter(|x| x.name == "bookstore_consumer_owned_partitions")
            .all(|x| x.value > 0.0)
}

/// Scrapes `endpoints` (name, job, base URL) until they hold every one of `wanted` and the
/// services are [`settled`], or 60 s have passed; the last scrapes.
async fn scrape_until_complete(
    http: &reqwest::Client,
    endpoints: &[(String, String, String)],
    wanted: &BTreeSet<String>,
) -> Vec<Scrape> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut scrapes = Vec::new();
        for (endpoint, job, base) in endpoints {
            scrapes.push(scrape(http, endpoint, job, base).await);
        }
        let names = names_in(&scrapes);
        if (wanted.is_subset(&names) && settled(&scrapes)) || Instant::now() > deadline {
            return scrapes;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A little of everything a visitor does: a search on the page and in the API, a book page
/// (opened from the results and directly), a miss, and the trend and recommendation services'
/// own routes.
async fn traffic(http: &reqwest::Client, web: &str, trend: &str, rec: &str) {
    let page = http.get(format!("{web}/?q=austen")).send().await.unwrap();
    assert_eq!(page.status(), 200, "the page's search");
    let books: Value = http
        .get(format!("{web}/api/books?q=bronte"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = books[0]["id"].as_u64().expect("a book found for `bronte`");
    for path in [
        format!("/books/{id}?from=search&rank=0"),
        format!("/books/{id}"),
    ] {
        let response = http.get(format!("{web}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let missing = http
        .get(format!("{web}/no-such-page"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    for url in [
        format!("{trend}/trends"),
        format!("{trend}/trends/books"),
        format!("{rec}/books/{id}/similar"),
    ] {
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
    }
}

// ------------------------------------------------------------------ the all-in-one

const TOKEN: &str = "ops-files-test-token";
/// `http.max_connections` of the all-in-one: low, so that a few idle connections reach it.
const MAX_CONNECTIONS: usize = 8;

/// `bookstore serve` on the embedded defaults in a temporary directory, given traffic, a
/// refused live stream and refused and timed-out connections; its three `/metrics`.
async fn all_in_one(wanted: &BTreeSet<String>) -> Vec<Scrape> {
    let dir = tempfile::tempdir().unwrap();
    let [web, trend, rec, web_ops, trend_ops, rec_ops] =
        [(); 6].map(|()| format!("127.0.0.1:{}", free_port()));
    let log = dir.path().join("serve.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_bookstore"));
    // Nothing of the developer's own configuration.
    for (key, _) in std::env::vars() {
        if key.starts_with("BOOKSTORE_") && !key.starts_with("BOOKSTORE_TEST_") {
            command.env_remove(key);
        }
    }
    command
        .arg("serve")
        .env("BOOKSTORE_DATA_DIR", dir.path())
        .env("BOOKSTORE_WEB__LISTEN", &web)
        .env("BOOKSTORE_TREND__LISTEN", &trend)
        .env("BOOKSTORE_RECOMMEND__LISTEN", &rec)
        .env("BOOKSTORE_WEB__OPS_LISTEN", &web_ops)
        .env("BOOKSTORE_TREND__OPS_LISTEN", &trend_ops)
        .env("BOOKSTORE_RECOMMEND__OPS_LISTEN", &rec_ops)
        .env("BOOKSTORE_WEB__ADMIN_TOKEN", TOKEN)
        .env("BOOKSTORE_WEB__LIVE_STREAMS", "1")
        .env(
            "BOOKSTORE_HTTP__MAX_CONNECTIONS",
            MAX_CONNECTIONS.to_string(),
        )
        .env("BOOKSTORE_HTTP__HEADER_READ_TIMEOUT_MS", "1000")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let child = KillOnDrop(command.spawn().unwrap());
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let [web, trend, rec, web_ops, trend_ops, rec_ops] =
        [web, trend, rec, web_ops, trend_ops, rec_ops].map(|a| format!("http://{a}"));
    let http = http_client();
    for url in [&web, &trend, &rec] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(
                Instant::now() < deadline,
                "the all-in-one's {url} is not ready after 60 s; its log:\n{}",
                log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    traffic(&http, &web, &trend, &rec).await;
    let created = http
        .post(format!("{web}/api/books"))
        .bearer_auth(TOKEN)
        .json(
            &json!({"title": "Dashboards", "author": "A. Operator", "published_at": "2026-01-05"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "a book written through the API");

    // A live stream held open, and a second one refused past web.live_streams.
    let held = http.get(format!("{web}/live/trends")).send().await.unwrap();
    assert_eq!(held.status(), 200, "the first live stream");
    let refused = http.get(format!("{web}/live/trends")).send().await.unwrap();
    assert_eq!(refused.status(), 503, "a live stream past web.live_streams");
    drop(held);

    // Connections that never send a request fill the recommendation service's operations port:
    // the next one is refused, and they are closed after the header read timeout.
    let addr = rec_ops.trim_start_matches("http://").to_owned();
    let answer = tokio::task::spawn_blocking(move || {
        let idle: Vec<std::net::TcpStream> = (0..MAX_CONNECTIONS)
            .map(|_| std::net::TcpStream::connect(&addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let mut extra = std::net::TcpStream::connect(&addr).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let _ = extra.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut answer = Vec::new();
        let _ = extra.read_to_end(&mut answer);
        // Until the server closes them (header read timeout).
        std::thread::sleep(Duration::from_millis(1500));
        drop(idle);
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .unwrap();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
        "a connection past http.max_connections is refused: {answer}"
    );

    let endpoints = [
        ("all-in-one web-ops", &web_ops),
        ("all-in-one trend-ops", &trend_ops),
        ("all-in-one recommend-ops", &rec_ops),
    ]
    .map(|(name, base)| (name.to_owned(), "bookstore".to_owned(), base.clone()));
    let scrapes = scrape_until_complete(&http, &endpoints, wanted).await;
    drop(child);
    scrapes
}

// ------------------------------------------------------------------ the split deployment

/// `bookstore web`, `trend` and `recommend` on Kafka, MariaDB and Redis (fresh topics,
/// databases and keys, removed at the end), given traffic; their three `/metrics`.
async fn split(wanted: &BTreeSet<String>) -> Vec<Scrape> {
    let bus = test_bus(Infra::Real).await;
    let processes = Processes::start(env!("CARGO_BIN_EXE_bookstore"), &bus).await;
    let http = http_client();
    traffic(&http, &processes.web, &processes.trend, &processes.rec).await;
    let endpoints = [
        ("split web-ops", "bookstore-web", &processes.web_ops),
        ("split trend-ops", "bookstore-trend", &processes.trend_ops),
        (
            "split recommend-ops",
            "bookstore-recommend",
            &processes.rec_ops,
        ),
    ]
    .map(|(name, job, base)| (name.to_owned(), job.to_owned(), base.clone()));
    let scrapes = scrape_until_complete(&http, &endpoints, wanted).await;
    // The processes go before their topics, databases and keys.
    drop(processes);
    drop(bus);
    scrapes
}

// ------------------------------------------------------------------ the checks

/// What the scrapes export: sample name → label names, and metric family → type.
struct Exported {
    labels: BTreeMap<String, BTreeSet<String>>,
    types: BTreeMap<String, String>,
}

impl Exported {
    fn of(scrapes: &[Scrape]) -> Self {
        let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut types = BTreeMap::new();
        for scrape in scrapes {
            for sample in &scrape.samples {
                labels
                    .entry(sample.name.clone())
                    .or_default()
                    .extend(sample.labels.iter().map(|(k, _)| k.clone()));
            }
            types.extend(scrape.types.clone());
        }
        for name in SYNTHETIC {
            labels.insert((*name).to_owned(), BTreeSet::new());
            types.insert((*name).to_owned(), "gauge".to_owned());
        }
        Self { labels, types }
    }

    /// The family and type of a sample name (`x_bucket` of the histogram `x`, ...).
    fn family<'a>(&'a self, name: &'a str) -> Option<(&'a str, &'a str)> {
        if let Some(kind) = self.types.get(name) {
            return Some((name, kind));
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            let kind = self.types.get(base)?;
            matches!(kind.as_str(), "histogram" | "summary").then_some((base, kind.as_str()))
        })
    }

    /// Everything wrong with `query`.
    fn problems(&self, place: &str, query: &promql::Query) -> Vec<String> {
        let mut problems = Vec::new();
        for selector in &query.selectors {
            let metric = &selector.metric;
            let Some(labels) = self.labels.get(metric) else {
                let hint = match self.types.get(metric).map(String::as_str) {
                    Some(kind @ ("histogram" | "summary")) => {
                        format!(" ({metric} is a {kind}: query {metric}_bucket, _sum or _count)")
                    }
                    _ => String::new(),
                };
                problems.push(format!("{place}: {metric} is in no /metrics{hint}"));
                continue;
            };
            for label in &selector.labels {
                if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                    problems.push(format!(
                        "{place}: {metric} has no label {label} (it has {labels:?})"
                    ));
                }
            }
            if let Some(function) = &selector.counter_function {
                match self.family(metric) {
                    Some((_, "counter" | "histogram" | "summary")) => {}
                    other => problems.push(format!(
                        "{place}: {function}() of {metric}, which is not a counter ({other:?})"
                    )),
                }
            }
        }
        for grouping in &query.groupings {
            let available: BTreeSet<&String> = grouping
                .metrics
                .iter()
                .filter_map(|m| self.labels.get(m))
                .flatten()
                .collect();
            for label in &grouping.labels {
                if !available.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                    problems.push(format!(
                        "{place}: `by ({label})` but none of {:?} has that label",
                        grouping.metrics
                    ));
                }
            }
        }
        problems
    }
}

/// A promtool unit test holding every scraped series (and `up` of each target) steady for an
/// hour: no alert may fire.
fn quiet_test(scrapes: &[Scrape], alerts: &Path) -> Value {
    let mut series = Vec::new();
    let mut targets = BTreeSet::new();
    for scrape in scrapes {
        targets.insert((scrape.job.clone(), scrape.instance.clone()));
        for sample in &scrape.samples {
            let mut labels = sample.labels.clone();
            labels.push(("job".into(), scrape.job.clone()));
            labels.push(("instance".into(), scrape.instance.clone()));
            let labels = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', r"\\").replace('"', "\\\"")))
                .collect::<Vec<_>>()
                .join(", ");
            let values = if sample.value.is_nan() {
                vec!["NaN"; 61].join(" ")
            } else {
                format!("{}+0x60", sample.value)
            };
            series
                .push(json!({"series": format!("{}{{{labels}}}", sample.name), "values": values}));
        }
    }
    for (job, instance) in &targets {
        series.push(json!({
            "series": format!("up{{job=\"{job}\", instance=\"{instance}\"}}"),
            "values": "1+0x60",
        }));
    }
    let cases: Vec<Value> = alert_rules()
        .iter()
        .filter_map(|(_, rule)| rule["alert"].as_str())
        .flat_map(|alert| {
            ["10m", "60m"].map(|at| json!({"eval_time": at, "alertname": alert, "exp_alerts": []}))
        })
        .collect();
    json!({
        "rule_files": [alerts.display().to_string()],
        "evaluation_interval": "1m",
        "tests": [{
            "name": "the services, idle and healthy, held steady for an hour",
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": cases,
        }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_of_the_dashboard_and_the_alerts_is_exported_and_no_alert_fires_when_healthy()
{
    let queries = every_query();
    let wanted = wanted_names();
    let wanted_split = wanted_in_split(&wanted);
    let (all_in_one, split) = tokio::join!(all_in_one(&wanted), split(&wanted_split));

    let mut problems = Vec::new();
    let scraped: Vec<Scrape> = all_in_one.iter().chain(&split).cloned().collect();
    let exported = Exported::of(&scraped);
    for (place, query) in &queries {
        problems.extend(exported.problems(place, query));
    }
    let in_split = names_in(&split);
    for name in wanted_split.difference(&in_split) {
        problems.push(format!(
            "{name} is not exported by the deployment on Kafka, MariaDB and Redis"
        ));
    }
    let endpoints: Vec<String> = scraped
        .iter()
        .map(|s| format!("{} ({} samples)", s.endpoint, s.samples.len()))
        .collect();
    assert!(
        problems.is_empty(),
        "the dashboard and the alert rules name what the services do not export:\n{}\n\
         scraped: {}\nexported names: {:?}",
        problems.join("\n"),
        endpoints.join(", "),
        names_in(&scraped)
    );

    // Healthy and idle: quiet. The all-in-one scraped once (its three ports show the same
    // registry), each split service as its own job.
    let one_port: Vec<Scrape> = all_in_one.iter().take(1).chain(&split).cloned().collect();
    let dir = tempfile::tempdir().unwrap();
    let test = quiet_test(&one_port, &workspace().join(ALERTS));
    std::fs::write(
        dir.path().join("quiet_test.yml"),
        serde_yaml::to_string(&test).unwrap(),
    )
    .unwrap();
    promtool(&["test", "rules", "quiet_test.yml"], dir.path());
}
