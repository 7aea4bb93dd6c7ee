//! `/graphql`: POST with a JSON body, GET with URL parameters, GraphiQL for browsers. Every
//! refusal — a body too large, malformed JSON, a query too long or nested too deep, no or a
//! bad API key, a rate limit, exhausted credits, even a panic — is a GraphQL error body whose
//! `extensions.code` says what happened.
//!
//! A request is priced from its parsed text, its key authenticated and rate limited, and its
//! price charged once, all before it runs (see [`super::gate`]); it is refunded if it returns
//! no data, and its usage is counted in memory for the batched recorder.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;

use async_graphql::{Request, Variables};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use futures_util::FutureExt;
use serde::Deserialize;
use serde_json::json;

use super::gate::{API_KEY_HEADER, Gate, Metering};
use crate::graphql::limits::{MAX_BODY_BYTES, MAX_BRACKET_NESTING, MAX_QUERY_BYTES};
use crate::graphql::{ApiError, Caller, ClientAddr, KalshiBookSchema, SessionCaller, cost};

/// What the `/graphql` handlers share.
#[derive(Clone)]
pub struct GraphqlState {
    pub schema: KalshiBookSchema,
    /// The WebSocket side (subscriptions) of the same endpoint.
    pub ws: super::ws::WsState,
    /// Authentication, rate limits and credits; `None` only where a benchmark measures the
    /// API without them (`kalshibook bench auth`).
    pub gate: Option<Gate>,
}

/// Who sent the request: the headers and, when the server was started with connection
/// info, the peer address.
pub(super) struct Origin {
    headers: HeaderMap,
    peer: Option<SocketAddr>,
}

/// A GraphQL-shaped error body (`{"errors":[{"message", "extensions":{"code"}}]}`).
fn refuse(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "errors": [{ "message": message.into(), "extensions": { "code": code } }]
    });
    (status, Json(body)).into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    refuse(StatusCode::BAD_REQUEST, "BAD_INPUT", message)
}

/// The request body as the GraphQL-over-HTTP convention has it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    query: Option<serde_json::Value>,
    operation_name: Option<serde_json::Value>,
    variables: Option<serde_json::Value>,
}

/// POST /graphql.
pub(super) async fn post(
    State(state): State<GraphqlState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let origin = Origin {
        headers,
        peer: peer.map(|axum::Extension(ConnectInfo(addr))| addr),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BAD_INPUT",
                format!("the request body exceeds the limit of {MAX_BODY_BYTES} bytes"),
            );
        }
        Err(rejection) => {
            return bad_request(format!("the request body could not be read: {rejection}"));
        }
    };
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => {
            return bad_request(format!(
                "the body is not valid JSON ({error}); send {{\"query\": \"...\", \"variables\": {{...}}}}"
            ));
        }
    };
    if value.is_array() {
        return bad_request(
            "batched requests are not supported; send one {\"query\": ..., \"variables\": ...} object per request",
        );
    }
    let body: Body = match serde_json::from_value(value) {
        Ok(body) => body,
        Err(_) => {
            return bad_request(
                "the body must be a JSON object {\"query\": string, \"variables\"?: object, \"operationName\"?: string}",
            );
        }
    };
    let string = |value: Option<serde_json::Value>, name: &str| match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(format!("`{name}` must be a string")),
    };
    let query = match string(body.query, "query") {
        Ok(Some(query)) => query,
        Ok(None) => return bad_request("the body has no `query`: send {\"query\": \"{ ... }\"}"),
        Err(message) => return bad_request(message),
    };
    let operation_name = match string(body.operation_name, "operationName") {
        Ok(name) => name,
        Err(message) => return bad_request(message),
    };
    let variables = match body.variables {
        None | Some(serde_json::Value::Null) => Variables::default(),
        Some(value @ serde_json::Value::Object(_)) => Variables::from_json(value),
        Some(_) => return bad_request("`variables` must be a JSON object"),
    };
    execute(&state, query, operation_name, variables, origin).await
}

/// GET /graphql: a query in the URL (`?query=…&variables=…&operationName=…`), or GraphiQL
/// when there is no query (a browser opening the endpoint).
pub(super) async fn get(
    State(state): State<GraphqlState>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    upgrade: Result<
        axum::extract::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    // The same path serves subscriptions: a WebSocket upgrade goes to the WebSocket side.
    if let Ok(upgrade) = upgrade {
        return super::ws::upgrade(state.ws.clone(), &headers, upgrade);
    }
    let Ok(Query(mut params)) = params else {
        return bad_request("the URL parameters could not be decoded");
    };
    let Some(query) = params.remove("query") else {
        let browser = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|accept| accept.contains("text/html") || accept.contains("*/*"));
        if browser {
            return graphiql().into_response();
        }
        return bad_request(
            "GET /graphql needs a `query` URL parameter (or open it in a browser for GraphiQL)",
        );
    };
    let variables = match params.remove("variables") {
        None => Variables::default(),
        Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(value @ serde_json::Value::Object(_)) => Variables::from_json(value),
            Ok(serde_json::Value::Null) => Variables::default(),
            _ => return bad_request("the `variables` URL parameter must be a JSON object"),
        },
    };
    let operation_name = params.remove("operationName");
    let origin = Origin {
        headers,
        peer: peer.map(|axum::Extension(ConnectInfo(addr))| addr),
    };
    execute(&state, query, operation_name, variables, origin).await
}

/// The GraphiQL IDE pointed at `/graphql`.
pub(super) fn graphiql() -> Html<String> {
    Html(
        async_graphql::http::GraphiQLSource::build()
            .endpoint("/graphql")
            .title("KalshiBook GraphQL")
            .finish(),
    )
}

/// Checks the query text; prices it, authenticates, rate limits and charges its caller;
/// runs it; refunds it if it returned no data; answers with the metering headers.
async fn execute(
    state: &GraphqlState,
    query: String,
    operation_name: Option<String>,
    variables: Variables,
    origin: Origin,
) -> Response {
    if query.len() > MAX_QUERY_BYTES {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BAD_INPUT",
            format!(
                "the query text is {} bytes, over the limit of {MAX_QUERY_BYTES}; ask for less in each request",
                query.len()
            ),
        );
    }
    if let Some(depth) = bracket_nesting_over(&query, MAX_BRACKET_NESTING) {
        return bad_request(format!(
            "the query nests brackets {depth} deep, over the limit of {MAX_BRACKET_NESTING}"
        ));
    }
    let mut metering = Metering::default();
    let mut caller = Caller::default();
    let mut session = SessionCaller::Absent;
    let mut charged = None;
    // Parsed once: priced here, then handed to the schema, which skips its own parse (its
    // depth and directive limits still apply). A document that does not parse is left to the
    // schema, which refuses it (with its syntax error) before running anything.
    let document = async_graphql::parser::parse_query(&query).ok();
    if let (Some(gate), Some(document)) = (&state.gate, &document) {
        session = gate.session(&origin.headers);
        if let Ok(plan) = cost::plan_document(document, operation_name.as_deref(), &variables) {
            match admit(gate, &plan, &origin.headers, &mut metering).await {
                Ok(Some((principal, request_id))) => {
                    caller.principal = Some(principal);
                    if !plan.operations.is_empty() {
                        charged = Some((principal, request_id, plan.operations));
                    }
                }
                Ok(None) => {}
                Err(error) => return refuse_api(&error, &metering),
            }
        }
    } else if let Some(gate) = &state.gate {
        session = gate.session(&origin.headers);
    }
    let mut request = Request::new(query)
        .variables(variables)
        .data(caller)
        .data(session)
        .data(ClientAddr(origin.peer.map(|addr| addr.ip())));
    if let Some(document) = document {
        request.set_parsed_query(document);
    }
    if let Some(name) = operation_name {
        request = request.operation_name(name);
    }
    let executed = AssertUnwindSafe(state.schema.execute(request))
        .catch_unwind()
        .await;
    if let (Some(gate), Some((principal, request_id, operations))) = (&state.gate, charged) {
        let delivered = executed.as_ref().is_ok_and(returned_data);
        if delivered {
            gate.usage()
                .record(&principal, &operations, time::OffsetDateTime::now_utc());
        } else {
            match gate.refund(&principal, request_id).await {
                Ok(balance) => metering.credits = Some((balance, crate::accounts::Credits::ZERO)),
                // The client was charged for nothing: an operator can refund it from the
                // ledger by request id.
                Err(error) => {
                    tracing::error!(%error, %request_id, account = %principal.account_id, "refund failed")
                }
            }
        }
    }
    let mut answer = match executed {
        Ok(response) => {
            let (status, retry_after) = http_status(&response);
            if retry_after.is_some() {
                metering.retry_after_secs = retry_after;
            }
            (status, Json(response)).into_response()
        }
        Err(_) => {
            let reference = format!("{:016x}", rand::random::<u64>());
            tracing::error!(%reference, "a GraphQL request panicked");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!(
                    "internal error (reference {reference}); retrying may help, and if it persists report the reference"
                ),
            )
        }
    };
    metering.write(answer.headers_mut());
    answer
}

/// The gate's checks before a request runs: authenticate the key (required when the
/// request reads data), count it against the key's rate, charge its price. Returns the
/// principal and the charge's request id when a key was presented.
async fn admit(
    gate: &Gate,
    plan: &cost::Plan,
    headers: &HeaderMap,
    metering: &mut Metering,
) -> Result<Option<(crate::graphql::Principal, uuid::Uuid)>, ApiError> {
    let key = headers.get(API_KEY_HEADER);
    if key.is_none() && !plan.reads_data {
        return Ok(None);
    }
    let key = key.map(|value| value.to_str().unwrap_or(""));
    let request_id = uuid::Uuid::new_v4();
    let principal = gate
        .authenticate_and_charge(key, &plan.operations, request_id, metering)
        .await?;
    Ok(Some((principal, request_id)))
}

/// Whether a response carries any data: some root field answered non-null. A request that
/// failed as a whole (validation, every field refused) delivered nothing and is refunded.
fn returned_data(response: &async_graphql::Response) -> bool {
    match &response.data {
        async_graphql::Value::Object(fields) => fields
            .values()
            .any(|value| !matches!(value, async_graphql::Value::Null)),
        async_graphql::Value::Null => false,
        _ => true,
    }
}

/// A refusal before execution, with its status, code and metering headers.
fn refuse_api(error: &ApiError, metering: &Metering) -> Response {
    let status = match error.code() {
        "UNAUTHENTICATED" => StatusCode::UNAUTHORIZED,
        "FORBIDDEN" => StatusCode::FORBIDDEN,
        "CREDITS_EXHAUSTED" | "RATE_LIMITED" => StatusCode::TOO_MANY_REQUESTS,
        "UNAVAILABLE" => StatusCode::SERVICE_UNAVAILABLE,
        "INTERNAL" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut extensions = serde_json::Map::new();
    extensions.insert("code".to_owned(), json!(error.code()));
    if let ApiError::RateLimited {
        retry_after_secs, ..
    } = error
    {
        extensions.insert("retryAfterSeconds".to_owned(), json!(retry_after_secs));
    }
    let body = json!({ "errors": [{ "message": error.to_string(), "extensions": extensions }] });
    let mut response = (status, Json(body)).into_response();
    metering.write(response.headers_mut());
    response
}

/// The HTTP status of an executed request: 200, unless an error refused the caller — 401
/// (UNAUTHENTICATED), 403 (FORBIDDEN) or 429 (CREDITS_EXHAUSTED, RATE_LIMITED, with the
/// longest `retryAfterSeconds` as `Retry-After`).
fn http_status(response: &async_graphql::Response) -> (StatusCode, Option<u64>) {
    let mut status = StatusCode::OK;
    let mut retry_after = None;
    for error in &response.errors {
        let Some(extensions) = &error.extensions else {
            continue;
        };
        let code = match extensions.get("code") {
            Some(async_graphql::Value::String(code)) => code.as_str(),
            _ => continue,
        };
        let refused = match code {
            "UNAUTHENTICATED" => StatusCode::UNAUTHORIZED,
            "FORBIDDEN" => StatusCode::FORBIDDEN,
            "CREDITS_EXHAUSTED" | "RATE_LIMITED" => StatusCode::TOO_MANY_REQUESTS,
            _ => continue,
        };
        if let Some(async_graphql::Value::Number(secs)) = extensions.get("retryAfterSeconds") {
            retry_after = retry_after.max(secs.as_u64());
        }
        // 401 outranks 403 outranks 429: fix the key before waiting for credits.
        if status == StatusCode::OK || refused.as_u16() < status.as_u16() {
            status = refused;
        }
    }
    (status, retry_after)
}

/// The deepest bracket nesting of `query` (`{`, `[`, `(`) if it exceeds `limit`, ignoring
/// strings and comments. Checked before parsing so that no input can exhaust the parser's
/// stack.
fn bracket_nesting_over(query: &str, limit: usize) -> Option<usize> {
    let bytes = query.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    (deepest > limit).then_some(deepest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_ignores_strings_and_comments() {
        assert_eq!(bracket_nesting_over("{ a { b } }", 2), None);
        assert_eq!(bracket_nesting_over("{ a { b { c } } }", 2), Some(3));
        assert_eq!(bracket_nesting_over("{ a(s: \"{{{{\") # {{{{\n }", 2), None);
        assert_eq!(bracket_nesting_over("{ a(s: \"\"\"{{{\"\"\") }", 2), None);
        assert_eq!(
            bracket_nesting_over(&"[".repeat(100_000), 32),
            Some(100_000)
        );
        assert_eq!(bracket_nesting_over("\"\\", 1), None);
    }
}
