//! Response owners (response-id affinity): first owner wins, TTL cut-off, pruning.

use tollgate_control_plane::model::ResponseOwner;
use tollgate_control_plane::storage::Store;

fn owner(id: &str, account_id: i64, user_id: i64, at: i64) -> ResponseOwner {
    ResponseOwner {
        response_id: id.to_owned(),
        account_id,
        user_id,
        created_at_ms: at,
    }
}

pub(crate) async fn case_response_owner_first_wins_ttl_and_prune(store: &Store) {
    let first = owner("resp_abc", 7, 3, 1_000);
    assert!(store.record_response(&first).await.unwrap());
    // A second report (replay or another account) never moves the response.
    assert!(
        !store
            .record_response(&owner("resp_abc", 8, 4, 2_000))
            .await
            .unwrap()
    );
    assert_eq!(
        store.response_owner("resp_abc", 0).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.response_owner("resp_other", 0).await.unwrap(), None);
    // Recorded before the TTL's start: gone, even before pruning.
    assert_eq!(store.response_owner("resp_abc", 1_001).await.unwrap(), None);
    assert!(
        store
            .record_response(&owner("resp_new", 7, 3, 5_000))
            .await
            .unwrap()
    );
    // A batch: new ids inserted, a known one keeps its owner.
    let batch = [
        owner("resp_b1", 9, 3, 5_000),
        owner("resp_abc", 9, 9, 5_000),
        owner("resp_b2", 9, 3, 5_000),
    ];
    assert_eq!(store.record_responses(&batch).await.unwrap(), 2);
    assert_eq!(
        store.response_owner("resp_abc", 0).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.response_owner("resp_b2", 0).await.unwrap(),
        Some(owner("resp_b2", 9, 3, 5_000))
    );
    assert_eq!(store.prune_responses(2_000).await.unwrap(), 1);
    assert_eq!(store.response_owner("resp_abc", 0).await.unwrap(), None);
    assert_eq!(
        store.response_owner("resp_new", 0).await.unwrap(),
        Some(owner("resp_new", 7, 3, 5_000))
    );
}
