//! `/v2/core/formats`, `/v2/core/outputs`, `/v2/core/operations`: read from the same
//! registry the worker uses.

use crate::error::HttpResult;
use crate::ApiState;
use axum::extract::{Query, State};
use axum::Json;
use runconvert_core::formats::{canonical_format, Capability};
use runconvert_core::ApiError;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::new()
        .routes(routes!(formats))
        .routes(routes!(outputs))
        .routes(routes!(operations))
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

#[utoipa::path(get, path = "/v2/core/formats", tag = "Formats", operation_id = "listFormats",
    summary = "The formats this deployment knows, and the operations each takes", security(()),
    responses((status = 200, description = "The formats", body = crate::openapi::schema::DataList)))]
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

#[utoipa::path(get, path = "/v2/core/outputs", tag = "Formats", operation_id = "listOutputs",
    summary = "What a format converts to on this deployment", security(()), params(crate::openapi::params::FormatQuery),
    responses((status = 200, description = "The output formats", body = crate::openapi::schema::DataList)))]
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

#[utoipa::path(get, path = "/v2/core/operations", tag = "Formats", operation_id = "listOperations",
    summary = "The operations this deployment runs, by format, with their options", security(()), params(crate::openapi::params::OperationQuery),
    responses((status = 200, description = "The operations", body = crate::openapi::schema::DataList)))]
async fn operations(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResult<Json<Value>> {
    let input = format_param(&q, "input_format")?;
    let output = format_param(&q, "output_format")?;
    let operation = q.get("operation").map(String::as_str);
    if let Some(op) = operation.filter(|o| !runconvert_core::ops::Operation::NAMES.contains(o)) {
        let mut errors = BTreeMap::new();
        errors.insert(
            "operation".to_string(),
            vec![format!(
                "unknown operation {op:?}; the operations are {}",
                runconvert_core::ops::Operation::NAMES.join(", ")
            )],
        );
        return Err(ApiError::invalid_fields(errors).into());
    }
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
