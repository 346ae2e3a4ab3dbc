//! `create`, `ls`, `rm`, `inspect`, `timeout`, `templates`.

use std::process::ExitCode;

use anyhow::anyhow;
use capsule_api::sandbox::{
    CreateResult, DeleteResult, ListDirResult, ListResult, SandboxInfo, SetTimeoutResult,
    TemplatesResult, methods,
};
use serde_json::json;

use super::print_json;
use crate::args::{CreateArgs, IdArg, LsArgs, RmArgs, TimeoutArgs};
use crate::client::Client;
use crate::output::{human_size, parse_duration_ms, parse_pairs, table};

pub async fn create(client: &Client, a: CreateArgs, json: bool) -> anyhow::Result<ExitCode> {
    let mut params = json!({ "template": a.template });
    if let Some(ttl) = &a.ttl {
        params["ttl_ms"] = json!(parse_duration_ms(ttl).map_err(|e| anyhow!("--ttl: {e}"))?);
    }
    if let Some(cpu) = a.cpu {
        params["cpu"] = json!(cpu);
    }
    if let Some(mem) = a.memory {
        params["memory_mb"] = json!(mem);
    }
    if !a.env.is_empty() {
        params["env"] = json!(parse_pairs(&a.env, "--env").map_err(|e| anyhow!(e))?);
    }
    if !a.meta.is_empty() {
        params["metadata"] = json!(parse_pairs(&a.meta, "--meta").map_err(|e| anyhow!(e))?);
    }
    if let Some(s) = &a.snapshot {
        params["snapshot"] = json!(s);
    }
    if !a.volumes.is_empty() {
        let mut volumes = Vec::new();
        for v in &a.volumes {
            let parts: Vec<&str> = v.splitn(3, ':').collect();
            let read_only = match parts.get(2) {
                None => false,
                Some(&"ro") => true,
                Some(&"rw") => false,
                Some(other) => return Err(anyhow!("--volume {v:?}: {other:?} is not ro or rw")),
            };
            match parts[..] {
                [name, path, ..] if !name.is_empty() && !path.is_empty() => {
                    volumes.push(json!({"name": name, "path": path, "read_only": read_only}))
                }
                _ => {
                    return Err(anyhow!(
                        "--volume {v:?}: expected NAME:/path or NAME:/path:ro"
                    ));
                }
            }
        }
        params["volumes"] = json!(volumes);
    }
    if let Some(mb) = a.disk {
        params["disk_mb"] = json!(mb);
    }
    if let Some(t) = &a.auto_pause {
        params["auto_pause_ms"] =
            json!(parse_duration_ms(t).map_err(|e| anyhow!("--auto-pause: {e}"))?);
    }
    if let Some(rt) = &a.runtime {
        params["runtime"] = json!(rt);
    }
    let created: CreateResult = client.call(methods::CREATE, params).await?;
    if json {
        print_json(&created);
    } else {
        println!("{}", created.id);
        eprintln!(
            "created a {} sandbox; it expires at {}",
            created.template, created.expires_at
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn sandbox_rows(list: &[SandboxInfo]) -> Vec<Vec<String>> {
    list.iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.template.clone(),
                s.state.to_string(),
                s.created_at.clone(),
                s.expires_at.clone(),
                s.metadata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect()
}

/// Splits `ID:PATH` into its parts.
pub fn split_remote(target: &str) -> Option<(&str, &str)> {
    let (id, path) = target.split_once(':')?;
    (id.len() == 8
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
    .then_some((id, path))
}

pub async fn ls(client: &Client, a: LsArgs, json: bool) -> anyhow::Result<ExitCode> {
    if let Some(target) = &a.target {
        let (id, path) = split_remote(target).unwrap_or((target.as_str(), ""));
        let path = if path.is_empty() { "/workspace" } else { path };
        let listing: ListDirResult = client
            .call(methods::LIST_DIR, json!({ "id": id, "path": path }))
            .await?;
        if json {
            print_json(&listing);
        } else {
            let rows: Vec<Vec<String>> = listing
                .entries
                .iter()
                .map(|e| {
                    let name = match &e.symlink_target {
                        Some(t) => format!("{} -> {t}", e.name),
                        None => e.name.clone(),
                    };
                    vec![
                        format!("{:?}", e.kind).to_lowercase(),
                        format!("{:04o}", e.mode),
                        human_size(e.size),
                        e.modified_at.clone(),
                        name,
                    ]
                })
                .collect();
            table(&["TYPE", "MODE", "SIZE", "MODIFIED", "NAME"], &rows);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut params = json!({});
    if !a.meta.is_empty() {
        params["metadata"] = json!(parse_pairs(&a.meta, "--meta").map_err(|e| anyhow!(e))?);
    }
    let list: ListResult = client.call(methods::LIST, params).await?;
    if json {
        print_json(&list);
    } else if list.sandboxes.is_empty() {
        eprintln!("no sandboxes (create one with `capsule create python`)");
    } else {
        table(
            &["ID", "TEMPLATE", "STATE", "CREATED", "EXPIRES", "METADATA"],
            &sandbox_rows(&list.sandboxes),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn rm(client: &Client, a: RmArgs, json: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut results = Vec::new();
    for id in &a.ids {
        match client
            .call::<DeleteResult>(methods::DELETE, json!({ "id": id }))
            .await
        {
            Ok(_) => {
                results.push(json!({ "id": id, "deleted": true }));
                if !json {
                    println!("{id}");
                }
            }
            Err(e) => {
                failed = true;
                results.push(json!({ "id": id, "deleted": false, "error": e.to_string() }));
                if !json {
                    eprintln!("error: {id}: {e}");
                }
            }
        }
    }
    if json {
        print_json(&results);
    }
    Ok(if failed {
        ExitCode::from(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn inspect(client: &Client, a: IdArg, json: bool) -> anyhow::Result<ExitCode> {
    let info: SandboxInfo = client.call(methods::GET, json!({ "id": a.id })).await?;
    if json {
        print_json(&info);
    } else {
        println!("id:         {}", info.id);
        println!("template:   {}", info.template);
        println!("state:      {}", info.state);
        if let Some(err) = &info.error {
            println!("error:      {err}");
        }
        println!("created at: {}", info.created_at);
        println!("expires at: {}", info.expires_at);
        println!("cpu:        {}", info.cpu);
        println!("memory:     {} MiB", info.memory_mb);
        for (k, v) in &info.metadata {
            println!("metadata:   {k}={v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn timeout(client: &Client, a: TimeoutArgs, json: bool) -> anyhow::Result<ExitCode> {
    let ttl = parse_duration_ms(&a.ttl).map_err(|e| anyhow!(e))?;
    let r: SetTimeoutResult = client
        .call(methods::SET_TIMEOUT, json!({ "id": a.id, "ttl_ms": ttl }))
        .await?;
    if json {
        print_json(&r);
    } else {
        println!("{} now expires at {}", a.id, r.expires_at);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn templates(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let r: TemplatesResult = client.call(methods::TEMPLATES, json!({})).await?;
    if json {
        print_json(&r);
    } else {
        let rows: Vec<Vec<String>> = r
            .templates
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    if t.available {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                    t.run.join(" "),
                    match &t.reason {
                        Some(why) => format!("unavailable: {why}"),
                        None => t.description.clone(),
                    },
                ]
            })
            .collect();
        table(&["NAME", "AVAILABLE", "RUN", "DESCRIPTION"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_targets() {
        assert_eq!(
            split_remote("abc12345:/workspace/a"),
            Some(("abc12345", "/workspace/a"))
        );
        assert_eq!(split_remote("abc12345:"), Some(("abc12345", "")));
        assert_eq!(split_remote("./local:file"), None);
        assert_eq!(split_remote("C:/windows"), None);
    }
}
