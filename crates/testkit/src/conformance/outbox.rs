//! The check every outbox passes about rows the log refuses: attempts counted, dead letters never
//! taken again nor pruned, and relays side by side counting each refusal once. For the stores'
//! tests (SQLite and MySQL); it panics on the first difference.
//!
//! The stores' own SQL reads each row's state for it ([`RowState`]) and puts a dead letter back
//! as an operator would.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bookstore_domain::{
    DeadLetteredRow, Outbox, OutboxRow, OutboxSink, Relayed, RepositoryError, RowOutcome,
    Settlement,
};

/// One outbox row as the check reads it: id, attempts, last error, dead-lettered, sent.
pub type RowState = (i64, i64, Option<String>, bool, bool);

/// Answers each row by its id from a script (rows not in it are sent), and records the rows it
/// was given.
#[derive(Default)]
pub struct Scripted {
    pub script: HashMap<i64, RowOutcome>,
    pub given: Mutex<Vec<OutboxRow>>,
}

#[async_trait]
impl OutboxSink for Scripted {
    async fn deliver(&self, rows: &[OutboxRow]) -> Result<Vec<RowOutcome>, String> {
        self.given
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(rows);
        Ok(rows
            .iter()
            .map(|r| self.script.get(&r.id).cloned().unwrap_or(RowOutcome::Sent))
            .collect())
    }
}

/// Refuses the rows whose id is a multiple of [`Poisoned::EVERY`], and gives them up on their
/// [`Poisoned::MAX_ATTEMPTS`]-th refusal; sends the others and records them.
#[derive(Default)]
pub struct Poisoned {
    sent: Mutex<Vec<i64>>,
}

impl Poisoned {
    pub const EVERY: i64 = 100;
    pub const MAX_ATTEMPTS: u32 = 3;
}

#[async_trait]
impl OutboxSink for Poisoned {
    async fn deliver(&self, rows: &[OutboxRow]) -> Result<Vec<RowOutcome>, String> {
        // Let the other relays run between taking rows and settling them.
        YieldOnce(false).await;
        Ok(rows
            .iter()
            .map(|r| {
                if r.id % Self::EVERY != 0 {
                    self.sent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(r.id);
                    RowOutcome::Sent
                } else if r.attempts + 1 >= Self::MAX_ATTEMPTS {
                    RowOutcome::Dead(format!("poison {}", r.id))
                } else {
                    RowOutcome::Refused(format!("poison {}", r.id))
                }
            })
            .collect())
    }
}

/// Pending once, then ready: gives the executor's other tasks a turn.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Runs the check on an outbox holding exactly 4 waiting rows (ids 1 to 4, keys "1" to "4").
/// `states` reads every row's state in id order; `revive(id)` puts a dead letter back as an
/// operator would (`dead_at` and `attempts` cleared).
pub async fn check_refusals<S, SF, R, RF>(outbox: &dyn Outbox, states: S, revive: R)
where
    S: Fn() -> SF,
    SF: Future<Output = Vec<RowState>>,
    R: Fn(i64) -> RF,
    RF: Future<Output = ()>,
{
    let ok = |what: &str, result: Result<u64, RepositoryError>| match result {
        Ok(n) => n,
        Err(error) => panic!("{what}: {error}"),
    };
    let sink = Scripted {
        script: [
            (2, RowOutcome::Refused("too large".into())),
            // Longer than a MySQL TEXT column: the reason is cut before it is stored.
            (3, RowOutcome::Dead("x".repeat(70_000))),
            (4, RowOutcome::Retry),
        ]
        .into(),
        ..Scripted::default()
    };
    let relayed = match outbox.relay(100, &sink).await {
        Ok(relayed) => relayed,
        Err(error) => panic!("relay: {error}"),
    };
    let reason = "x".repeat(Settlement::REASON_CHARS);
    assert_eq!(
        relayed,
        Relayed {
            sent: 1,
            refused: 1,
            dead_lettered: vec![DeadLetteredRow {
                id: 3,
                key: "3".into(),
                reason: reason.clone(),
            }],
        }
    );
    assert_eq!(
        states().await,
        [
            (1, 0, None, false, true),
            (2, 1, Some("too large".into()), false, false),
            (3, 1, Some(reason), true, false),
            (4, 0, None, false, false),
        ]
    );
    assert_eq!(ok("waiting", outbox.waiting().await), 2);
    assert_eq!(ok("dead letters", outbox.dead_letters().await), 1);

    // The next round takes the refused row (with its attempt) and the one given back, not the
    // dead letter.
    let sink = Scripted::default();
    let relay = |sink| async move {
        match outbox.relay(100, sink).await {
            Ok(relayed) => relayed,
            Err(error) => panic!("relay: {error}"),
        }
    };
    assert_eq!(relay(&sink).await.sent, 2);
    let given: Vec<(i64, u32)> = sink
        .given
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|r| (r.id, r.attempts))
        .collect();
    assert_eq!(given, [(2, 1), (4, 0)]);
    assert_eq!(relay(&sink).await, Relayed::default());
    assert_eq!(ok("waiting", outbox.waiting().await), 0);

    // Pruning never deletes a dead letter.
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(ok("prune", outbox.prune(Duration::ZERO, 100).await), 3);
    assert_eq!(ok("dead letters", outbox.dead_letters().await), 1);

    // An operator puts it back: it is relayed again.
    revive(3).await;
    assert_eq!(ok("waiting", outbox.waiting().await), 1);
    assert_eq!(relay(&sink).await.sent, 1);
    assert_eq!(ok("dead letters", outbox.dead_letters().await), 0);
}

/// After relays side by side ran `sink` over an outbox of 1,000 rows until no round progressed:
/// every good row was sent once, every poisoned one dead-lettered after exactly
/// [`Poisoned::MAX_ATTEMPTS`] refusals, and nothing waits. `states` as for [`check_refusals`].
pub async fn check_poisoned<SF>(outbox: &dyn Outbox, sink: &Poisoned, states: SF)
where
    SF: Future<Output = Vec<RowState>>,
{
    let mut sent = sink.sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    sent.sort_unstable();
    let good: Vec<i64> = (1..=1_000).filter(|id| id % Poisoned::EVERY != 0).collect();
    assert_eq!(sent, good, "every good row once");
    for (id, attempts, error, dead, was_sent) in states.await {
        if id % Poisoned::EVERY == 0 {
            assert_eq!(
                (attempts, error, dead, was_sent),
                (
                    i64::from(Poisoned::MAX_ATTEMPTS),
                    Some(format!("poison {id}")),
                    true,
                    false
                )
            );
        } else {
            assert_eq!((attempts, dead, was_sent), (0, false, true));
        }
    }
    assert!(matches!(outbox.waiting().await, Ok(0)));
    assert!(matches!(outbox.dead_letters().await, Ok(10)));
}
