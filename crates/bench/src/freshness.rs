//! `bookstore bench freshness`: how long after a write's answer search shows it, against a
//! running web service. Each round creates a book with a word no other book has, waits until a
//! search for that word finds it, replaces its title with another new word and waits until that
//! word finds it, then deletes it and waits until the word finds nothing; each delay counts from
//! the write's answer (the commit) to the first search that shows its effect, searching every
//! `--poll-ms`. The book is the benchmark's own and is gone at the end of its round.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// What to measure.
#[derive(Debug, Clone)]
pub struct FreshnessBench {
    /// The web service, such as `http://127.0.0.1:8000`.
    pub url: String,
    /// `web.admin_token` of that service.
    pub token: String,
    pub rounds: usize,
    pub poll: Duration,
    /// Longest wait for one effect before the benchmark gives up.
    pub give_up: Duration,
}

/// Delays of one kind of write, in milliseconds.
#[derive(Debug, Clone)]
pub struct Delays {
    pub write: &'static str,
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub async fn run(bench: &FreshnessBench) -> anyhow::Result<Vec<Delays>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot create the HTTP client")?;
    let base = bench.url.trim_end_matches('/').to_owned();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut created = histogram()?;
    let mut updated = histogram()?;
    let mut deleted = histogram()?;
    for round in 0..bench.rounds {
        // Words of letters only, unlike any real word, so that only this book matches them.
        let first = word(&run, round, "zqc");
        let second = word(&run, round, "xwu");
        let book = |title: &str| json!({"title": format!("Freshness {title}"), "author": "Bench", "published_at": "2000"});
        let response = http
            .post(format!("{base}/api/books"))
            .bearer_auth(&bench.token)
            .json(&book(&first))
            .send()
            .await
            .context("POST /api/books")?;
        if response.status() != 201 {
            bail!("POST /api/books answered {}", response.status());
        }
        let committed = Instant::now();
        let id = response.json::<Value>().await?["id"]
            .as_i64()
            .context("the created book has no id")?;
        record(
            &mut created,
            wait(&http, &base, &first, bench, committed, |n| n == 1).await?,
        );
        let response = http
            .put(format!("{base}/api/books/{id}"))
            .bearer_auth(&bench.token)
            .json(&book(&second))
            .send()
            .await
            .context("PUT /api/books/{id}")?;
        if response.status() != 200 {
            bail!("PUT /api/books/{id} answered {}", response.status());
        }
        let committed = Instant::now();
        record(
            &mut updated,
            wait(&http, &base, &second, bench, committed, |n| n == 1).await?,
        );
        let response = http
            .delete(format!("{base}/api/books/{id}"))
            .bearer_auth(&bench.token)
            .send()
            .await
            .context("DELETE /api/books/{id}")?;
        if response.status() != 204 {
            bail!("DELETE /api/books/{id} answered {}", response.status());
        }
        let committed = Instant::now();
        record(
            &mut deleted,
            wait(&http, &base, &second, bench, committed, |n| n == 0).await?,
        );
    }
    Ok(vec![
        delays("create", &created),
        delays("update", &updated),
        delays("delete", &deleted),
    ])
}

/// A word of 15 letters for this run, round and kind of write: unlike any real word, under the
/// index's longest word (40), and three letters apart from the other kind's word of the same
/// round (more than the two typos a word of its length may have, so that searching one never
/// finds the other).
fn word(run: &str, round: usize, kind: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{run}/{round}").bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let letters: String = (0..12)
        .map(|i| char::from(b'a' + u8::try_from((hash >> (i * 5)) % 26).unwrap_or(0)))
        .collect();
    format!("{kind}{letters}")
}

/// Searches `word` every `bench.poll` until the number of books found satisfies `done`; the
/// time since `committed`.
async fn wait(
    http: &reqwest::Client,
    base: &str,
    word: &str,
    bench: &FreshnessBench,
    committed: Instant,
    done: impl Fn(usize) -> bool,
) -> anyhow::Result<Duration> {
    loop {
        let books: Vec<Value> = http
            .get(format!("{base}/api/books"))
            .query(&[("q", word)])
            .send()
            .await
            .context("GET /api/books")?
            .json()
            .await
            .context("the search answer is not a JSON array")?;
        if done(books.len()) {
            return Ok(committed.elapsed());
        }
        if committed.elapsed() > bench.give_up {
            bail!(
                "search did not show the write of {word:?} within {:?}",
                bench.give_up
            );
        }
        tokio::time::sleep(bench.poll).await;
    }
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("cannot create a histogram")
}

fn record(hist: &mut Histogram<u64>, elapsed: Duration) {
    hist.saturating_record(
        u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1),
    );
}

fn delays(write: &'static str, hist: &Histogram<u64>) -> Delays {
    let ms = |v: u64| v as f64 / 1000.0;
    Delays {
        write,
        samples: usize::try_from(hist.len()).unwrap_or(usize::MAX),
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        max_ms: ms(hist.max()),
    }
}

/// The delays as a Markdown table.
pub fn table(delays: &[Delays]) -> String {
    let mut out = String::from(
        "| write | rounds | write → search p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|\n",
    );
    for d in delays {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} |\n",
            d.write, d.samples, d.p50_ms, d.p99_ms, d.max_ms
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_short_letters_only_and_differ_by_round_and_kind() {
        let a = word("0123456789abcdef", 1, "zqc");
        assert_eq!(a.len(), 15);
        assert!(a.chars().all(|c| c.is_ascii_lowercase()), "{a}");
        assert_ne!(a, word("0123456789abcdef", 2, "zqc"));
        let b = word("0123456789abcdef", 1, "xwu");
        let apart = a.chars().zip(b.chars()).filter(|(x, y)| x != y).count();
        assert_eq!(apart, 3);
    }
}
