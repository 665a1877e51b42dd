use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runconvert_core::ports::PortError;
use runconvert_core::ApiError;

/// An [`ApiError`] as an HTTP response: its status and `{code, message, errors}`.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(&self.0)).into_response()
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl From<PortError> for HttpError {
    fn from(e: PortError) -> Self {
        // The detail may name internals: log it, show a generic message.
        tracing::error!(error = %e, "backing service failed");
        HttpError(ApiError::internal(
            "the server could not complete the request; try again",
        ))
    }
}

pub type HttpResult<T> = Result<T, HttpError>;
