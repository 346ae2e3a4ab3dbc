//! `keys`, `tenants`, `audit`: the admin API from the shell.

use std::process::ExitCode;

use capsule_api::admin::{
    AuditResult, CreateKeyResult, ListKeysResult, ListTenantsResult, Quotas, RevokeKeyResult,
    TenantInfo, methods,
};
use serde_json::json;

use super::print_json;
use crate::args::{AuditArgs, KeysCommand, TenantsCommand};
use crate::client::Client;
use crate::output::table;

pub async fn keys(client: &Client, cmd: KeysCommand, json: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Create {
            tenant,
            role,
            name,
            rate_limit,
        } => {
            let made: CreateKeyResult = client
                .call(
                    methods::CREATE_KEY,
                    json!({"tenant": tenant, "role": role, "name": name, "rate_limit_per_min": rate_limit}),
                )
                .await?;
            if json {
                print_json(&made);
            } else {
                println!("{}", made.key);
                eprintln!(
                    "made {} key {} for tenant {}; keep it safe: it is not shown again",
                    made.info.role.as_str(),
                    made.info.key_id,
                    made.info.tenant
                );
            }
        }
        KeysCommand::List { tenant } => {
            let listed: ListKeysResult = client
                .call(methods::LIST_KEYS, json!({"tenant": tenant}))
                .await?;
            if json {
                print_json(&listed);
            } else {
                let rows: Vec<Vec<String>> = listed
                    .keys
                    .iter()
                    .map(|k| {
                        vec![
                            k.key_id.clone(),
                            k.prefix.clone(),
                            k.tenant.clone(),
                            k.role.as_str().to_owned(),
                            k.name.clone(),
                            k.created_at.clone(),
                            k.revoked_at.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID", "PREFIX", "TENANT", "ROLE", "NAME", "CREATED", "REVOKED",
                    ],
                    &rows,
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            let r: RevokeKeyResult = client
                .call(methods::REVOKE_KEY, json!({"key_id": key_id}))
                .await?;
            if json {
                print_json(&r);
            } else {
                eprintln!("revoked {key_id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn limit<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_owned(), T::to_string)
}

fn tenant_rows(tenants: &[TenantInfo]) -> Vec<Vec<String>> {
    tenants
        .iter()
        .map(|t| {
            let q = &t.quotas;
            vec![
                t.tenant.clone(),
                t.keys.to_string(),
                format!("{}/{}", t.usage.sandboxes, limit(&q.max_sandboxes)),
                format!("{}/{}", t.usage.cpu, limit(&q.max_cpu)),
                format!("{}/{}", t.usage.memory_mb, limit(&q.max_memory_mb)),
                format!("{}/{}", t.usage.snapshots, limit(&q.max_snapshots)),
                format!("{}/{}", t.usage.volume_bytes, limit(&q.max_volume_bytes)),
            ]
        })
        .collect()
}

const TENANT_HEADER: [&str; 7] = [
    "TENANT",
    "KEYS",
    "SANDBOXES",
    "CPU",
    "MEMORY MB",
    "SNAPSHOTS",
    "VOLUME BYTES",
];

pub async fn tenants(client: &Client, cmd: TenantsCommand, json: bool) -> anyhow::Result<ExitCode> {
    let shown: Vec<TenantInfo> = match cmd {
        TenantsCommand::List => {
            let r: ListTenantsResult = client.call(methods::LIST_TENANTS, json!({})).await?;
            r.tenants
        }
        TenantsCommand::Show { tenant } => {
            vec![
                client
                    .call(methods::GET_TENANT, json!({"tenant": tenant}))
                    .await?,
            ]
        }
        TenantsCommand::SetQuota {
            tenant,
            max_sandboxes,
            max_cpu,
            max_memory_mb,
            max_snapshots,
            max_volume_bytes,
        } => {
            let quotas = Quotas {
                max_sandboxes,
                max_cpu,
                max_memory_mb,
                max_snapshots,
                max_volume_bytes,
            };
            vec![
                client
                    .call(
                        methods::SET_QUOTAS,
                        json!({"tenant": tenant, "quotas": quotas}),
                    )
                    .await?,
            ]
        }
    };
    if json {
        print_json(&shown);
    } else {
        table(&TENANT_HEADER, &tenant_rows(&shown));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(client: &Client, a: AuditArgs, json: bool) -> anyhow::Result<ExitCode> {
    let r: AuditResult = client
        .call(
            methods::AUDIT,
            json!({"tenant": a.tenant, "since": a.since, "limit": a.limit}),
        )
        .await?;
    if json {
        print_json(&r);
    } else {
        let rows: Vec<Vec<String>> = r
            .entries
            .iter()
            .map(|e| {
                vec![
                    e.at.clone(),
                    e.tenant.clone(),
                    e.key_id.clone().unwrap_or_else(|| "-".into()),
                    e.action.clone(),
                    e.target.clone().unwrap_or_else(|| "-".into()),
                    e.outcome.clone(),
                ]
            })
            .collect();
        table(
            &["AT", "TENANT", "KEY", "ACTION", "TARGET", "OUTCOME"],
            &rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}
