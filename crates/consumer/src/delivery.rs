//! What the publishers share when a caller waits for the log's verdicts (the outbox relay, a
//! request to be forgotten).

use std::time::Duration;

use bookstore_domain::Delivery;
use tokio::sync::oneshot;

/// A message handed to a publisher's queue with a channel for the log's verdict on it, or the
/// verdict given at once (refused, or no room in the queue).
pub type Waiting<E> = Result<oneshot::Receiver<Result<(), E>>, Delivery>;

/// The log's verdict on each message of `waiting`, in order, waiting until `deadline` at most
/// (`timeout` after the first was handed over): an error the log reported becomes
/// `failed(error)`, a channel closed without a verdict `Undelivered(lost)`, and no verdict by
/// the deadline `Undelivered("<late> within <timeout> ms")`.
pub async fn verdicts<E>(
    waiting: Vec<Waiting<E>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    failed: impl Fn(E) -> Delivery,
    lost: &str,
    late: &str,
) -> Vec<Delivery> {
    let mut deliveries = Vec::with_capacity(waiting.len());
    for waiting in waiting {
        deliveries.push(match waiting {
            Err(delivery) => delivery,
            Ok(verdict) => match tokio::time::timeout_at(deadline, verdict).await {
                Ok(Ok(Ok(()))) => Delivery::Delivered,
                Ok(Ok(Err(error))) => failed(error),
                Ok(Err(_)) => Delivery::Undelivered(lost.to_owned()),
                Err(_) => {
                    Delivery::Undelivered(format!("{late} within {} ms", timeout.as_millis()))
                }
            },
        });
    }
    deliveries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_message_gets_its_verdict_in_order() {
        let (delivered, delivered_rx) = oneshot::channel::<Result<(), String>>();
        let (failed, failed_rx) = oneshot::channel();
        let (lost, lost_rx) = oneshot::channel::<Result<(), String>>();
        let (_late, late_rx) = oneshot::channel();
        delivered.send(Ok(())).unwrap();
        failed.send(Err("broker said no".to_owned())).unwrap();
        drop(lost);
        let waiting = vec![
            Ok(delivered_rx),
            Err(Delivery::Refused("too large".to_owned())),
            Ok(failed_rx),
            Ok(lost_rx),
            Ok(late_rx),
        ];
        let timeout = Duration::from_millis(50);
        let deadline = tokio::time::Instant::now() + timeout;
        let verdicts = verdicts(
            waiting,
            deadline,
            timeout,
            Delivery::Undelivered,
            "gone",
            "not appended",
        )
        .await;
        assert_eq!(
            verdicts,
            [
                Delivery::Delivered,
                Delivery::Refused("too large".to_owned()),
                Delivery::Undelivered("broker said no".to_owned()),
                Delivery::Undelivered("gone".to_owned()),
                Delivery::Undelivered("not appended within 50 ms".to_owned()),
            ]
        );
    }
}
