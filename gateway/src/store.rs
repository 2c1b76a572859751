//! The database: API keys and the usage ledger, in SQLite (default) or PostgreSQL (so that
//! several gateway replicas share one ledger). Versioned migrations; free of HTTP.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context, anyhow};
use serde::Serialize;

/// Versioned migrations, applied in order, each once. The SQL is common to both databases.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            key_hash TEXT NOT NULL UNIQUE,
            rpm BIGINT,
            tpm BIGINT,
            max_streams BIGINT,
            created_at_ms BIGINT NOT NULL,
            revoked_at_ms BIGINT
        );
        CREATE TABLE usage_receipts (
            request_digest TEXT PRIMARY KEY,
            key_name TEXT NOT NULL,
            model TEXT NOT NULL,
            backend TEXT NOT NULL,
            key_id TEXT NOT NULL,
            prompt_tokens BIGINT NOT NULL,
            completion_tokens BIGINT NOT NULL,
            status BIGINT NOT NULL,
            started_at_ms BIGINT NOT NULL,
            finished_at_ms BIGINT NOT NULL,
            recorded_at_ms BIGINT NOT NULL
        );
        CREATE INDEX usage_receipts_key_time ON usage_receipts (key_name, started_at_ms);",
)];

/// An API key's record (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    /// Unique name.
    pub name: String,
    /// SHA-256 of the key, hex.
    #[serde(skip)]
    pub key_hash: String,
    /// Requests per minute; `None` is unlimited.
    pub rpm: Option<u32>,
    /// Tokens per minute; `None` is unlimited.
    pub tpm: Option<u32>,
    /// Concurrent requests in flight; `None` uses the gateway's default.
    pub max_streams: Option<u32>,
    /// Creation time, Unix ms.
    pub created_at_ms: i64,
    /// Revocation time, Unix ms.
    pub revoked_at_ms: Option<i64>,
}

/// One verified receipt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    /// SHA-256 of the encapsulated request (hex); the idempotency key.
    pub request_digest: String,
    /// The API key's name.
    pub key_name: String,
    /// Model.
    pub model: String,
    /// Backend URL.
    pub backend: String,
    /// Key configuration id.
    pub key_id: String,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Inner status.
    pub status: i64,
    /// Start, Unix ms (enclave clock).
    pub started_at_ms: i64,
    /// End, Unix ms (enclave clock).
    pub finished_at_ms: i64,
}

/// Where keys and usage live.
#[derive(Clone)]
pub enum Store {
    /// A SQLite file.
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    /// A PostgreSQL server.
    Postgres(Arc<Pg>),
}

/// A PostgreSQL connection that is made again when the server closed it (a restart, a
/// failover, an idle timeout), instead of failing every request from then on.
pub struct Pg {
    url: String,
    client: tokio::sync::Mutex<Arc<PgConn>>,
}

/// One PostgreSQL connection and the statements prepared on it (the per-request ones:
/// prepared once, then one round trip each instead of two).
pub struct PgConn {
    client: tokio_postgres::Client,
    statements: Mutex<std::collections::HashMap<&'static str, tokio_postgres::Statement>>,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgConn")
    }
}

impl std::ops::Deref for PgConn {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl PgConn {
    /// `sql` prepared on this connection, once.
    async fn prepared(
        &self,
        sql: &'static str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        let cached = self
            .statements
            .lock()
            .ok()
            .and_then(|m| m.get(sql).cloned());
        if let Some(st) = cached {
            return Ok(st);
        }
        let st = self.client.prepare(sql).await?;
        if let Ok(mut m) = self.statements.lock() {
            m.insert(sql, st.clone());
        }
        Ok(st)
    }
}

impl Pg {
    async fn connect(url: &str) -> anyhow::Result<Arc<PgConn>> {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .context("connecting to PostgreSQL")?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(Arc::new(PgConn {
            client,
            statements: Mutex::new(std::collections::HashMap::new()),
        }))
    }

    /// The live connection, made again if it was closed.
    async fn client(&self) -> anyhow::Result<Arc<PgConn>> {
        let mut c = self.client.lock().await;
        if c.is_closed() {
            *c = Self::connect(&self.url).await?;
            tracing::warn!("reconnected to PostgreSQL");
        }
        Ok(Arc::clone(&c))
    }

    /// Runs an idempotent operation, once more on a fresh connection if the first attempt
    /// found the connection closed.
    async fn retry<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        F: Fn(Arc<PgConn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let c = self.client().await?;
        match f(Arc::clone(&c)).await {
            Err(e) if e.is_closed() || c.is_closed() => Ok(f(self.client().await?).await?),
            other => Ok(other?),
        }
    }
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.write_str("Pg")
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(_) => f.write_str("Store::Sqlite"),
            Self::Postgres(_) => f.write_str("Store::Postgres"),
        }
    }
}

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
    )
    .unwrap_or(i64::MAX)
}

fn opt_u32(v: Option<i64>) -> Option<u32> {
    v.and_then(|v| u32::try_from(v).ok())
}

/// Parses a database URL: `postgres://…`/`postgresql://…`, `sqlite:PATH`, `sqlite://PATH`
/// or a plain file path.
enum Url {
    Sqlite(PathBuf),
    Postgres(String),
}

fn parse_url(url: &str) -> Url {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Url::Postgres(url.to_owned())
    } else if let Some(p) = url.strip_prefix("sqlite://") {
        Url::Sqlite(PathBuf::from(p))
    } else if let Some(p) = url.strip_prefix("sqlite:") {
        Url::Sqlite(PathBuf::from(p))
    } else {
        Url::Sqlite(PathBuf::from(url))
    }
}

fn key_from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        name: r.get(0)?,
        key_hash: r.get(1)?,
        rpm: opt_u32(r.get(2)?),
        tpm: opt_u32(r.get(3)?),
        max_streams: opt_u32(r.get(4)?),
        created_at_ms: r.get(5)?,
        revoked_at_ms: r.get(6)?,
    })
}

fn key_from_pg(r: &tokio_postgres::Row) -> Result<KeyRecord, tokio_postgres::Error> {
    Ok(KeyRecord {
        name: r.try_get(0)?,
        key_hash: r.try_get(1)?,
        rpm: opt_u32(r.try_get(2)?),
        tpm: opt_u32(r.try_get(3)?),
        max_streams: opt_u32(r.try_get(4)?),
        created_at_ms: r.try_get(5)?,
        revoked_at_ms: r.try_get(6)?,
    })
}

/// The ledger insert, common to both databases.
const INSERT_RECEIPT: &str = "INSERT INTO usage_receipts (request_digest, key_name, model, \
     backend, key_id, prompt_tokens, completion_tokens, status, started_at_ms, finished_at_ms, \
     recorded_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (request_digest) DO NOTHING";

/// One ledger row through the connection's cached statement; the rows inserted (0 or 1).
fn sqlite_insert(c: &rusqlite::Connection, r: &UsageRow, now: i64) -> rusqlite::Result<usize> {
    c.prepare_cached(INSERT_RECEIPT)?.execute(rusqlite::params![
        r.request_digest,
        r.key_name,
        r.model,
        r.backend,
        r.key_id,
        r.prompt_tokens,
        r.completion_tokens,
        r.status,
        r.started_at_ms,
        r.finished_at_ms,
        now
    ])
}

/// One ledger row (a statement prepared once per connection); the rows inserted.
async fn pg_insert(c: Arc<PgConn>, r: &UsageRow, now: i64) -> Result<u64, tokio_postgres::Error> {
    let st = c.prepared(INSERT_RECEIPT).await?;
    c.execute(
        &st,
        &[
            &r.request_digest,
            &r.key_name,
            &r.model,
            &r.backend,
            &r.key_id,
            &r.prompt_tokens,
            &r.completion_tokens,
            &r.status,
            &r.started_at_ms,
            &r.finished_at_ms,
            &now,
        ],
    )
    .await
}

const KEY_COLUMNS: &str = "name, key_hash, rpm, tpm, max_streams, created_at_ms, revoked_at_ms";

/// The per-request key lookup (its columns are [`KEY_COLUMNS`]).
const ACTIVE_KEY_BY_HASH: &str = "SELECT name, key_hash, rpm, tpm, max_streams, created_at_ms, \
     revoked_at_ms FROM api_keys WHERE key_hash = $1 AND revoked_at_ms IS NULL";

impl Store {
    /// Opens (creating a SQLite file on first use) and migrates.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        match parse_url(url) {
            Url::Sqlite(path) => {
                let conn = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                    let mut conn = rusqlite::Connection::open(&path)
                        .with_context(|| format!("opening SQLite database {}", path.display()))?;
                    conn.busy_timeout(std::time::Duration::from_secs(10))?;
                    conn.pragma_update(None, "journal_mode", "WAL")?;
                    conn.pragma_update(None, "synchronous", "NORMAL")?;
                    migrate_sqlite(&mut conn)?;
                    Ok(conn)
                })
                .await??;
                Ok(Self::Sqlite(Arc::new(Mutex::new(conn))))
            }
            Url::Postgres(url) => {
                let mut client = Pg::connect(&url).await?;
                migrate_pg(
                    &mut Arc::get_mut(&mut client)
                        .ok_or_else(|| anyhow!("the new PostgreSQL connection is shared"))?
                        .client,
                )
                .await?;
                Ok(Self::Postgres(Arc::new(Pg {
                    url,
                    client: tokio::sync::Mutex::new(client),
                })))
            }
        }
    }

    async fn sqlite<T: Send + 'static>(
        conn: &Arc<Mutex<rusqlite::Connection>>,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let conn = Arc::clone(conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| anyhow!("the SQLite connection lock is poisoned"))?;
            f(&mut guard).map_err(anyhow::Error::from)
        })
        .await?
    }

    /// Adds a key.
    pub async fn create_key(
        &self,
        name: &str,
        key_hash: &str,
        rpm: Option<u32>,
        tpm: Option<u32>,
        max_streams: Option<u32>,
    ) -> anyhow::Result<()> {
        let (name, hash) = (name.to_owned(), key_hash.to_owned());
        let (rpm, tpm, ms) = (
            rpm.map(i64::from),
            tpm.map(i64::from),
            max_streams.map(i64::from),
        );
        let now = now_ms();
        let sql = "INSERT INTO api_keys (name, key_hash, rpm, tpm, max_streams, created_at_ms) \
                   VALUES ($1, $2, $3, $4, $5, $6)";
        match self {
            Self::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    c.execute(sql, rusqlite::params![name, hash, rpm, tpm, ms, now])
                })
                .await
                .context("a key with that name may already exist")?;
            }
            Self::Postgres(p) => {
                p.client()
                    .await?
                    .execute(sql, &[&name, &hash, &rpm, &tpm, &ms, &now])
                    .await
                    .context("a key with that name may already exist")?;
            }
        }
        Ok(())
    }

    /// Finds an active (unrevoked) key by its hash.
    pub async fn active_key_by_hash(&self, key_hash: &str) -> anyhow::Result<Option<KeyRecord>> {
        let hash = key_hash.to_owned();
        let sql = ACTIVE_KEY_BY_HASH;
        let found = match self {
            Self::Sqlite(c) => {
                // On the hot path of every request: an indexed read of a cached page takes
                // microseconds, less than handing it to the blocking pool and back; do it
                // here when the connection is free, on the pool when a write holds it.
                if let Ok(conn) = c.try_lock() {
                    let mut st = conn.prepare_cached(sql)?;
                    let mut rows = st.query_map([&hash], key_from_sqlite)?;
                    rows.next().transpose()?
                } else {
                    Self::sqlite(c, move |c| {
                        let mut st = c.prepare_cached(sql)?;
                        let mut rows = st.query_map([hash], key_from_sqlite)?;
                        rows.next().transpose()
                    })
                    .await?
                }
            }
            Self::Postgres(p) => match p
                .retry(|c| {
                    let hash = &hash;
                    async move {
                        let st = c.prepared(sql).await?;
                        c.query_opt(&st, &[hash]).await
                    }
                })
                .await?
            {
                Some(r) => Some(key_from_pg(&r)?),
                None => None,
            },
        };
        // The lookup is by hash; confirm it in constant time all the same.
        Ok(found.filter(|k| crate::auth::hashes_equal(&k.key_hash, key_hash)))
    }

    /// Every key, revoked ones included.
    pub async fn list_keys(&self) -> anyhow::Result<Vec<KeyRecord>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY name");
        match self {
            Self::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    let mut st = c.prepare(&sql)?;
                    let rows = st.query_map([], key_from_sqlite)?;
                    rows.collect()
                })
                .await
            }
            Self::Postgres(p) => p
                .retry(|c| {
                    let sql = &sql;
                    async move { c.query(sql.as_str(), &[]).await }
                })
                .await?
                .iter()
                .map(|r| key_from_pg(r).map_err(anyhow::Error::from))
                .collect(),
        }
    }

    /// Revokes a key; returns whether an active key of that name existed.
    pub async fn revoke_key(&self, name: &str) -> anyhow::Result<bool> {
        let name = name.to_owned();
        let now = now_ms();
        let sql =
            "UPDATE api_keys SET revoked_at_ms = $1 WHERE name = $2 AND revoked_at_ms IS NULL";
        let n = match self {
            Self::Sqlite(c) => {
                Self::sqlite(c, move |c| c.execute(sql, rusqlite::params![now, name]))
                    .await
                    .map(|n| n as u64)?
            }
            Self::Postgres(p) => p.client().await?.execute(sql, &[&now, &name]).await?,
        };
        Ok(n > 0)
    }

    /// Changes a key's limits; returns whether the key exists.
    pub async fn set_limits(
        &self,
        name: &str,
        rpm: Option<u32>,
        tpm: Option<u32>,
        max_streams: Option<u32>,
    ) -> anyhow::Result<bool> {
        let name = name.to_owned();
        let (rpm, tpm, ms) = (
            rpm.map(i64::from),
            tpm.map(i64::from),
            max_streams.map(i64::from),
        );
        let sql = "UPDATE api_keys SET rpm = $1, tpm = $2, max_streams = $3 WHERE name = $4";
        let n = match self {
            Self::Sqlite(c) => Self::sqlite(c, move |c| {
                c.execute(sql, rusqlite::params![rpm, tpm, ms, name])
            })
            .await
            .map(|n| n as u64)?,
            Self::Postgres(p) => {
                p.client()
                    .await?
                    .execute(sql, &[&rpm, &tpm, &ms, &name])
                    .await?
            }
        };
        Ok(n > 0)
    }

    /// Records a verified receipt. Idempotent on the request digest: returns `false` when
    /// it was already recorded.
    pub async fn record(&self, row: &UsageRow) -> anyhow::Result<bool> {
        let r = row.clone();
        let now = now_ms();
        let n = match self {
            // Once per answered request: the statement is parsed once per connection.
            Self::Sqlite(c) => Self::sqlite(c, move |c| sqlite_insert(c, &r, now))
                .await
                .map(|n| n as u64)?,
            Self::Postgres(p) => p.retry(|c| pg_insert(c, &r, now)).await?,
        };
        Ok(n > 0)
    }

    /// Records verified receipts, each as [`Store::record`] would (idempotent on the request
    /// digest; `Ok(false)` for one already recorded): with SQLite, all in one transaction
    /// (one commit, so all or none are durable); with PostgreSQL, one after the other
    /// through one prepared statement.
    pub async fn record_many(&self, rows: Vec<UsageRow>) -> Vec<anyhow::Result<bool>> {
        let now = now_ms();
        let n = rows.len();
        match self {
            Self::Sqlite(c) => {
                let written = Self::sqlite(c, move |c| {
                    let tx = c.transaction()?;
                    let mut out = Vec::with_capacity(rows.len());
                    for r in &rows {
                        out.push(sqlite_insert(&tx, r, now)? > 0);
                    }
                    tx.commit()?;
                    Ok(out)
                })
                .await;
                match written {
                    Ok(v) => v.into_iter().map(Ok).collect(),
                    Err(e) => {
                        let e = format!("{e:#}");
                        (0..n).map(|_| Err(anyhow!("{e}"))).collect()
                    }
                }
            }
            Self::Postgres(p) => {
                let mut out = Vec::with_capacity(n);
                for r in &rows {
                    out.push(p.retry(|c| pg_insert(c, r, now)).await.map(|n| n > 0));
                }
                out
            }
        }
    }

    /// Every recorded receipt, oldest first.
    pub async fn usage_rows(&self) -> anyhow::Result<Vec<UsageRow>> {
        let sql = "SELECT request_digest, key_name, model, backend, key_id, prompt_tokens, \
                   completion_tokens, status, started_at_ms, finished_at_ms \
                   FROM usage_receipts ORDER BY started_at_ms, request_digest";
        match self {
            Self::Sqlite(c) => {
                Self::sqlite(c, move |c| {
                    let mut st = c.prepare(sql)?;
                    let rows = st.query_map([], |r| {
                        Ok(UsageRow {
                            request_digest: r.get(0)?,
                            key_name: r.get(1)?,
                            model: r.get(2)?,
                            backend: r.get(3)?,
                            key_id: r.get(4)?,
                            prompt_tokens: r.get(5)?,
                            completion_tokens: r.get(6)?,
                            status: r.get(7)?,
                            started_at_ms: r.get(8)?,
                            finished_at_ms: r.get(9)?,
                        })
                    })?;
                    rows.collect()
                })
                .await
            }
            Self::Postgres(p) => {
                let rows = p.retry(|c| async move { c.query(sql, &[]).await }).await?;
                rows.iter()
                    .map(|r| {
                        Ok(UsageRow {
                            request_digest: r.try_get(0)?,
                            key_name: r.try_get(1)?,
                            model: r.try_get(2)?,
                            backend: r.try_get(3)?,
                            key_id: r.try_get(4)?,
                            prompt_tokens: r.try_get(5)?,
                            completion_tokens: r.try_get(6)?,
                            status: r.try_get(7)?,
                            started_at_ms: r.try_get(8)?,
                            finished_at_ms: r.try_get(9)?,
                        })
                    })
                    .collect()
            }
        }
    }
}

fn migrate_sqlite(conn: &mut rusqlite::Connection) -> anyhow::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS veil_schema_migrations (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
    )?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM veil_schema_migrations",
        [],
        |r| r.get(0),
    )?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(sql)
            .with_context(|| format!("migration {version}"))?;
        tx.execute(
            "INSERT INTO veil_schema_migrations (version, applied_at_ms) VALUES ($1, $2)",
            rusqlite::params![version, now_ms()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

async fn migrate_pg(client: &mut tokio_postgres::Client) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    // Serializes concurrent replicas migrating the same database.
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7715301);
         CREATE TABLE IF NOT EXISTS veil_schema_migrations (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
    )
    .await?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM veil_schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("migration {version}"))?;
        tx.execute(
            "INSERT INTO veil_schema_migrations (version, applied_at_ms) VALUES ($1, $2)",
            &[version, &now_ms()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Usage aggregated over a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageTotal {
    /// The period's start, e.g. `2026-11-23` (day), `2026-11-23T10` (hour), `2026-11` (month).
    pub period: String,
    /// API key name.
    pub key_name: String,
    /// Model.
    pub model: String,
    /// Number of receipts.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
}

/// The aggregation period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// Per UTC hour.
    Hour,
    /// Per UTC day.
    Day,
    /// Per UTC month.
    Month,
}

/// Aggregates rows by period, key and model.
#[must_use]
pub fn aggregate(rows: &[UsageRow], period: Period) -> Vec<UsageTotal> {
    let mut map: std::collections::BTreeMap<(String, String, String), UsageTotal> =
        std::collections::BTreeMap::new();
    for r in rows {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(r.started_at_ms).saturating_mul(1_000_000),
        )
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let p = match period {
            Period::Hour => format!(
                "{:04}-{:02}-{:02}T{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour()
            ),
            Period::Day => format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
            Period::Month => format!("{:04}-{:02}", t.year(), u8::from(t.month())),
        };
        let e = map
            .entry((p.clone(), r.key_name.clone(), r.model.clone()))
            .or_insert_with(|| UsageTotal {
                period: p,
                key_name: r.key_name.clone(),
                model: r.model.clone(),
                requests: 0,
                prompt_tokens: 0,
                completion_tokens: 0,
            });
        e.requests = e.requests.saturating_add(1);
        e.prompt_tokens = e.prompt_tokens.saturating_add(r.prompt_tokens);
        e.completion_tokens = e.completion_tokens.saturating_add(r.completion_tokens);
    }
    map.into_values().collect()
}
