//! `/v2/core/formats`, `/v2/core/outputs`, `/v2/core/operations`: read from the same
//! registry the worker uses.

use crate::error::HttpResult;
use crate::ApiState;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use runconvert_core::formats::{canonical_format, Capability};
use runconvert_core::ApiError;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v2/core/formats", get(formats))
        .route("/v2/core/outputs", get(outputs))
        .route("/v2/core/operations", get(operations))
}

fn format_param(q: &HashMap<String, String>, name: &str) -> Result<Option<&'static str>, ApiError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => canonical_format(v).map(Some).ok_or_else(|| {
            let mut errors = BTreeMap::new();
            errors.insert(
                name.to_string(),
                vec![format!("unknown format {v:?}; see /v2/core/formats")],
            );
            ApiError::invalid_fields(errors)
        }),
    }
}

async fn formats(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let data: Vec<Value> = state
        .registry
        .formats()
        .into_iter()
        .map(|f| {
            let mut ops: Vec<&str> = state
                .registry
                .capabilities()
                .iter()
                .filter(|c| c.input_format == f.name)
                .map(|c| c.operation)
                .collect();
            ops.dedup();
            let mut v = serde_json::to_value(f).unwrap_or_default();
            v["operations"] = json!(ops);
            v
        })
        .collect();
    Json(json!({"data": data}))
}

async fn outputs(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResult<Json<Value>> {
    let input = format_param(&q, "input_format")?;
    let mut seen = std::collections::BTreeSet::new();
    let data: Vec<Value> = state
        .registry
        .query(None, input, None)
        .filter(|c| seen.insert((c.operation, c.input_format, c.output_format)))
        .map(|c| {
            json!({"operation": c.operation, "input_format": c.input_format, "output_format": c.output_format, "engine": c.engine})
        })
        .collect();
    Ok(Json(json!({"data": data})))
}

async fn operations(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResult<Json<Value>> {
    let input = format_param(&q, "input_format")?;
    let output = format_param(&q, "output_format")?;
    let operation = q.get("operation").map(String::as_str);
    let mut data: Vec<Value> = state
        .registry
        .query(operation, input, output)
        .map(Capability::to_json)
        .collect();
    // Operations without a format pair (imports, exports) when no format was asked for.
    if input.is_none() && output.is_none() {
        for op in state.registry.operations() {
            let has_pairs = state.registry.capabilities().iter().any(|c| c.operation == *op);
            if !has_pairs && operation.is_none_or(|o| o == *op) {
                data.push(json!({"operation": op}));
            }
        }
    }
    Ok(Json(json!({"data": data})))
}
