//! Sample source database for `ferryctl demo`.
//!
//! [`create_demo_source`] writes a brand-new SQLite file with four tables that
//! deliberately exercise the awkward corners of table migration: NULLs, empty
//! strings and blobs, unicode, quotes and control characters in text, signed
//! zero and extreme floating point magnitudes, dynamically typed (`NUMERIC`)
//! columns, sparse and skewed integer keys spanning the whole `i64` range, a
//! rowid table without a primary key (with duplicate rows and identifiers that
//! need quoting), and a composite-key `WITHOUT ROWID` table.
//!
//! The content is fully deterministic (fixed seed), so two demo sources built
//! with the same `rows` are identical row for row.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::{Context, Result, bail};
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, params};

/// Tables created by [`create_demo_source`], in creation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoTables {
    /// `(table name, number of rows)`.
    pub tables: Vec<(String, u64)>,
}

const ORDERS: &str = "orders";
const EVENTS: &str = "events";
const AUDIT_LOG: &str = "audit log";
const ORDER_ITEMS: &str = "order_items";

/// Fixed seed: the demo data must be reproducible.
const SEED: u64 = 0xFE44_D3E0_2026_0301;

/// Creates a new SQLite database at `path` and fills it with deterministic
/// sample data: `orders` gets exactly `rows` rows, the other tables a fixed
/// fraction of that (see the returned [`DemoTables`] for exact counts).
///
/// Fails if `path` already exists. If filling the file fails, the partially
/// written file is removed again.
pub fn create_demo_source(path: &Path, rows: u64) -> Result<DemoTables> {
    // `create_new` makes the existence check and the creation one atomic step;
    // SQLite treats the resulting zero-length file as an empty database.
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => bail!(
            "demo source {} already exists; choose another --dir or remove it",
            path.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("creating demo source {}", path.display()));
        }
    }
    match populate(path, rows) {
        Ok(tables) => Ok(tables),
        Err(e) => {
            // Best effort: do not leave a half-filled demo source behind.
            let _ = std::fs::remove_file(path);
            Err(e.context(format!("filling demo source {}", path.display())))
        }
    }
}

fn populate(path: &Path, rows: u64) -> Result<DemoTables> {
    let mut conn = Connection::open(path)?;
    // Throwaway file: durability does not matter, speed does.
    conn.execute_batch(
        "PRAGMA journal_mode = OFF;
         PRAGMA synchronous = OFF;
         PRAGMA locking_mode = EXCLUSIVE;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -65536;",
    )?;

    conn.execute_batch(&create_table_sql(
        ORDERS,
        &[
            ("id", "INTEGER PRIMARY KEY"),
            ("customer_id", "INTEGER NOT NULL"),
            ("status", "TEXT"),
            ("amount", "REAL"),
            ("note", "TEXT"),
            ("payload", "BLOB"),
            ("placed_at", "NUMERIC"),
        ],
        &[],
        "",
    ))?;
    conn.execute_batch(&create_table_sql(
        EVENTS,
        &[
            ("event_id", "INTEGER PRIMARY KEY"),
            ("kind", "TEXT NOT NULL"),
            ("weight", "REAL"),
            ("body", "TEXT"),
        ],
        &[],
        "",
    ))?;
    conn.execute_batch(&create_table_sql(
        AUDIT_LOG,
        &[
            ("when", "TEXT"),
            ("Actor", "TEXT"),
            ("quote\"d", "INTEGER"),
            ("detail", "BLOB"),
        ],
        &[],
        "",
    ))?;
    conn.execute_batch(&create_table_sql(
        ORDER_ITEMS,
        &[
            ("order_id", "INTEGER NOT NULL"),
            ("line", "TEXT NOT NULL"),
            ("qty", "INTEGER"),
            ("sku", "TEXT"),
        ],
        &["order_id", "line"],
        " WITHOUT ROWID",
    ))?;

    let orders = fill_orders(&mut conn, rows).context("filling orders")?;
    let events = fill_events(&mut conn, rows / 4).context("filling events")?;
    let audit = fill_audit_log(&mut conn, rows / 10).context("filling audit log")?;
    let items = fill_order_items(&mut conn, rows, rows / 2).context("filling order_items")?;

    conn.close().map_err(|(_, e)| e)?;
    Ok(DemoTables {
        tables: vec![
            (ORDERS.to_owned(), orders),
            (EVENTS.to_owned(), events),
            (AUDIT_LOG.to_owned(), audit),
            (ORDER_ITEMS.to_owned(), items),
        ],
    })
}

// ---------------------------------------------------------------------------
// SQL generation

/// Quotes an SQL identifier: wraps it in double quotes, doubling inner ones.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn create_table_sql(table: &str, cols: &[(&str, &str)], pk: &[&str], suffix: &str) -> String {
    let mut defs: Vec<String> = cols
        .iter()
        .map(|(name, ty)| format!("{} {ty}", quote_ident(name)))
        .collect();
    if !pk.is_empty() {
        let keys: Vec<String> = pk.iter().map(|k| quote_ident(k)).collect();
        defs.push(format!("PRIMARY KEY ({})", keys.join(", ")));
    }
    format!(
        "CREATE TABLE {} ({}){suffix};",
        quote_ident(table),
        defs.join(", ")
    )
}

fn insert_sql(table: &str, cols: &[&str]) -> String {
    let names: Vec<String> = cols.iter().map(|c| quote_ident(c)).collect();
    let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote_ident(table),
        names.join(", "),
        marks.join(", ")
    )
}

// ---------------------------------------------------------------------------
// Deterministic PRNG

/// splitmix64: tiny, fast, good enough for sample data.
struct Rng(u64);

impl Rng {
    fn new(stream: u64) -> Self {
        Rng(SEED ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (0 if `n == 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform-ish index into a slice of length `len`.
    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True with probability `pct` percent.
    fn percent(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fill_bytes(&mut self, buf: &mut [u8]) {
        for b in buf {
            // Roughly one byte in eight is a zero byte.
            let r = self.next_u64();
            *b = if r & 7 == 0 { 0 } else { (r >> 8) as u8 };
        }
    }
}

// ---------------------------------------------------------------------------
// Timestamps

/// 2024-01-01 00:00:00 UTC.
const TS_START: i64 = 1_704_067_200;
/// 2027-01-01 00:00:00 UTC.
const TS_END: i64 = 1_798_761_600;

fn random_unix(rng: &mut Rng) -> i64 {
    TS_START + rng.below((TS_END - TS_START) as u64) as i64
}

/// Appends `unix` as `YYYY-MM-DD HH:MM:SS` (or ISO-8601 `T`/`Z` form).
fn write_timestamp(out: &mut String, unix: i64, iso_t: bool) -> std::fmt::Result {
    let (y, mo, d) = ferry_model::temporal::civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if iso_t {
        write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        write!(out, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
    }
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).with_context(|| format!("{v} does not fit in a signed 64-bit key"))
}

// ---------------------------------------------------------------------------
// orders

const STATUSES: &[&str] = &[
    "pending",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "expédié",
    "已发货",
    "🚚 shipped",
];

const NOTES: &[&str] = &[
    "leave at the door",
    "customer's 2nd order",
    "he said \"fragile\"",
    "line one\nline two",
    "col1\tcol2\tcol3",
    "naïve café order",
    "配送前に電話してください",
    "gift 🎁 wrap",
    "back\\slash and 50% off",
    "comma, semicolon; colon:",
    "CRLF\r\nending",
    "  padded  ",
    "Ünïcödé ßtraße",
    "'single' and \"double\"",
];

/// Floating point values that tend to break naive conversions.
///
/// Note: SQLite stores integral values of `REAL` columns as integers on disk,
/// and reads them back as reals; `-0.0` goes through that path too and comes
/// back as `+0.0`, so the sign of zero does not survive in the demo source.
const SPECIAL_AMOUNTS: &[f64] = &[
    -0.0,
    1e300,
    -1e300,
    5e-324,
    -5e-324,
    f64::MAX,
    f64::MIN_POSITIVE,
    0.1 + 0.2,
    9_007_199_254_740_992.0, // 2^53
    123_456_789_012.345,
];

fn fill_orders(conn: &mut Connection, rows: u64) -> Result<u64> {
    let mut rng = Rng::new(1);
    // Each special amount appears a few times, spread over the table.
    let special_stride = (rows / (2 * SPECIAL_AMOUNTS.len() as u64)).clamp(1, 50_000);
    let customers = (rows / 8).max(1);
    let mut note = String::with_capacity(64);
    let mut placed = String::with_capacity(32);
    let mut payload = [0u8; 64];
    let mut count = 0;

    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(&insert_sql(
            ORDERS,
            &[
                "id",
                "customer_id",
                "status",
                "amount",
                "note",
                "payload",
                "placed_at",
            ],
        ))?;
        for id in 1..=rows {
            let customer_id = to_i64(1 + rng.below(customers))?;

            let status = if rng.percent(5) {
                None
            } else {
                Some(STATUSES[rng.index(STATUSES.len())])
            };

            let amount = if id % special_stride == 0 {
                let k = (id / special_stride) as usize % SPECIAL_AMOUNTS.len();
                SPECIAL_AMOUNTS[k]
            } else {
                // Cents in [-2000.00, 18000.00): about 10 % refunds.
                (rng.below(2_000_000) as f64 - 200_000.0) / 100.0
            };

            let note_val = match rng.below(100) {
                0..30 => None,
                30..35 => Some(""),
                _ => {
                    note.clear();
                    note.push_str(NOTES[rng.index(NOTES.len())]);
                    if rng.percent(50) {
                        write!(note, " #{}", rng.below(10_000))?;
                    }
                    Some(note.as_str())
                }
            };

            let payload_val = if rng.percent(20) {
                None
            } else {
                // 0..=64 bytes: zero length happens now and then.
                let len = rng.index(payload.len() + 1);
                rng.fill_bytes(&mut payload[..len]);
                Some(&payload[..len])
            };

            // NUMERIC affinity column holding TEXT, INTEGER and REAL values.
            let unix = random_unix(&mut rng);
            let placed_at = match rng.below(100) {
                0..40 => {
                    placed.clear();
                    write_timestamp(&mut placed, unix, false)?;
                    ToSqlOutput::Borrowed(ValueRef::Text(placed.as_bytes()))
                }
                40..45 => {
                    placed.clear();
                    write_timestamp(&mut placed, unix, true)?;
                    ToSqlOutput::Borrowed(ValueRef::Text(placed.as_bytes()))
                }
                45..75 => ToSqlOutput::Owned(Value::Integer(unix)),
                _ => {
                    // Julian day number with a fractional time of day.
                    let jd = unix as f64 / 86_400.0 + 2_440_587.5;
                    ToSqlOutput::Owned(Value::Real(jd))
                }
            };

            count += stmt.execute(params![
                to_i64(id)?,
                customer_id,
                status,
                amount,
                note_val,
                payload_val,
                placed_at
            ])? as u64;
        }
    }
    tx.commit()?;
    Ok(count)
}

// ---------------------------------------------------------------------------
// events

const KINDS: &[&str] = &[
    "click",
    "view",
    "view",
    "view",
    "purchase",
    "signup",
    "error",
    "ログイン",
];

/// Start of the dense key band of `events`.
const EVENT_BAND_START: i64 = 1_000_000;

fn fill_events(conn: &mut Connection, target: u64) -> Result<u64> {
    let mut rng = Rng::new(2);
    // 10 % of keys are sparse; the two extremes are always present.
    let sparse_n = (target / 10).max(2);
    let dense_n = target.saturating_sub(sparse_n);

    let mut keys: Vec<i64> = Vec::with_capacity((dense_n + sparse_n) as usize);
    let mut next = EVENT_BAND_START;
    for _ in 0..dense_n {
        keys.push(next);
        // Mostly consecutive, with the occasional small gap.
        next += if rng.percent(10) {
            2 + rng.below(5) as i64
        } else {
            1
        };
    }
    let band = EVENT_BAND_START..next;

    let mut sparse: HashSet<i64> = HashSet::with_capacity(sparse_n as usize);
    sparse.insert(i64::MIN + 1);
    sparse.insert(i64::MAX);
    while (sparse.len() as u64) < sparse_n {
        let k = rng.next_u64() as i64;
        // Skew a part of the sparse keys towards small magnitudes as well.
        let k = if rng.percent(30) { k >> 40 } else { k };
        if k != i64::MIN && !band.contains(&k) {
            sparse.insert(k);
        }
    }
    keys.extend(sparse);
    // Ascending insertion is the fast path for the rowid b-tree.
    keys.sort_unstable();

    let mut body = String::with_capacity(128);
    let mut count = 0;
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(&insert_sql(EVENTS, &["event_id", "kind", "weight", "body"]))?;
        for (seq, key) in keys.into_iter().enumerate() {
            let kind = KINDS[rng.index(KINDS.len())];
            let weight = if rng.percent(10) {
                None
            } else {
                // Skewed towards small values.
                let u = rng.unit();
                Some(u * u * 1000.0)
            };
            let body_val = if rng.percent(15) {
                None
            } else {
                body.clear();
                write!(
                    body,
                    "{{\"seq\":{seq},\"kind\":\"{kind}\",\"ok\":{}}}",
                    rng.percent(90)
                )?;
                if rng.below(200) == 0 {
                    // An occasional large value.
                    for _ in 0..64 {
                        body.push_str(" lorem ipsum dolor sit amet");
                    }
                }
                Some(body.as_str())
            };
            count += stmt.execute(params![key, kind, weight, body_val])? as u64;
        }
    }
    tx.commit()?;
    Ok(count)
}

// ---------------------------------------------------------------------------
// audit log

const ACTORS: &[&str] = &[
    "admin",
    "Admin",
    "ADMIN",
    "alice",
    "Bob",
    "zoë",
    "системa",
    "O'Brien",
    "svc \"bot\"",
];

fn fill_audit_log(conn: &mut Connection, target: u64) -> Result<u64> {
    let mut rng = Rng::new(3);
    let mut when = String::with_capacity(32);
    let mut when_null = false;
    let mut actor: Option<&str> = None;
    let mut quoted: Option<i64> = None;
    let mut detail = [0u8; 24];
    let mut detail_len: Option<usize> = None;
    let mut count = 0;

    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(&insert_sql(
            AUDIT_LOG,
            &["when", "Actor", "quote\"d", "detail"],
        ))?;
        for i in 0..target {
            // Rows 1, 21, 41, ... repeat the previous row exactly, and so do
            // rows 2, 102, 202, ... (giving runs of three identical rows).
            let duplicate = i > 0 && (i % 20 == 1 || i % 100 == 2);
            if !duplicate {
                when_null = rng.percent(3);
                if !when_null {
                    when.clear();
                    write_timestamp(&mut when, random_unix(&mut rng), false)?;
                }
                actor = if rng.percent(5) {
                    None
                } else {
                    Some(ACTORS[rng.index(ACTORS.len())])
                };
                quoted = if rng.percent(10) {
                    None
                } else {
                    Some(rng.below(1000) as i64 - 100)
                };
                detail_len = if rng.percent(25) {
                    None
                } else {
                    let len = rng.index(detail.len() + 1);
                    rng.fill_bytes(&mut detail[..len]);
                    Some(len)
                };
            }
            let when_val = (!when_null).then_some(when.as_str());
            let detail_val = detail_len.map(|len| &detail[..len]);
            count += stmt.execute(params![when_val, actor, quoted, detail_val])? as u64;
        }
    }
    tx.commit()?;
    Ok(count)
}

// ---------------------------------------------------------------------------
// order_items

/// Line labels: text keys whose byte order differs from "natural" order.
const LINES: &[&str] = &[
    "1", "10", "2", "A", "a", "Ä", "b-1", "line 3", "x\"y", "é", "🧾",
];

fn fill_order_items(conn: &mut Connection, orders: u64, target: u64) -> Result<u64> {
    let mut rng = Rng::new(4);
    let mut sku = String::with_capacity(16);
    let mut count = 0;
    // Orders with items are spread over roughly the whole `orders` id range:
    // 2 lines per order on average, order ids advance by (max_step + 1) / 2
    // on average. The last few items may reference ids just past the end
    // (there is no foreign key).
    let max_step = (orders.max(1).saturating_mul(4) / target.max(1))
        .saturating_sub(1)
        .clamp(1, 1000);
    let mut order_id: u64 = 0;

    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(&insert_sql(
            ORDER_ITEMS,
            &["order_id", "line", "qty", "sku"],
        ))?;
        while count < target {
            order_id += 1 + rng.below(max_step);
            let lines = (1 + rng.below(3)).min(target - count);
            let first = rng.index(LINES.len());
            for j in 0..lines as usize {
                // Consecutive labels (mod len) are distinct within one order.
                let line = LINES[(first + j) % LINES.len()];
                let qty = match rng.below(100) {
                    0..3 => None,
                    3..6 => Some(-(1 + rng.below(3) as i64)),
                    _ => Some(1 + rng.below(10) as i64),
                };
                let sku_val = if rng.percent(2) {
                    None
                } else {
                    sku.clear();
                    write!(sku, "SKU-{:05}", rng.below(50_000))?;
                    Some(sku.as_str())
                };
                count += stmt.execute(params![to_i64(order_id)?, line, qty, sku_val])? as u64;
            }
        }
    }
    tx.commit()?;
    Ok(count)
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &Connection, table: &str) -> Result<u64> {
        let n: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM {}", quote_ident(table)),
            [],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n)?)
    }

    fn scalar(conn: &Connection, sql: &str) -> Result<i64> {
        Ok(conn.query_row(sql, [], |r| r.get(0))?)
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("audit log"), "\"audit log\"");
        assert_eq!(quote_ident("quote\"d"), "\"quote\"\"d\"");
        assert_eq!(
            insert_sql("a\"b", &["when", "x"]),
            "INSERT INTO \"a\"\"b\" (\"when\", \"x\") VALUES (?1, ?2)"
        );
    }

    #[test]
    fn timestamps() -> Result<()> {
        let mut s = String::new();
        write_timestamp(&mut s, TS_START, false)?;
        assert_eq!(s, "2024-01-01 00:00:00");
        s.clear();
        write_timestamp(&mut s, 1_772_368_496, true)?;
        assert_eq!(s, "2026-03-01T12:34:56Z");
        s.clear();
        write_timestamp(&mut s, 1_709_208_000, false)?; // leap day
        assert_eq!(s, "2024-02-29 12:00:00");
        Ok(())
    }

    #[test]
    fn creates_all_tables_with_expected_content() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("demo.sqlite");
        let tables = create_demo_source(&path, 1000)?;
        assert_eq!(
            tables.tables,
            vec![
                ("orders".to_owned(), 1000),
                ("events".to_owned(), 250),
                ("audit log".to_owned(), 100),
                ("order_items".to_owned(), 500),
            ]
        );

        let conn = Connection::open(&path)?;
        for (name, rows) in &tables.tables {
            assert_eq!(count(&conn, name)?, *rows, "{name}");
        }

        // orders: dense ids, NULLs, empty strings, blobs of all kinds.
        assert_eq!(scalar(&conn, "SELECT MIN(id) FROM orders")?, 1);
        assert_eq!(scalar(&conn, "SELECT MAX(id) FROM orders")?, 1000);
        let nulls = |col: &str| {
            scalar(
                &conn,
                &format!(
                    "SELECT COUNT(*) FROM orders WHERE {} IS NULL",
                    quote_ident(col)
                ),
            )
        };
        assert!(nulls("status")? > 10);
        assert!(nulls("note")? > 200);
        assert!(nulls("payload")? > 100);
        assert_eq!(nulls("id")?, 0);
        assert!(scalar(&conn, "SELECT COUNT(*) FROM orders WHERE note = ''")? > 10);
        assert!(
            scalar(
                &conn,
                "SELECT COUNT(*) FROM orders WHERE typeof(payload) = 'blob' AND length(payload) = 0"
            )? > 0
        );
        assert!(
            scalar(
                &conn,
                "SELECT COUNT(*) FROM orders WHERE instr(payload, X'00') > 0"
            )? > 10
        );
        assert!(
            scalar(
                &conn,
                "SELECT COUNT(*) FROM orders WHERE instr(note, char(10)) > 0"
            )? > 0
        );
        assert!(
            scalar(
                &conn,
                "SELECT COUNT(*) FROM orders WHERE status = '🚚 shipped'"
            )? > 0
        );
        assert!(scalar(&conn, "SELECT COUNT(*) FROM orders WHERE amount < 0")? > 10);
        assert!(scalar(&conn, "SELECT COUNT(*) FROM orders WHERE amount = 1e300")? > 0);
        assert!(scalar(&conn, "SELECT COUNT(*) FROM orders WHERE amount = 5e-324")? > 0);
        for ty in ["text", "integer", "real"] {
            let n = scalar(
                &conn,
                &format!("SELECT COUNT(*) FROM orders WHERE typeof(placed_at) = '{ty}'"),
            )?;
            assert!(n > 50, "placed_at {ty}: {n}");
        }

        // events: both extremes, a dense band and sparse keys.
        assert_eq!(scalar(&conn, "SELECT MAX(event_id) FROM events")?, i64::MAX);
        assert_eq!(
            scalar(&conn, "SELECT MIN(event_id) FROM events")?,
            i64::MIN + 1
        );
        let band = scalar(
            &conn,
            "SELECT COUNT(*) FROM events WHERE event_id BETWEEN 1000000 AND 2000000",
        )?;
        assert!(band >= 225, "band = {band}");

        // audit log: no primary key, and some fully duplicated rows.
        let pk_cols = scalar(
            &conn,
            "SELECT COUNT(*) FROM pragma_table_info('audit log') WHERE pk > 0",
        )?;
        assert_eq!(pk_cols, 0);
        let distinct = scalar(
            &conn,
            "SELECT COUNT(*) FROM (SELECT DISTINCT \"when\", \"Actor\", \"quote\"\"d\", detail \
             FROM \"audit log\")",
        )?;
        assert!(distinct < 100 && distinct > 80, "distinct = {distinct}");

        // order_items: composite key, WITHOUT ROWID.
        let pk_cols = scalar(
            &conn,
            "SELECT COUNT(*) FROM pragma_table_info('order_items') WHERE pk > 0",
        )?;
        assert_eq!(pk_cols, 2);
        let without_rowid = scalar(
            &conn,
            "SELECT wr FROM pragma_table_list WHERE name = 'order_items'",
        )?;
        assert_eq!(without_rowid, 1);
        Ok(())
    }

    #[test]
    fn deterministic() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let a = dir.path().join("a.sqlite");
        let b = dir.path().join("b.sqlite");
        create_demo_source(&a, 500)?;
        create_demo_source(&b, 500)?;
        assert_eq!(std::fs::read(&a)?, std::fs::read(&b)?);
        Ok(())
    }

    #[test]
    fn tiny_and_empty() -> Result<()> {
        let dir = tempfile::tempdir()?;
        for rows in [0, 1, 3] {
            let path = dir.path().join(format!("t{rows}.sqlite"));
            let tables = create_demo_source(&path, rows)?;
            assert_eq!(tables.tables[0].1, rows);
            // The extreme event keys are always there.
            assert_eq!(tables.tables[1].1, 2);
        }
        Ok(())
    }

    #[test]
    fn refuses_existing_file() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("demo.sqlite");
        create_demo_source(&path, 10)?;
        let err = match create_demo_source(&path, 10) {
            Ok(_) => bail!("second call should fail"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("already exists"), "{err}");
        assert!(err.contains("choose another --dir"), "{err}");
        // The existing file was left alone.
        assert_eq!(count(&Connection::open(&path)?, "orders")?, 10);
        Ok(())
    }
}
