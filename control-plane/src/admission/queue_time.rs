//! How long one Admit call waited in slot queues. The Admit handler runs the call inside
//! [`measure`]; the slot tables add each wait with [`add`]. The data plane subtracts the
//! total from the gateway's added-latency metric (a queue wait is the user's or the
//! account's limit, not gateway overhead).

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

tokio::task_local! {
    static QUEUED: Cell<Duration>;
}

/// Runs `fut` and returns its output with the time it spent queued for slots.
pub async fn measure<F: Future>(fut: F) -> (F::Output, Duration) {
    QUEUED
        .scope(Cell::new(Duration::ZERO), async move {
            let out = fut.await;
            (out, QUEUED.with(Cell::get))
        })
        .await
}

/// Adds a wait to the current call's total (nothing outside [`measure`]).
pub fn add(waited: Duration) {
    let _ = QUEUED.try_with(|q| q.set(q.get() + waited));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_inside_measure_are_summed_and_outside_ignored() {
        add(Duration::from_millis(5));
        let ((), queued) = measure(async {
            add(Duration::from_millis(2));
            tokio::task::yield_now().await;
            add(Duration::from_millis(3));
        })
        .await;
        assert_eq!(queued, Duration::from_millis(5));
    }
}
