//! The store (keys and the usage ledger) against a SQLite file and against a real
//! PostgreSQL server. PostgreSQL is not optional: without `VEIL_TEST_POSTGRES_URL` the
//! test fails and says how to get one (`eval "$(scripts/setup-postgres.sh)"`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::{TempDir, fresh_postgres_database};
use veil_gateway::auth::{NewKey, hash_key};
use veil_gateway::store::{Period, Store, UsageRow, aggregate};

/// 2026-11-23T10:15:00Z in Unix ms.
const T0: i64 = 1_795_428_900_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn row(digest: &str, key: &str, model: &str, at: i64, p: i64, c: i64) -> UsageRow {
    UsageRow {
        request_digest: digest.to_owned(),
        key_name: key.to_owned(),
        model: model.to_owned(),
        backend: "http://127.0.0.1:1".to_owned(),
        key_id: "00112233445566778899aabbccddeeff".to_owned(),
        prompt_tokens: p,
        completion_tokens: c,
        status: 200,
        started_at_ms: at,
        finished_at_ms: at + 10,
    }
}

fn digest(i: u32) -> String {
    veil_attestation::bytes::Sha256Digest::of(&i.to_be_bytes()).to_string()
}

async fn exercise(url: &str) {
    // Two replicas on one database; migrating twice is harmless.
    let a = Store::open(url).await.unwrap();
    let b = Store::open(url).await.unwrap();
    let _ = Store::open(url).await.unwrap();

    // Keys: stored as hashes, unique names and hashes, looked up by hash.
    let alice = NewKey::generate().unwrap();
    let bob = NewKey::generate().unwrap();
    a.create_key("alice", &alice.hash(), Some(60), Some(10_000), Some(4))
        .await
        .unwrap();
    b.create_key("bob", &bob.hash(), None, None, None)
        .await
        .unwrap();
    assert!(
        a.create_key("alice", &hash_key("veil_other"), None, None, None)
            .await
            .is_err()
    );
    assert!(
        a.create_key("carol", &alice.hash(), None, None, None)
            .await
            .is_err()
    );
    let k = b.active_key_by_hash(&alice.hash()).await.unwrap().unwrap();
    assert_eq!(
        (
            k.name.as_str(),
            k.rpm,
            k.tpm,
            k.max_streams,
            k.revoked_at_ms
        ),
        ("alice", Some(60), Some(10_000), Some(4), None)
    );
    assert_ne!(k.key_hash, alice.secret());
    assert!(
        a.active_key_by_hash(&hash_key("veil_unknown"))
            .await
            .unwrap()
            .is_none()
    );

    // Limits change; unknown names are said to be unknown.
    assert!(b.set_limits("alice", Some(5), None, Some(2)).await.unwrap());
    assert!(!b.set_limits("nobody", Some(5), None, None).await.unwrap());
    let k = a.active_key_by_hash(&alice.hash()).await.unwrap().unwrap();
    assert_eq!((k.rpm, k.tpm, k.max_streams), (Some(5), None, Some(2)));

    // Revocation: seen by the other replica at once; only once.
    assert!(a.revoke_key("bob").await.unwrap());
    assert!(!a.revoke_key("bob").await.unwrap());
    assert!(b.active_key_by_hash(&bob.hash()).await.unwrap().is_none());
    let keys = b.list_keys().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert!(keys[1].revoked_at_ms.is_some() && keys[0].revoked_at_ms.is_none());

    // The ledger: idempotent on the request digest, across replicas.
    assert!(
        a.record(&row(&digest(0), "alice", "m1", T0, 10, 5))
            .await
            .unwrap()
    );
    assert!(
        !b.record(&row(&digest(0), "alice", "m1", T0, 999, 999))
            .await
            .unwrap()
    );
    assert!(
        a.record(&row(&digest(1), "alice", "m1", T0 + HOUR, 20, 6))
            .await
            .unwrap()
    );
    assert!(
        b.record(&row(&digest(2), "alice", "m2", T0 + DAY, 30, 7))
            .await
            .unwrap()
    );
    assert!(
        a.record(&row(&digest(3), "bob", "m1", T0 + 40 * DAY, 40, 8))
            .await
            .unwrap()
    );
    let rows = b.usage_rows().await.unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0], row(&digest(0), "alice", "m1", T0, 10, 5));
    assert!(
        rows.windows(2)
            .all(|w| w[0].started_at_ms <= w[1].started_at_ms)
    );

    let by = |p| {
        aggregate(&rows, p)
            .into_iter()
            .map(|t| {
                (
                    t.period,
                    t.key_name,
                    t.model,
                    t.requests,
                    t.prompt_tokens,
                    t.completion_tokens,
                )
            })
            .collect::<Vec<_>>()
    };
    let s = |x: &str| x.to_owned();
    assert_eq!(
        by(Period::Hour),
        [
            (s("2026-11-23T10"), s("alice"), s("m1"), 1, 10, 5),
            (s("2026-11-23T11"), s("alice"), s("m1"), 1, 20, 6),
            (s("2026-11-24T10"), s("alice"), s("m2"), 1, 30, 7),
            (s("2027-01-02T10"), s("bob"), s("m1"), 1, 40, 8),
        ]
    );
    assert_eq!(
        by(Period::Day),
        [
            (s("2026-11-23"), s("alice"), s("m1"), 2, 30, 11),
            (s("2026-11-24"), s("alice"), s("m2"), 1, 30, 7),
            (s("2027-01-02"), s("bob"), s("m1"), 1, 40, 8),
        ]
    );
    assert_eq!(
        by(Period::Month),
        [
            (s("2026-11"), s("alice"), s("m1"), 2, 30, 11),
            (s("2026-11"), s("alice"), s("m2"), 1, 30, 7),
            (s("2027-01"), s("bob"), s("m1"), 1, 40, 8),
        ]
    );

    // Two replicas writing at once, half the receipts twice: each is recorded once.
    let mut tasks = Vec::new();
    for i in 0..150u32 {
        for (store, take) in [(&a, i < 100), (&b, i >= 50)] {
            if take {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    store
                        .record(&row(&digest(1000 + i), "alice", "m1", T0, 1, 1))
                        .await
                        .unwrap()
                }));
            }
        }
    }
    let inserted = futures::future::join_all(tasks)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(inserted, 150);
    let rows = a.usage_rows().await.unwrap();
    assert_eq!(rows.len(), 154);
    let unique: BTreeSet<_> = rows.iter().map(|r| r.request_digest.clone()).collect();
    assert_eq!(unique.len(), 154);

    // Batched writes (the gateway's ledger writer): idempotent on the digest, within a
    // batch and against rows already recorded, and all durable, seen by the other replica.
    let batch: Vec<UsageRow> = (5000..5040)
        .chain(5030..5045)
        .map(|i| row(&digest(i), "bob", "m", T0 + 3 * DAY, 1, 2))
        .chain(std::iter::once(rows[0].clone()))
        .collect();
    let written = a.record_many(batch).await;
    let written: Vec<bool> = written.into_iter().map(Result::unwrap).collect();
    assert_eq!(written.len(), 56);
    assert_eq!(written.iter().filter(|w| **w).count(), 45);
    assert!(written[..40].iter().all(|w| *w));
    assert!(written[40..50].iter().all(|w| !*w), "in-batch duplicates");
    assert!(written[50..55].iter().all(|w| *w));
    assert!(!written[55], "already recorded");
    let again = b
        .record_many(
            (5000..5045)
                .map(|i| row(&digest(i), "bob", "m", T0, 1, 2))
                .collect(),
        )
        .await;
    assert!(again.into_iter().all(|w| !w.unwrap()));
    assert_eq!(b.usage_rows().await.unwrap().len(), 154 + 45);
    assert!(a.record_many(Vec::new()).await.is_empty());

    // The per-request lookup (a prepared statement kept per connection) sees a revocation
    // made by another replica on its very next call.
    let dave = NewKey::generate().unwrap();
    b.create_key("dave", &dave.hash(), None, None, None)
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(a.active_key_by_hash(&dave.hash()).await.unwrap().is_some());
    }
    assert!(b.revoke_key("dave").await.unwrap());
    assert!(a.active_key_by_hash(&dave.hash()).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_and_keys_on_sqlite() {
    let dir = TempDir::new("ledger");
    exercise(&format!("sqlite:{}", dir.path("a.db").display())).await;
    // A plain path is a SQLite file too, created on first use.
    let plain = dir.path("b.db");
    exercise(&plain.display().to_string()).await;
    assert!(plain.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_and_keys_on_postgresql() {
    let url = fresh_postgres_database("ledger").await;
    exercise(&url).await;
}

/// A gateway outlives its PostgreSQL connection: when the server ends it (a restart, a
/// failover, an administrator), the next operation connects again instead of failing,
/// and a receipt being recorded at that moment is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_connections_are_made_again() {
    let url = fresh_postgres_database("reconnect").await;
    let store = Store::open(&url).await.unwrap();
    let key = NewKey::generate().unwrap();
    store
        .create_key("k", &key.hash(), None, None, None)
        .await
        .unwrap();
    assert!(
        store
            .record(&row(&digest(1), "k", "m", T0, 1, 1))
            .await
            .unwrap()
    );

    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let terminate = || async {
        let rows = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        assert!(!rows.is_empty(), "no session to end");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };

    terminate().await;
    assert!(
        store
            .record(&row(&digest(2), "k", "m", T0, 1, 1))
            .await
            .unwrap()
    );
    terminate().await;
    assert!(
        store
            .active_key_by_hash(&key.hash())
            .await
            .unwrap()
            .is_some()
    );
    terminate().await;
    assert_eq!(store.usage_rows().await.unwrap().len(), 2);
    terminate().await;
    assert!(store.revoke_key("k").await.unwrap());
    assert!(
        store
            .active_key_by_hash(&key.hash())
            .await
            .unwrap()
            .is_none()
    );
}
