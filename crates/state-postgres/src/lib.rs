//! A watcher [`StateStore`] in PostgreSQL, shared by the replicas of one imagewatch deployment:
//! the seen digests and the moves seen but not refreshed yet live in tables (created or migrated
//! at start, versioned in `imagewatch_schema`), and one replica at a time leads, the only one
//! that refreshes.
//!
//! **Leader election: a session-level advisory lock** (`pg_try_advisory_lock`) held by the
//! replica's one database session. PostgreSQL releases it the moment that session ends (a
//! replica killed, its connection cut, the server restarted), so a takeover needs no clock, no
//! lease length to tune and no row to clean up; a standby tries for the lock every `retry`. The
//! lock carries no fencing token, so the leader proves its session alive (one round trip)
//! right before every refresh and refreshes nothing once it cannot.
//!
//! **Guarantee: at least once, with idempotent refreshers.** A seen digest changes only after a
//! refresh succeeded (and the pending move is cleared right after), so a move the leader
//! had not refreshed (or had not recorded) when it died is still a move for the next leader,
//! which checks every image as soon as it leads. A move is refreshed twice only when a leader
//! dies between the refresh and its record; the refreshers treat a second refresh to the same
//! digest as a no-op (containers and services already on it are left alone) and webhook or
//! command receivers see the same `(image, new_digest)` again.
//!
//! It must not read the environment, and every query is parameterised.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use registry_core::{Digest, ImageReference};
use tokio::sync::{Mutex, watch};
use tokio_postgres::{Client, NoTls};
use tracing::{debug, info, warn};
use watcher::{FirstSeen, Leadership, LoadedState, StateStore, StoreError};

/// The schema version this build writes; a database at a newer one is refused.
pub const SCHEMA_VERSION: i32 = 1;
/// The advisory lock key replicas elect their leader with, unless configured.
pub const DEFAULT_LOCK_KEY: i64 = 0x696d_6777; // "imgw"
/// Serialises the migrations of replicas starting at once (a transaction-level lock).
const MIGRATION_LOCK_KEY: i64 = 0x696d_676d; // "imgm"
/// `application_name` of every session starts with this; the rest is the replica's name.
const APPLICATION_PREFIX: &str = "imagewatch:";

/// How the store connects and elects.
#[derive(Clone)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db` or a key=value connection string.
    pub url: String,
    /// This replica's name in `/status`, `/metrics` and the tables (unique per replica).
    pub replica: String,
    /// The advisory lock key: replicas with the same key (and database) elect one leader.
    pub lock_key: i64,
    /// How often a standby tries for the lock, the leader proves its session, and a lost
    /// connection is retried: the bound on a takeover after the leader's session ends.
    pub retry: Duration,
    /// Bound on connecting and on every query.
    pub timeout: Duration,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redacted(&self.url))
            .field("replica", &self.replica)
            .field("lock_key", &self.lock_key)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl PostgresConfig {
    pub fn new(url: impl Into<String>, replica: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            replica: replica.into(),
            lock_key: DEFAULT_LOCK_KEY,
            retry: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Whether a `--state` value names a PostgreSQL database rather than a file.
pub fn is_postgres_url(value: &str) -> bool {
    let value = value.trim();
    value.starts_with("postgres://") || value.starts_with("postgresql://")
}

/// The connection string with any password replaced, for logs and errors.
pub fn redacted(url: &str) -> String {
    match tokio_postgres::Config::from_str(url) {
        Ok(config) => {
            let hosts: Vec<String> = config
                .get_hosts()
                .iter()
                .map(|host| match host {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                })
                .collect();
            let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
            format!(
                "postgres://{}@{}:{}/{}",
                config.get_user().unwrap_or(""),
                hosts.join(","),
                ports.join(","),
                config.get_dbname().unwrap_or("")
            )
        }
        Err(_) => "postgres://(unparsable)".into(),
    }
}

/// This build speaks to PostgreSQL without TLS: the password may cross only a unix socket or
/// loopback, unless the operator says `sslmode=disable` for a network they trust.
fn plain_connection_refusal(config: &tokio_postgres::Config) -> Option<String> {
    use tokio_postgres::config::{Host, SslMode};
    if config.get_ssl_mode() == SslMode::Require {
        return Some("sslmode=require, and this build speaks to PostgreSQL without TLS".into());
    }
    let remote = config.get_hosts().iter().find_map(|host| match host {
        Host::Tcp(name) if !is_loopback(name) => Some(name.clone()),
        _ => None,
    });
    match remote {
        Some(name) if config.get_ssl_mode() != SslMode::Disable => Some(format!(
            "{name} is not loopback and this build speaks to PostgreSQL without TLS; add `sslmode=disable` to accept a plain connection on a network you trust, or use a unix socket"
        )),
        _ => None,
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "--state {location}: not a usable PostgreSQL connection string ({reason}); expected `postgres://user:password@host:port/db` (TLS is not supported yet: use a unix socket or a trusted network)"
    )]
    Url { location: String, reason: String },
    #[error("PostgreSQL at {location}: {message}")]
    Database { location: String, message: String },
}

/// The store. Cheap to share; its election runs until the last handle is dropped.
pub struct PostgresStore {
    inner: Arc<Inner>,
    election: tokio::task::JoinHandle<()>,
}

struct Inner {
    config: tokio_postgres::Config,
    settings: PostgresConfig,
    location: String,
    /// The one session: it holds the leader lock when leading. `None` while disconnected.
    session: Mutex<Option<Arc<Client>>>,
    leadership: watch::Sender<Leadership>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.inner.location)
            .field("replica", &self.inner.settings.replica)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.election.abort();
    }
}

impl PostgresStore {
    /// Connects, creates or migrates the tables, and starts the election. The first connection
    /// must succeed (a wrong URL or password fails the start); later losses are retried.
    pub async fn connect(settings: PostgresConfig) -> Result<PostgresStore, PostgresError> {
        let location = redacted(&settings.url);
        let mut config = tokio_postgres::Config::from_str(settings.url.trim()).map_err(|e| PostgresError::Url {
            location: location.clone(),
            reason: e.to_string(),
        })?;
        if let Some(reason) = plain_connection_refusal(&config) {
            return Err(PostgresError::Url { location, reason });
        }
        let application: String = format!("{APPLICATION_PREFIX}{}", settings.replica)
            .chars()
            .take(63)
            .collect();
        config.application_name(&application).connect_timeout(settings.timeout);
        let inner = Arc::new(Inner {
            config,
            leadership: watch::Sender::new(Leadership::Standby {
                replica: settings.replica.clone(),
                leader: None,
            }),
            settings,
            location,
            session: Mutex::new(None),
        });
        let client = inner.open().await.map_err(|message| PostgresError::Database {
            location: inner.location.clone(),
            message,
        })?;
        *inner.session.lock().await = Some(client);
        inner.elect().await;
        let election = tokio::spawn(election(Arc::downgrade(&inner)));
        info!(store = %inner.location, replica = %inner.settings.replica, "PostgreSQL state store connected");
        Ok(PostgresStore { inner, election })
    }

    pub fn replica(&self) -> &str {
        &self.inner.settings.replica
    }

    /// Moves seen by standbys and not refreshed yet: `(image, old, new, observed_by)`.
    pub async fn pending(&self) -> Result<Vec<(String, String, String, String)>, StoreError> {
        let rows = self
            .inner
            .query(
                "SELECT p.image, p.old_digest, p.new_digest, p.observed_by FROM imagewatch_pending p \
                 LEFT JOIN imagewatch_seen s ON s.image = p.image \
                 WHERE s.digest IS DISTINCT FROM p.new_digest ORDER BY p.image",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
            .collect())
    }
}

/// Runs while the store lives: reconnects a lost session, tries for the lock, proves it held.
async fn election(inner: Weak<Inner>) {
    loop {
        let Some(retry) = inner.upgrade().map(|inner| inner.settings.retry) else {
            return;
        };
        tokio::time::sleep(retry).await;
        let Some(inner) = inner.upgrade() else { return };
        inner.elect().await;
    }
}

impl Inner {
    /// A new session with the tables migrated.
    async fn open(&self) -> Result<Arc<Client>, String> {
        let connect = self.config.connect(NoTls);
        let (mut client, connection) = tokio::time::timeout(self.settings.timeout, connect)
            .await
            .map_err(|_| format!("no connection within {}s", self.settings.timeout.as_secs()))?
            .map_err(|e| describe(&e))?;
        let location = self.location.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                warn!(store = %location, error = %describe(&error), "PostgreSQL session ended");
            }
        });
        tokio::time::timeout(self.settings.timeout, migrate(&mut client))
            .await
            .map_err(|_| "migration timed out".to_owned())??;
        Ok(Arc::new(client))
    }

    /// The session, reconnecting if there is none.
    async fn client(&self) -> Result<Arc<Client>, StoreError> {
        let mut session = self.session.lock().await;
        if let Some(client) = session.as_ref().filter(|client| !client.is_closed()) {
            return Ok(client.clone());
        }
        if session.take().is_some() {
            self.lost("the session closed");
        }
        let client = self.open().await.map_err(|message| self.error(message))?;
        info!(store = %self.location, "PostgreSQL session (re)opened");
        *session = Some(client.clone());
        Ok(client)
    }

    /// Every query goes through here: `'static` keeps SQL a constant, values go in `params`.
    async fn query(
        &self,
        sql: &'static str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client().await?;
        match tokio::time::timeout(self.settings.timeout, client.query(sql, params)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(error)) => {
                if client.is_closed() {
                    self.drop_session(&client).await;
                }
                Err(self.error(describe(&error)))
            }
            Err(_) => {
                self.drop_session(&client).await;
                Err(self.error(format!("no answer within {}s", self.settings.timeout.as_secs())))
            }
        }
    }

    /// Forgets a session that failed; its lock (if it held one) is gone with it.
    async fn drop_session(&self, client: &Arc<Client>) {
        let mut session = self.session.lock().await;
        if session.as_ref().is_some_and(|current| Arc::ptr_eq(current, client)) {
            *session = None;
            self.lost("the session failed");
        }
    }

    fn lost(&self, why: &str) {
        if self.leadership.borrow().may_refresh() {
            warn!(store = %self.location, replica = %self.settings.replica, why, "leadership lost");
        }
        self.set(Leadership::Standby {
            replica: self.settings.replica.clone(),
            leader: None,
        });
    }

    fn set(&self, leadership: Leadership) {
        self.leadership.send_if_modified(|current| {
            if *current == leadership {
                false
            } else {
                *current = leadership;
                true
            }
        });
    }

    /// One round of the election: a leader proves its session, a standby tries for the lock.
    async fn elect(&self) {
        let leading = self.leadership.borrow().may_refresh();
        let (class, object) = self.lock_parts();
        let result = if leading {
            // Proves that this very session holds the lock, whatever reconnected meanwhile.
            self.query(
                "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND pid = pg_backend_pid() AND classid = $1 AND objid = $2 AND objsubid = 1",
                &[&class, &object],
            )
            .await
        } else {
            self.query("SELECT pg_try_advisory_lock($1)", &[&self.settings.lock_key])
                .await
        };
        let holds = match result {
            Ok(rows) => rows.first().is_some_and(|row| row.get::<_, bool>(0)),
            Err(error) => {
                debug!(store = %self.location, error = %error, "election round failed");
                self.lost("the database did not answer");
                return;
            }
        };
        if holds {
            if !leading {
                info!(store = %self.location, replica = %self.settings.replica, "leader lock acquired: this replica refreshes");
            }
            self.set(Leadership::Leader {
                replica: self.settings.replica.clone(),
            });
            return;
        }
        let leader = self.current_leader().await;
        self.set(Leadership::Standby {
            replica: self.settings.replica.clone(),
            leader,
        });
    }

    /// The replica whose session holds the lock, from `pg_locks` (live, never stale).
    async fn current_leader(&self) -> Option<String> {
        let (class, object) = self.lock_parts();
        let rows = self
            .query(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1",
                &[&class, &object],
            )
            .await
            .ok()?;
        let name: String = rows.first()?.get(0);
        Some(name.strip_prefix(APPLICATION_PREFIX).unwrap_or(&name).to_owned())
    }

    /// How `pg_locks` shows a bigint advisory key: high half in `classid`, low half in `objid`.
    fn lock_parts(&self) -> (u32, u32) {
        let key = self.settings.lock_key;
        let class = u32::try_from((key >> 32) & 0xffff_ffff).unwrap_or_default();
        let object = u32::try_from(key & 0xffff_ffff).unwrap_or_default();
        (class, object)
    }

    fn error(&self, message: String) -> StoreError {
        StoreError::Shared {
            location: self.location.clone(),
            message,
        }
    }
}

/// Creates the tables, or migrates them to [`SCHEMA_VERSION`], in one transaction under a
/// lock, so replicas starting together migrate once.
async fn migrate(client: &mut Client) -> Result<(), String> {
    let transaction = client.transaction().await.map_err(|e| describe(&e))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(|e| describe(&e))?;
    transaction
        .batch_execute("CREATE TABLE IF NOT EXISTS imagewatch_schema (version integer NOT NULL)")
        .await
        .map_err(|e| describe(&e))?;
    let version: Option<i32> = transaction
        .query_one("SELECT max(version) FROM imagewatch_schema", &[])
        .await
        .map_err(|e| describe(&e))?
        .get(0);
    let version = version.unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(format!(
            "its imagewatch tables are at schema version {version}, newer than this imagewatch's {SCHEMA_VERSION}; upgrade imagewatch"
        ));
    }
    if version < 1 {
        transaction
            .batch_execute(
                "CREATE TABLE imagewatch_seen (
                    image text PRIMARY KEY,
                    digest text NOT NULL,
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    updated_by text NOT NULL
                );
                CREATE TABLE imagewatch_pending (
                    image text PRIMARY KEY,
                    old_digest text NOT NULL,
                    new_digest text NOT NULL,
                    observed_at timestamptz NOT NULL DEFAULT now(),
                    observed_by text NOT NULL
                );",
            )
            .await
            .map_err(|e| describe(&e))?;
        transaction
            .execute(
                "INSERT INTO imagewatch_schema (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )
            .await
            .map_err(|e| describe(&e))?;
        info!(version = SCHEMA_VERSION, "imagewatch tables created");
    }
    transaction.commit().await.map_err(|e| describe(&e))
}

#[async_trait]
impl StateStore for PostgresStore {
    fn location(&self) -> String {
        self.inner.location.clone()
    }

    fn shared(&self) -> bool {
        true
    }

    async fn load(&self) -> Result<LoadedState, StoreError> {
        let rows = self
            .inner
            .query("SELECT image, digest FROM imagewatch_seen", &[])
            .await?;
        let mut digests = HashMap::new();
        for row in rows {
            let (image, digest): (String, String) = (row.get(0), row.get(1));
            match (image.parse::<ImageReference>(), digest.parse::<Digest>()) {
                (Ok(image), Ok(digest)) => {
                    digests.insert(image, digest);
                }
                _ => {
                    warn!(store = %self.inner.location, image = %image.escape_debug(), "unusable row in imagewatch_seen skipped")
                }
            }
        }
        Ok(LoadedState {
            digests,
            ..LoadedState::default()
        })
    }

    /// First-seen times are not shared: each replica times a cooldown from its own first sight.
    async fn save(
        &self,
        seen: &HashMap<ImageReference, Digest>,
        _first_seen: &HashMap<ImageReference, FirstSeen>,
    ) -> Result<(), StoreError> {
        if seen.is_empty() {
            return Ok(());
        }
        let (images, digests): (Vec<String>, Vec<String>) = seen
            .iter()
            .map(|(image, digest)| (image.to_string(), digest.to_string()))
            .unzip();
        self.inner
            .query(
                "INSERT INTO imagewatch_seen (image, digest, updated_by) \
                 SELECT image, digest, $3 FROM unnest($1::text[], $2::text[]) AS s(image, digest) \
                 ON CONFLICT (image) DO NOTHING",
                &[&images, &digests, &self.inner.settings.replica],
            )
            .await?;
        Ok(())
    }

    async fn record_move(&self, image: &ImageReference, old: &Digest, new: &Digest) -> Result<(), StoreError> {
        // A standby's view may be a poll behind: a move the leader already refreshed is not
        // pending. Locking the seen row waits out a leader writing it right now.
        self.inner
            .query(
                "WITH current AS (SELECT digest FROM imagewatch_seen WHERE image = $1 FOR UPDATE) \
                 INSERT INTO imagewatch_pending (image, old_digest, new_digest, observed_by) \
                 SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM current WHERE digest = $3) \
                 ON CONFLICT (image) DO UPDATE SET old_digest = EXCLUDED.old_digest, new_digest = EXCLUDED.new_digest, \
                 observed_at = now(), observed_by = EXCLUDED.observed_by \
                 WHERE imagewatch_pending.new_digest <> EXCLUDED.new_digest",
                &[
                    &image.to_string(),
                    &old.as_str(),
                    &new.as_str(),
                    &self.inner.settings.replica,
                ],
            )
            .await?;
        Ok(())
    }

    async fn record_refreshed(&self, image: &ImageReference, new: &Digest) -> Result<(), StoreError> {
        // Two statements in this order: the second one's snapshot is taken after the seen row
        // is written, so it also clears a move a standby recorded while the first one waited for
        // that row. Dying between them leaves a move whose digest is seen: stale, never reported.
        let image = image.to_string();
        self.inner
            .query(
                "INSERT INTO imagewatch_seen (image, digest, updated_by) VALUES ($1, $2, $3) \
                 ON CONFLICT (image) DO UPDATE SET digest = EXCLUDED.digest, updated_at = now(), updated_by = EXCLUDED.updated_by",
                &[&image, &new.as_str(), &self.inner.settings.replica],
            )
            .await?;
        self.inner
            .query(
                "DELETE FROM imagewatch_pending WHERE image = $1 AND new_digest = $2",
                &[&image, &new.as_str()],
            )
            .await?;
        Ok(())
    }

    async fn leadership(&self) -> Leadership {
        if self.inner.leadership.borrow().may_refresh() {
            // No fencing token: prove the session that holds the lock is still alive.
            self.inner.elect().await;
        }
        self.inner.leadership.borrow().clone()
    }

    fn leadership_changes(&self) -> Option<watch::Receiver<Leadership>> {
        Some(self.inner.leadership.subscribe())
    }
}

/// A driver error in one line, with the server's message when there is one.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::url(
        "postgres://alice:s3cret@db.example:5433/watch",
        "postgres://alice@db.example:5433/watch"
    )]
    #[case::socket("postgresql://bob:s3cret@%2Frun%2Fpg:5432/x", "postgres://bob@/run/pg:5432/x")]
    #[case::garbage("postgres://a:s3cret@[::1", "postgres://(unparsable)")]
    fn the_password_never_reaches_the_location(#[case] url: &str, #[case] expected: &str) {
        let shown = redacted(url);
        assert_eq!(shown, expected);
        assert!(!shown.contains("s3cret"));
        let config = PostgresConfig::new(url, "r1");
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[rstest]
    #[case::loopback("postgres://u:p@127.0.0.1:5432/db", None)]
    #[case::localhost("postgres://u:p@localhost/db", None)]
    #[case::socket("postgres://u:p@%2Frun%2Fpostgresql/db", None)]
    #[case::remote_plain_by_choice("postgres://u:p@db.example/db?sslmode=disable", None)]
    #[case::remote("postgres://u:p@db.example/db", Some("not loopback"))]
    #[case::remote_prefer("postgres://u:p@10.0.0.5/db?sslmode=prefer", Some("not loopback"))]
    #[case::require("postgres://u:p@127.0.0.1/db?sslmode=require", Some("sslmode=require"))]
    fn a_password_crosses_a_network_in_clear_only_when_the_operator_says_so(
        #[case] url: &str,
        #[case] refusal: Option<&str>,
    ) {
        let config = tokio_postgres::Config::from_str(url).expect("parses");
        let got = plain_connection_refusal(&config);
        match refusal {
            None => assert_eq!(got, None),
            Some(expected) => assert!(got.as_deref().is_some_and(|r| r.contains(expected)), "{got:?}"),
        }
    }

    #[rstest]
    #[case("postgres://h/db", true)]
    #[case("postgresql://h/db", true)]
    #[case("/var/lib/imagewatch/state.json", false)]
    #[case("state.json", false)]
    fn a_state_value_is_a_database_or_a_file(#[case] value: &str, #[case] expected: bool) {
        assert_eq!(is_postgres_url(value), expected);
    }
}
