//! `/__double/*`, for tests and the bench only (no auth, not logged):
//! `GET /__double/db-writes` answers the double's DB write stats
//! (`{"writes": N, "max_write_ms": X, "busy_retries": N}`, see
//! [`crate::plexdouble::pms::db::WriteStats`]) since start or since the
//! last `DELETE /__double/db-writes`, which starts them over.

use axum::Json;
use axum::extract::State;

use super::Shared;
use crate::plexdouble::pms::db::WriteStats;

pub async fn db_writes(State(state): State<Shared>) -> Json<WriteStats> {
    Json(state.db.write_stats())
}

/// Answers the stats as they were, and starts them over.
pub async fn reset_db_writes(State(state): State<Shared>) -> Json<WriteStats> {
    let stats = state.db.write_stats();
    state.db.reset_write_stats();
    Json(stats)
}
