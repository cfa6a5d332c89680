//! The PostgreSQL state store against a REAL private PostgreSQL cluster (Debian's binaries,
//! started by test-support): the tables and their version, what each write may change, and the
//! leader lock passing from a dropped store to a waiting one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use registry_core::{Digest, ImageReference};
use state_postgres::{PostgresConfig, PostgresError, PostgresStore, SCHEMA_VERSION};
use test_support::{Postgres, WorkDir};
use watcher::{Leadership, StateStore};

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64)).parse().expect("digest")
}

fn config(pg: &Postgres, replica: &str) -> PostgresConfig {
    let mut config = PostgresConfig::new(pg.url(), replica);
    config.retry = Duration::from_millis(200);
    config
}

async fn leadership_becomes(store: &PostgresStore, role: &str) -> Leadership {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let leadership = store.leadership().await;
        if leadership.role() == role || Instant::now() > deadline {
            return leadership;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_created_once_and_a_newer_schema_is_refused() {
    let wd = WorkDir::new("pg-schema");
    let pg = Postgres::start(&wd);
    let first = PostgresStore::connect(config(&pg, "a")).await.expect("connects");
    let second = PostgresStore::connect(config(&pg, "b")).await.expect("connects again");
    assert_eq!(
        pg.psql("SELECT string_agg(version::text, ',') FROM imagewatch_schema"),
        SCHEMA_VERSION.to_string()
    );
    drop((first, second));

    pg.psql("INSERT INTO imagewatch_schema (version) VALUES (99)");
    let refused = PostgresStore::connect(config(&pg, "c")).await.expect_err("refused");
    assert!(matches!(refused, PostgresError::Database { .. }), "{refused}");
    let message = refused.to_string();
    assert!(message.contains("schema version 99"), "{message}");
    assert!(!message.contains(pg.password()), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_the_start_without_showing_it() {
    let wd = WorkDir::new("pg-password");
    let pg = Postgres::start(&wd);
    let url = pg.url().replace(pg.password(), "wrong-s3cret");
    let error = PostgresStore::connect(PostgresConfig::new(url, "a"))
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("password authentication failed"), "{message}");
    assert!(!message.contains("wrong-s3cret"), "{message}");
}

#[tokio::test]
async fn sslmode_require_is_refused_plainly_rather_than_sent_in_clear() {
    let error = PostgresStore::connect(PostgresConfig::new(
        "postgres://u:s3cret@127.0.0.1/x?sslmode=require",
        "a",
    ))
    .await
    .expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("without TLS"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sights_never_overwrite_and_a_refresh_clears_its_pending_move() {
    let wd = WorkDir::new("pg-writes");
    let pg = Postgres::start(&wd);
    let store = PostgresStore::connect(config(&pg, "a")).await.expect("connects");
    let image: ImageReference = "127.0.0.1:5000/app:latest".parse().expect("reference");
    store
        .save(&HashMap::from([(image.clone(), digest('1'))]), &HashMap::new())
        .await
        .expect("seeded");
    // A standby's stale view must not undo what the leader recorded.
    store.record_refreshed(&image, &digest('2')).await.expect("recorded");
    store
        .save(&HashMap::from([(image.clone(), digest('1'))]), &HashMap::new())
        .await
        .expect("saved");
    assert_eq!(
        store.load().await.expect("loads").digests.get(&image),
        Some(&digest('2'))
    );

    store
        .record_move(&image, &digest('2'), &digest('3'))
        .await
        .expect("pending");
    assert_eq!(store.pending().await.expect("pending").len(), 1);
    store.record_refreshed(&image, &digest('3')).await.expect("recorded");
    assert!(store.pending().await.expect("pending").is_empty());
    assert_eq!(
        store.load().await.expect("loads").digests.get(&image),
        Some(&digest('3'))
    );

    // A standby that saw the move before it learnt of the refresh reports it late: the move is
    // already refreshed, so nothing may be left pending.
    store
        .record_move(&image, &digest('2'), &digest('3'))
        .await
        .expect("late report");
    assert!(store.pending().await.expect("pending").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_store_leads_and_the_lock_passes_when_its_session_ends() {
    let wd = WorkDir::new("pg-leader");
    let pg = Postgres::start(&wd);
    let first = PostgresStore::connect(config(&pg, "first")).await.expect("connects");
    let second = PostgresStore::connect(config(&pg, "second")).await.expect("connects");
    assert_eq!(
        first.leadership().await,
        Leadership::Leader {
            replica: "first".into()
        }
    );
    let standby = leadership_becomes(&second, "standby").await;
    assert_eq!(standby.leader(), Some("first"), "{standby:?}");

    let dropped = Instant::now();
    drop(first);
    let taken = leadership_becomes(&second, "leader").await;
    assert_eq!(
        taken,
        Leadership::Leader {
            replica: "second".into()
        }
    );
    assert!(dropped.elapsed() < Duration::from_secs(2), "{:?}", dropped.elapsed());
}
