//! The JSON-RPC client the commands use.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use capsule_api::ApiError;
use capsule_api::rpc::{Response, request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// The server answered with an error.
    Api(ApiError),
    /// The server could not be reached or answered nonsense.
    Other(anyhow::Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Api(e) => write!(f, "{} ({})", e.message, e.kind),
            CallError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for CallError {}

pub struct Client {
    base: String,
    api_key: Option<String>,
    http: HttpClient<HttpConnector, Full<Bytes>>,
    next_id: AtomicU64,
}

impl Client {
    pub fn new(url: &str, api_key: Option<String>) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_owned();
        if base.starts_with("https://") {
            bail!(
                "{url}: the capsule CLI speaks plain HTTP; reach a remote server through an SSH tunnel or a local proxy"
            );
        }
        if !base.starts_with("http://") {
            bail!("{url} is not an http:// URL");
        }
        base.parse::<http::Uri>()
            .with_context(|| format!("{url} is not a valid URL"))?;
        let http = HttpClient::builder(TokioExecutor::new()).build_http();
        Ok(Self {
            base,
            api_key: api_key.filter(|k| !k.is_empty()),
            http,
            next_id: AtomicU64::new(1),
        })
    }

    /// The API key, for requests made outside `call` (the terminal).
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// The WebSocket URL of a server path.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.base.trim_start_matches("http://"))
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Calls `method` and decodes the result.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&request(id, method, params)).expect("requests serialize");
        let mut req = http::Request::post(format!("{}/rpc", self.base))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(key) = &self.api_key {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Other(anyhow!(e)))?;
        let resp = self.http.request(req).await.map_err(|e| {
            CallError::Other(anyhow!(
                "cannot reach the Capsule server at {} ({}); start one with `capsule serve` or point --url at it",
                self.base,
                root_cause(&e)
            ))
        })?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| CallError::Other(anyhow!("reading the server's answer: {e}")))?
            .to_bytes();
        let parsed: Response = serde_json::from_slice(&bytes).map_err(|_| {
            CallError::Other(anyhow!(
                "the server at {} answered {status} with something that is not JSON-RPC: {}",
                self.base,
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        if let Some(err) = parsed.error {
            return Err(CallError::Api(err.into_api_error()));
        }
        let result = parsed.result.unwrap_or(Value::Null);
        serde_json::from_value(result)
            .map_err(|e| CallError::Other(anyhow!("unexpected result of {method}: {e}")))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}
