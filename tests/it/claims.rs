//! Which incidents are free to work is judged by the database's clock, as the claim itself is:
//! a replica whose clock runs fast must not take over another's live claim. (Before, the
//! sweep passed this process's clock; with it 5 minutes fast, a live claim was "claimable".)

use std::time::Duration;

use crate::support::app::{fresh_store, Backend};
use crate::support::incident::new_incident;

on_both_stores!(
    a_live_claim_is_not_claimable_whatever_this_process_clock_says,
    a_lease_that_ran_out_by_the_databases_clock_is_claimable,
);

pub async fn a_live_claim_is_not_claimable_whatever_this_process_clock_says(backend: Backend) {
    let (_db, store) = fresh_store(backend).await;
    let id = new_incident().open(&store).await;
    store
        .claim(id, "replica-a", Duration::from_secs(60))
        .await
        .unwrap()
        .expect("claimed");

    let free = store.claimable(10).await.unwrap();

    assert!(free.is_empty(), "{free:?}");
}

pub async fn a_lease_that_ran_out_by_the_databases_clock_is_claimable(backend: Backend) {
    let (_db, store) = fresh_store(backend).await;
    let id = new_incident().open(&store).await;
    store
        .claim(id, "replica-a", Duration::from_secs(1))
        .await
        .unwrap()
        .expect("claimed");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let free = store.claimable(10).await.unwrap();

    assert_eq!(free.iter().map(|f| f.0).collect::<Vec<_>>(), [id]);
}
