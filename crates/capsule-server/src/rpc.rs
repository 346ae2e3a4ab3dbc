//! `POST /rpc`: JSON-RPC 2.0, single calls and batches, onto the engine.

use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use capsule_api::admin::{
    AuditParams, AuditResult, CreateKeyParams, GetTenantParams, ListKeysParams, ListKeysResult,
    ListTenantsResult, RevokeKeyParams, RevokeKeyResult, SetQuotasParams, methods as admin_methods,
};
use capsule_api::rpc::{Call, Payload, Response as RpcResponse, parse_call, parse_payload};
use capsule_api::sandbox::{
    CreateParams, CreateVolumeParams, DeleteResult, EntryResult, ExecParams, ForkParams,
    ForkResult, IdParams, ListDirResult, ListParams, ListResult, ListSnapshotsResult,
    ListVolumesResult, NoParams, PathParams, PoolsResult, ReadFileResult, RemoveResult,
    RunCodeParams, RunParams, SetPoolParams, SetTimeoutParams, SetTimeoutResult, SnapshotParams,
    SnapshotRefParams, TemplatesResult, VolumeNameParams, WriteFileParams, encode_base64, methods,
    parse_params,
};
use capsule_api::{ApiError, ErrorKind};
use capsule_engine::{Engine, Principal};
use serde::Serialize;
use serde_json::Value;

use crate::AppState;

/// The most calls one batch may hold.
const MAX_BATCH: usize = 100;

fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("responses serialize");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) async fn handle(
    State(state): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    body: Body,
) -> Response {
    let limit = state.config.max_body_bytes;
    let bytes = match to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = e
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            let err = if too_large {
                ApiError::new(
                    ErrorKind::PayloadTooLarge,
                    format!("the request body exceeds {limit} bytes"),
                )
                .with_detail("limit", limit)
            } else {
                ApiError::new(ErrorKind::InvalidRequest, "reading the request body failed")
            };
            let status = if too_large {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            let mut resp = json_response(status, &RpcResponse::failure(Value::Null, &err));
            // The rest of the body was not read: the connection cannot carry
            // another request, and the client must know not to reuse it.
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return resp;
        }
    };
    match parse_payload(&bytes) {
        Err(err) => json_response(StatusCode::OK, &RpcResponse::failure(Value::Null, &err)),
        Ok(Payload::Single(value)) => match run(&state, &who, value).await {
            Some(resp) => json_response(StatusCode::OK, &resp),
            None => StatusCode::NO_CONTENT.into_response(),
        },
        Ok(Payload::Batch(items)) => {
            if items.len() > MAX_BATCH {
                let err = ApiError::new(
                    ErrorKind::InvalidRequest,
                    format!(
                        "a batch may hold at most {MAX_BATCH} calls, this one holds {}",
                        items.len()
                    ),
                );
                return json_response(StatusCode::OK, &RpcResponse::failure(Value::Null, &err));
            }
            let mut out = Vec::new();
            for item in items {
                if let Some(resp) = run(&state, &who, item).await {
                    out.push(resp);
                }
            }
            if out.is_empty() {
                StatusCode::NO_CONTENT.into_response()
            } else {
                json_response(StatusCode::OK, &out)
            }
        }
    }
}

/// Runs one call; `None` for a notification.
async fn run(state: &AppState, who: &Principal, value: Value) -> Option<RpcResponse> {
    let call = match parse_call(value) {
        Ok(c) => c,
        Err((id, err)) => return Some(RpcResponse::failure(id, &err)),
    };
    let Call { id, method, params } = call;
    let result = dispatch(state, who, &method, params).await;
    if let Err(e) = &result
        && matches!(e.kind, ErrorKind::Internal)
    {
        tracing::error!(method = %method, "internal error: {}", e.message);
    }
    let id = id?;
    Some(match result {
        Ok(v) => RpcResponse::success(id, v),
        Err(e) => RpcResponse::failure(id, &e),
    })
}

fn to_value(v: impl Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(format!("encoding the result: {e}")))
}

pub(crate) async fn dispatch(
    state: &AppState,
    who: &Principal,
    method: &str,
    params: Value,
) -> Result<Value, ApiError> {
    let engine = &state.engine;
    if method.starts_with("admin.") {
        return admin(engine, who, method, params);
    }
    match method {
        methods::CREATE => to_value(
            engine
                .create(who, parse_params::<CreateParams>(method, params)?)
                .await?,
        ),
        methods::EXEC => to_value(
            engine
                .exec(who, parse_params::<ExecParams>(method, params)?)
                .await?,
        ),
        methods::RUN => to_value(
            engine
                .run_code(who, parse_params::<RunParams>(method, params)?)
                .await?,
        ),
        methods::RUN_CODE => to_value(
            engine
                .run_code_in_context(who, parse_params::<RunCodeParams>(method, params)?)
                .await?,
        ),
        methods::WRITE_FILE => {
            let p: WriteFileParams = parse_params(method, params)?;
            let content = p.decode_content()?;
            to_value(
                engine
                    .write_file(who, p.id, &p.path, content, p.mode.map(|m| m.0), p.user)
                    .await?,
            )
        }
        methods::READ_FILE => {
            let p: PathParams = parse_params(method, params)?;
            let bytes = engine.read_file(who, p.id, &p.path, p.user).await?;
            to_value(ReadFileResult {
                size: bytes.len() as u64,
                content: encode_base64(&bytes),
            })
        }
        methods::LIST_DIR => {
            let p: PathParams = parse_params(method, params)?;
            to_value(ListDirResult {
                entries: engine.list_dir(who, p.id, &p.path, p.user).await?,
            })
        }
        methods::STAT => {
            let p: PathParams = parse_params(method, params)?;
            to_value(EntryResult {
                entry: engine.stat(who, p.id, &p.path, p.user).await?,
            })
        }
        methods::MAKE_DIR => {
            let p: PathParams = parse_params(method, params)?;
            to_value(EntryResult {
                entry: engine.make_dir(who, p.id, &p.path, p.user).await?,
            })
        }
        methods::REMOVE => {
            let p: PathParams = parse_params(method, params)?;
            engine.remove(who, p.id, &p.path, p.user).await?;
            to_value(RemoveResult { removed: true })
        }
        methods::DELETE => {
            let p: IdParams = parse_params(method, params)?;
            engine.delete(who, p.id).await?;
            to_value(DeleteResult { deleted: true })
        }
        methods::GET => {
            let p: IdParams = parse_params(method, params)?;
            to_value(engine.get(who, p.id)?)
        }
        methods::LIST => {
            let p: ListParams = parse_params(method, params)?;
            to_value(ListResult {
                sandboxes: engine.list(who, p.metadata.as_ref())?,
            })
        }
        methods::SET_TIMEOUT => {
            let p: SetTimeoutParams = parse_params(method, params)?;
            to_value(SetTimeoutResult {
                expires_at: engine.set_timeout(who, p.id, p.ttl_ms)?,
            })
        }
        methods::TEMPLATES => {
            let _: NoParams = parse_params(method, params)?;
            to_value(TemplatesResult {
                templates: engine.templates(),
            })
        }
        methods::PAUSE => {
            let p: IdParams = parse_params(method, params)?;
            to_value(engine.pause(who, p.id).await?)
        }
        methods::RESUME => {
            let p: IdParams = parse_params(method, params)?;
            to_value(engine.resume(who, p.id).await?)
        }
        methods::SNAPSHOT => {
            let p: SnapshotParams = parse_params(method, params)?;
            to_value(engine.snapshot(who, p.id, p.name).await?)
        }
        methods::LIST_SNAPSHOTS => {
            let _: NoParams = parse_params(method, params)?;
            to_value(ListSnapshotsResult {
                snapshots: engine.list_snapshots(who)?,
            })
        }
        methods::DELETE_SNAPSHOT => {
            let p: SnapshotRefParams = parse_params(method, params)?;
            engine.delete_snapshot(who, &p.snapshot).await?;
            to_value(DeleteResult { deleted: true })
        }
        methods::FORK => to_value(ForkResult {
            sandboxes: engine
                .fork(who, parse_params::<ForkParams>(method, params)?)
                .await?,
        }),
        methods::CREATE_VOLUME => {
            let p: CreateVolumeParams = parse_params(method, params)?;
            to_value(engine.create_volume(who, &p.name, p.size_mb).await?)
        }
        methods::LIST_VOLUMES => {
            let _: NoParams = parse_params(method, params)?;
            to_value(ListVolumesResult {
                volumes: engine.list_volumes(who)?,
            })
        }
        methods::DELETE_VOLUME => {
            let p: VolumeNameParams = parse_params(method, params)?;
            engine.delete_volume(who, &p.name).await?;
            to_value(DeleteResult { deleted: true })
        }
        methods::STATS => {
            let p: IdParams = parse_params(method, params)?;
            to_value(engine.stats(who, p.id).await?)
        }
        methods::POOLS => {
            let _: NoParams = parse_params(method, params)?;
            to_value(PoolsResult {
                pools: engine.pools(),
            })
        }
        other => Err(ApiError::new(
            ErrorKind::MethodNotFound,
            format!(
                "method {other:?} does not exist; methods: {}",
                methods::ALL.join(", ")
            ),
        )
        .with_detail("method", other)),
    }
}

/// The `admin.v1.*` methods.
fn admin(engine: &Engine, who: &Principal, method: &str, params: Value) -> Result<Value, ApiError> {
    // Refused before anything about the call is looked at.
    if method != admin_methods::GET_TENANT
        && admin_methods::ALL.contains(&method)
        && !who.is_admin()
    {
        return Err(ApiError::new(
            ErrorKind::PermissionDenied,
            format!(
                "{method} needs an admin key; this key is a member of tenant {:?}",
                who.tenant
            ),
        ));
    }
    match method {
        admin_methods::CREATE_KEY => {
            to_value(engine.create_key(who, parse_params::<CreateKeyParams>(method, params)?)?)
        }
        admin_methods::LIST_KEYS => {
            let p: ListKeysParams = parse_params(method, params)?;
            to_value(ListKeysResult {
                keys: engine.list_keys(who, p.tenant.as_deref())?,
            })
        }
        admin_methods::REVOKE_KEY => {
            let p: RevokeKeyParams = parse_params(method, params)?;
            to_value(RevokeKeyResult {
                revoked: engine.revoke_key(who, &p.key_id)?,
            })
        }
        admin_methods::SET_QUOTAS => {
            let p: SetQuotasParams = parse_params(method, params)?;
            to_value(engine.set_quotas(who, &p.tenant, p.quotas)?)
        }
        admin_methods::GET_TENANT => {
            let p: GetTenantParams = parse_params(method, params)?;
            to_value(engine.get_tenant(who, p.tenant.as_deref())?)
        }
        admin_methods::LIST_TENANTS => {
            let _: NoParams = parse_params(method, params)?;
            to_value(ListTenantsResult {
                tenants: engine.list_tenants(who)?,
            })
        }
        admin_methods::SET_POOL => {
            let p: SetPoolParams = parse_params(method, params)?;
            to_value(PoolsResult {
                pools: engine.set_pool(who, &p.template, p.size)?,
            })
        }
        admin_methods::AUDIT => to_value(AuditResult {
            entries: engine.audit_log(who, parse_params::<AuditParams>(method, params)?)?,
        }),
        other => Err(ApiError::new(
            ErrorKind::MethodNotFound,
            format!(
                "method {other:?} does not exist; admin methods: {}",
                admin_methods::ALL.join(", ")
            ),
        )
        .with_detail("method", other)),
    }
}
