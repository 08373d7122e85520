//! Groups: create, read, update, delete and listing.

use tollgate_control_plane::model::GroupPatch;
use tollgate_control_plane::storage::Store;
use tollgate_shared::Multiplier;
use tollgate_shared::domain::{GroupKind, GroupStatus, Platform};

use crate::fixtures::{assert_already_exists, assert_not_found, new_group, walk};

pub(crate) async fn case_group_crud_and_name_unique(store: &Store) {
    let g = store
        .create_group(new_group("team", GroupKind::Standard))
        .await
        .unwrap();
    assert_eq!(g.name, "team");
    assert_eq!(g.platform, Platform::OpenAi);
    assert_eq!(g.rate_multiplier.ppm(), 1_500_000);
    assert_eq!(g.kind, GroupKind::Standard);
    assert_eq!(
        (
            g.daily_limit_nanos,
            g.weekly_limit_nanos,
            g.monthly_limit_nanos
        ),
        (1, 2, 3)
    );
    assert_eq!(g.status, GroupStatus::Active);
    assert!(g.exclusive);
    assert_eq!(g.description, "desc");
    assert_eq!(store.get_group(g.id).await.unwrap(), g);
    assert_already_exists(
        store
            .create_group(new_group("team", GroupKind::Subscription))
            .await,
    );

    // A zero multiplier is stored as zero (free), not turned into one.
    let patch = GroupPatch {
        rate_multiplier: Some(Multiplier::ZERO),
        exclusive: Some(false),
        ..Default::default()
    };
    let p = store.update_group(g.id, patch).await.unwrap();
    assert_eq!(p.rate_multiplier, Multiplier::ZERO);
    assert!(!p.exclusive);
    assert_eq!(
        (
            &p.name,
            p.kind,
            p.daily_limit_nanos,
            p.status,
            &p.description
        ),
        (
            &g.name,
            g.kind,
            g.daily_limit_nanos,
            g.status,
            &g.description
        )
    );
    let patch = GroupPatch {
        name: Some("team2".into()),
        kind: Some(GroupKind::Subscription),
        daily_limit_nanos: Some(10),
        weekly_limit_nanos: Some(20),
        monthly_limit_nanos: Some(30),
        status: Some(GroupStatus::Disabled),
        description: Some("d2".into()),
        ..Default::default()
    };
    let p = store.update_group(g.id, patch).await.unwrap();
    assert_eq!(
        (
            p.name.as_str(),
            p.kind,
            p.daily_limit_nanos,
            p.weekly_limit_nanos,
            p.monthly_limit_nanos,
            p.status,
            p.description.as_str()
        ),
        (
            "team2",
            GroupKind::Subscription,
            10,
            20,
            30,
            GroupStatus::Disabled,
            "d2"
        )
    );
    assert_eq!(p.rate_multiplier, Multiplier::ZERO);

    let other = store
        .create_group(new_group("other", GroupKind::Standard))
        .await
        .unwrap();
    let clash = GroupPatch {
        name: Some("team2".into()),
        ..Default::default()
    };
    assert_already_exists(store.update_group(other.id, clash).await);

    store.delete_group(g.id, true).await.unwrap();
    let what = format!("group {}", g.id);
    assert_not_found(store.get_group(g.id).await, &what);
    assert_not_found(store.delete_group(g.id, true).await, &what);
    assert_not_found(store.update_group(g.id, GroupPatch::default()).await, &what);
    // The deleted group's name is free again.
    store
        .create_group(new_group("team2", GroupKind::Standard))
        .await
        .unwrap();
}

pub(crate) async fn case_group_list_pagination(store: &Store) {
    let mut ids = Vec::new();
    for i in 0..8 {
        let g = store
            .create_group(new_group(&format!("g{i}"), GroupKind::Standard))
            .await
            .unwrap();
        ids.push(g.id);
    }
    store.delete_group(ids[0], true).await.unwrap();
    let (all, pages) = walk(3, |p| async move { store.list_groups(p).await.unwrap() }).await;
    // 7 live groups → 3, 3, 1.
    assert_eq!(pages, 3);
    let got: Vec<i64> = all.iter().map(|g| g.id).collect();
    assert_eq!(got, ids[1..].to_vec());
}
