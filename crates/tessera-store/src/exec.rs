//! One way to run a statement on either executor: sqlx's connection (PostgreSQL, and SQLite's
//! ordinary writers) or the SQLite writer thread's own rusqlite connection. The steps of a
//! [`FactorChange`](crate::FactorChange) — and the helpers they share with other transactions
//! (`audit::insert`, `trust::void`, `recovery::replace`, `sessions::revoke_others`, …) — are
//! written once against [`Exec`], so the same code runs in a sqlx transaction or, on SQLite,
//! inside one job of the writer thread, without a round trip per statement.
//!
//! Statements use `$1`, `$2`… placeholders on both (rusqlite binds them by name).

use crate::StoreError;
use std::future::Future;
use std::pin::Pin;

/// A statement's argument. A NULL keeps its type: PostgreSQL takes a parameter's type from the
/// bind, and a text column compared with an integer NULL is an error.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    NullInt,
    NullText,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Self::Text(v.clone())
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Self::Blob(v.to_vec())
    }
}
impl From<&Vec<u8>> for Arg {
    fn from(v: &Vec<u8>) -> Self {
        Self::Blob(v.clone())
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Self::NullInt, Self::Int)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        v.map_or(Self::NullText, Into::into)
    }
}
impl From<Option<&String>> for Arg {
    fn from(v: Option<&String>) -> Self {
        v.map_or(Self::NullText, Into::into)
    }
}

/// `args![a, b, …]`: a statement's arguments, in `$1`, `$2`… order.
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$($crate::exec::Arg::from($a)),*] };
}
pub(crate) use args;

/// A boxed future of a step.
pub(crate) type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Runs statements: sqlx's `AnyConnection` (a real await) or [`Lite`] (ready at once).
pub(crate) trait Exec: Send {
    /// Run a statement; the rows it changed.
    fn execute<'a>(&'a mut self, sql: &'a str, args: Vec<Arg>) -> Fut<'a, u64>;
    /// Run a query whose first row's first column is an integer (`None`: no row).
    fn scalar<'a>(&'a mut self, sql: &'a str, args: Vec<Arg>) -> Fut<'a, Option<i64>>;
}

fn bind_sqlx<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for a in args {
        q = match a {
            Arg::NullInt => q.bind(None::<i64>),
            Arg::NullText => q.bind(None::<String>),
            Arg::Int(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::Blob(v) => q.bind(v),
        };
    }
    q
}

impl Exec for sqlx::AnyConnection {
    fn execute<'a>(&'a mut self, sql: &'a str, args: Vec<Arg>) -> Fut<'a, u64> {
        Box::pin(async move {
            let q = bind_sqlx(sqlx::query(sqlx::AssertSqlSafe(sql)), args);
            Ok(q.execute(&mut *self).await?.rows_affected())
        })
    }

    fn scalar<'a>(&'a mut self, sql: &'a str, args: Vec<Arg>) -> Fut<'a, Option<i64>> {
        Box::pin(async move {
            use sqlx::Row;
            let q = bind_sqlx(sqlx::query(sqlx::AssertSqlSafe(sql)), args);
            match q.fetch_optional(&mut *self).await? {
                Some(row) => Ok(Some(row.try_get::<i64, _>(0)?)),
                None => Ok(None),
            }
        })
    }
}

/// The SQLite writer thread's connection, inside its batch's transaction: every step is done
/// when its future is first polled.
pub(crate) struct Lite<'c>(pub(crate) &'c mut rusqlite::Connection);

impl Lite<'_> {
    fn bind(stmt: &mut rusqlite::CachedStatement<'_>, args: Vec<Arg>) -> rusqlite::Result<()> {
        use rusqlite::types::Value;
        // Every parameter of the statement is one of ours (`$1`…`$n`), never left unbound
        // (SQLite would read it as NULL).
        let (given, wanted) = (args.len(), stmt.parameter_count());
        let named = (1..=wanted).all(|i| {
            stmt.parameter_name(i).and_then(|n| n.strip_prefix('$')?.parse::<usize>().ok()).is_some_and(|n| n <= given)
        });
        if !named {
            return Err(rusqlite::Error::InvalidParameterCount(given, wanted));
        }
        for (i, a) in args.into_iter().enumerate() {
            // Bind by name (`$1`…); a statement need not use every argument.
            let Some(at) = stmt.parameter_index(&format!("${}", i + 1))? else {
                continue;
            };
            let v = match a {
                Arg::NullInt | Arg::NullText => Value::Null,
                Arg::Int(v) => Value::Integer(v),
                Arg::Text(v) => Value::Text(v),
                Arg::Blob(v) => Value::Blob(v),
            };
            stmt.raw_bind_parameter(at, v)?;
        }
        Ok(())
    }

    fn run_execute(&mut self, sql: &str, args: Vec<Arg>) -> rusqlite::Result<u64> {
        let mut stmt = self.0.prepare_cached(sql)?;
        Self::bind(&mut stmt, args)?;
        Ok(u64::try_from(stmt.raw_execute()?).unwrap_or(0))
    }

    fn run_scalar(&mut self, sql: &str, args: Vec<Arg>) -> rusqlite::Result<Option<i64>> {
        let mut stmt = self.0.prepare_cached(sql)?;
        Self::bind(&mut stmt, args)?;
        let mut rows = stmt.raw_query();
        match rows.next()? {
            Some(r) => Ok(Some(r.get(0)?)),
            None => Ok(None),
        }
    }
}

fn lite_error(e: rusqlite::Error) -> StoreError {
    StoreError::Batch(e.to_string())
}

impl Exec for Lite<'_> {
    fn execute<'a>(&'a mut self, sql: &'a str, args: Vec<Arg>) -> Fut<'a, u64> {
        let r = self.run_execute(sql, args).map_err(lite_error);
        Box::pin(std::future::ready(r))
    }

    fn scalar<'a>(&'a mut self, sql: &'a str, args: Vec<Arg>) -> Fut<'a, Option<i64>> {
        let r = self.run_scalar(sql, args).map_err(lite_error);
        Box::pin(std::future::ready(r))
    }
}

impl<C> Exec for crate::Turned<C>
where
    C: std::ops::DerefMut<Target = sqlx::AnyConnection> + Send,
{
    fn execute<'a>(&'a mut self, sql: &'a str, args: Vec<Arg>) -> Fut<'a, u64> {
        let conn: &mut sqlx::AnyConnection = self;
        conn.execute(sql, args)
    }

    fn scalar<'a>(&'a mut self, sql: &'a str, args: Vec<Arg>) -> Fut<'a, Option<i64>> {
        let conn: &mut sqlx::AnyConnection = self;
        conn.scalar(sql, args)
    }
}
