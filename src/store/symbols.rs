//! The references pipeline's data: each file's definitions (`symbol_defs`) and references
//! (`symbol_refs`), replaced file by file. Resolution happens when asked
//! (`service::references`), so a changed file never makes another file's rows stale.

use super::{Store, StoreError};
use crate::extract::references::Symbols;

/// A definition as stored.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, schemars::JsonSchema)]
pub struct DefRow {
    pub repository_id: i64,
    pub path: String,
    pub name: String,
    pub qualified: Option<String>,
    pub kind: String,
    pub line: i32,
    pub end_line: i32,
}

/// A reference as stored.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, schemars::JsonSchema)]
pub struct RefRow {
    pub repository_id: i64,
    pub path: String,
    pub name: String,
    pub kind: String,
    pub line: i32,
    pub col: i32,
    pub from_name: Option<String>,
    pub from_line: Option<i32>,
    pub qualifier: Option<String>,
}

impl Store {
    /// Replaces the definitions and references of repository `repository_id`'s files
    /// `files` by what was found in them, and removes those of `deleted`. One transaction,
    /// under the repository's symbol lock (two runs replacing one file would otherwise
    /// both insert).
    pub async fn replace_symbols(
        &self,
        repository_id: i64,
        files: &[(String, Symbols)],
        deleted: &[String],
    ) -> Result<(u64, u64), StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_symbols(&mut tx, repository_id).await?;
        let mut gone: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        gone.extend(deleted.iter().map(String::as_str));
        for sql in [
            "DELETE FROM symbol_defs WHERE repository_id = $1 AND path = ANY($2)",
            "DELETE FROM symbol_refs WHERE repository_id = $1 AND path = ANY($2)",
        ] {
            sqlx::query(sql)
                .bind(repository_id)
                .bind(&gone)
                .execute(&mut *tx)
                .await?;
        }
        let (mut dp, mut dn, mut dq, mut dk, mut dl, mut de) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut rp, mut rn, mut rk, mut rl, mut rc, mut rf, mut rfl, mut rq) = (
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
        );
        for (path, s) in files {
            for d in &s.defs {
                dp.push(path.as_str());
                dn.push(d.name.as_str());
                dq.push(d.qualified.as_deref());
                dk.push(d.kind);
                dl.push(d.line);
                de.push(d.end_line);
            }
            for r in &s.refs {
                rp.push(path.as_str());
                rn.push(r.name.as_str());
                rk.push(r.kind.as_str());
                rl.push(r.line);
                rc.push(r.column);
                rf.push(r.from.as_deref());
                rfl.push(r.from_line);
                rq.push(r.qualifier.as_deref());
            }
        }
        let defs = sqlx::query(
            "INSERT INTO symbol_defs (repository_id, path, name, qualified, kind, line, end_line)
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::int[])",
        )
        .bind(repository_id)
        .bind(&dp)
        .bind(&dn)
        .bind(&dq)
        .bind(&dk)
        .bind(&dl)
        .bind(&de)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let refs = sqlx::query(
            "INSERT INTO symbol_refs (repository_id, path, name, kind, line, col, from_name, from_line, qualifier)
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::int[], $6::int[],
                                      $7::text[], $8::int[], $9::text[])",
        )
        .bind(repository_id)
        .bind(&rp)
        .bind(&rn)
        .bind(&rk)
        .bind(&rl)
        .bind(&rc)
        .bind(&rf)
        .bind(&rfl)
        .bind(&rq)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok((defs, refs))
    }

    /// Removes the rows of files repository `repository_id` no longer indexes (after a
    /// reingest of every file).
    pub async fn prune_symbols(&self, repository_id: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_symbols(&mut tx, repository_id).await?;
        for sql in [
            "DELETE FROM symbol_defs t WHERE t.repository_id = $1 AND NOT EXISTS (
                 SELECT 1 FROM files f WHERE f.repository_id = $1 AND f.path = t.path
                    AND f.skip_reason IS NULL)",
            "DELETE FROM symbol_refs t WHERE t.repository_id = $1 AND NOT EXISTS (
                 SELECT 1 FROM files f WHERE f.repository_id = $1 AND f.path = t.path
                    AND f.skip_reason IS NULL)",
        ] {
            sqlx::query(sql)
                .bind(repository_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Definitions named one of `names` in the repositories `repos`.
    pub async fn definitions_named(
        &self,
        repos: &[i64],
        names: &[&str],
    ) -> Result<Vec<DefRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT repository_id, path, name, qualified, kind, line, end_line FROM symbol_defs
              WHERE repository_id = ANY($1) AND name = ANY($2)
              ORDER BY repository_id, path, line",
        )
        .bind(repos)
        .bind(names)
        .fetch_all(&self.pool)
        .await?)
    }

    /// References to `name` of the kinds `kinds` in the repositories `repos`, under `path`
    /// (a prefix; empty: anywhere), by place; at most `limit`.
    pub async fn references_to(
        &self,
        repos: &[i64],
        name: &str,
        kinds: &[&str],
        path: &str,
        limit: i64,
    ) -> Result<Vec<RefRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT repository_id, path, name, kind, line, col, from_name, from_line, qualifier
               FROM symbol_refs
              WHERE repository_id = ANY($1) AND name = $2 AND kind = ANY($3)
                AND starts_with(path, $4)
              ORDER BY repository_id, path, line, col LIMIT $5",
        )
        .bind(repos)
        .bind(name)
        .bind(kinds)
        .bind(path)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The calls made inside the definition at `path` line `line` named `name`.
    pub async fn calls_inside(
        &self,
        repository_id: i64,
        path: &str,
        name: &str,
        line: i32,
    ) -> Result<Vec<RefRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT repository_id, path, name, kind, line, col, from_name, from_line, qualifier
               FROM symbol_refs
              WHERE repository_id = $1 AND path = $2 AND kind = 'call'
                AND from_name = $3 AND from_line = $4
              ORDER BY line, col",
        )
        .bind(repository_id)
        .bind(path)
        .bind(name)
        .bind(line)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Of `files` ((repository, path)), those that import `name`.
    pub async fn files_importing(
        &self,
        repos: &[i64],
        name: &str,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT DISTINCT repository_id, path FROM symbol_refs
              WHERE repository_id = ANY($1) AND name = $2 AND kind = 'import'",
        )
        .bind(repos)
        .bind(name)
        .fetch_all(&self.pool)
        .await?)
    }
}

async fn lock_symbols(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    repository_id: i64,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('trawl.symbols'), $1::int)")
        .bind(repository_id as i32)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
