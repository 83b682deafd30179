//! Request bodies in, JSON responses out.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::api::error::{ApiError, ApiResult};
use crate::api::protobuf;

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// How much of an oversized body is read (and discarded) before answering 413:
/// a client still writing its body would otherwise see a broken pipe instead
/// of the 413 (kube-rs does), as Go's server avoids by draining too.
const MAX_DRAIN_BYTES: usize = 32 * 1024 * 1024;

pub(super) async fn read(mut body: Body, headers: &HeaderMap, limit: usize) -> ApiResult<Bytes> {
    let too_large = || ApiError::too_large(format!("Request entity too large: limit is {limit}"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let mut oversized = declared.is_some_and(|len| len > limit);
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(_) if oversized => break,
            Err(e) => return Err(ApiError::bad_request(format!("reading request body: {e}"))),
        };
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen > limit {
            oversized = true;
        }
        if oversized {
            if seen > MAX_DRAIN_BYTES {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&data);
    }
    if oversized {
        return Err(too_large());
    }
    Ok(buf.freeze())
}

/// The media types an object body (create, update) may come in.
const OBJECT_MEDIA_TYPES: &[&str] = &["application/json", "application/yaml"];

/// An object body in the format its Content-Type names. Protobuf is decoded
/// only for the kinds `protobuf` knows (typed clients do not fall back to
/// JSON on a 415); any other protobuf body gets 415.
pub(super) fn decode_object(inc: &super::Incoming) -> ApiResult<Value> {
    let media_type = inc.content_type.split(';').next().unwrap_or("").trim();
    match media_type {
        "" | "application/json" => parse_json(&inc.body),
        protobuf::MEDIA_TYPE => match protobuf::decode(&inc.body) {
            Ok(v) => Ok(v),
            Err(protobuf::ProtobufError::Unsupported(_)) => Err(ApiError::unsupported_media_type(OBJECT_MEDIA_TYPES)),
            Err(e) => Err(ApiError::bad_request(e.to_string())),
        },
        "application/yaml" => {
            let text =
                std::str::from_utf8(&inc.body).map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?;
            serde_saphyr::from_str(text).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
        }
        _ => Err(ApiError::unsupported_media_type(OBJECT_MEDIA_TYPES)),
    }
}

pub(super) fn parse_json(body: &Bytes) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))
}
