//! `GET /files` (download) and `POST /files` (upload, raw or multipart).
//! Uploads land in a temporary file beside the destination and are renamed
//! into place only when complete, so an interrupted upload never leaves a
//! half-written file behind.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use capsule_protocol::client::Body;
use capsule_protocol::filesystem::WrittenFile;
use capsule_protocol::{Code, ConnectError};
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Agent;
use crate::http::{channel_body, plain_error};
use crate::users::{Identity, as_user, resolve};

/// Decodes `%XX` escapes and `+` in a query component.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn identity(
    agent: &Agent,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Identity, ConnectError> {
    match query.get("username").filter(|u| !u.is_empty()) {
        Some(user) => agent.users.lookup(user),
        None => agent.identity(headers),
    }
}

pub async fn download(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    let query = parse_query(req.uri().query());
    let result = async {
        let id = identity(&agent, req.headers(), &query)?;
        let path = resolve(query.get("path").map(String::as_str).unwrap_or(""), &id)?;
        let read_path = path.clone();
        let (file, len) = as_user(&id, move || crate::fs::open_for_read(&read_path)).await?;
        Ok::<_, ConnectError>((path, file, len))
    }
    .await;
    let (path, file, len) = match result {
        Ok(v) => v,
        Err(e) => return plain_error(&e),
    };
    let (tx, body) = channel_body(4);
    tokio::spawn(async move {
        let mut file = tokio::fs::File::from_std(file);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{}\"",
                name.replace(['"', '\\', '\r', '\n'], "_")
            ),
        )
        .body(body)
        .expect("static response parts are valid")
}

/// An upload in progress: a temporary file renamed over `dest` on commit.
struct Upload {
    dest: PathBuf,
    temp: PathBuf,
    file: tokio::fs::File,
    id: Identity,
}

impl Upload {
    async fn begin(id: &Identity, dest: PathBuf, mode: Option<u32>) -> Result<Self, ConnectError> {
        let id2 = id.clone();
        let (dest, temp, file) = as_user(id, move || {
            // Writing through a symlink writes its target, as open(2) would,
            // even when the target does not exist yet.
            let dest = follow_links(dest)?;
            let existing_mode = std::fs::metadata(&dest)
                .ok()
                .map(|m| m.permissions().mode() & 0o7777);
            let name = dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| {
                    ConnectError::invalid_argument(format!(
                        "write {}: not a file path",
                        dest.display()
                    ))
                })?;
            let temp = dest.with_file_name(format!(".{name}.upload-{}", crate::fs::random_hex(6)));
            crate::fs::guard_agent(&dest)?;
            if std::fs::metadata(&dest).is_ok_and(|m| m.is_dir()) {
                return Err(ConnectError::invalid_argument(format!(
                    "write {}: is a directory",
                    dest.display()
                )));
            }
            // Errors name the file the client asked for, not the temporary one.
            let file = crate::fs::open_for_write(&temp, mode.or(existing_mode)).map_err(|e| {
                ConnectError::new(
                    e.code,
                    e.message
                        .replace(&temp.display().to_string(), &dest.display().to_string()),
                )
            })?;
            Ok((dest, temp, file))
        })
        .await?;
        Ok(Self {
            dest,
            temp,
            file: tokio::fs::File::from_std(file),
            id: id2,
        })
    }

    async fn write(&mut self, chunk: &[u8]) -> Result<(), ConnectError> {
        self.file
            .write_all(chunk)
            .await
            .map_err(|e| crate::fs::io_error("write", &self.dest, &e))
    }

    async fn commit(mut self) -> Result<WrittenFile, ConnectError> {
        self.file
            .flush()
            .await
            .map_err(|e| crate::fs::io_error("write", &self.dest, &e))?;
        let (temp, dest) = (self.temp.clone(), self.dest.clone());
        as_user(&self.id, move || {
            std::fs::rename(&temp, &dest).map_err(|e| {
                let _ = std::fs::remove_file(&temp);
                crate::fs::io_error("write", &dest, &e)
            })
        })
        .await?;
        Ok(WrittenFile {
            name: self
                .dest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            kind: "file".into(),
            path: self.dest.display().to_string(),
        })
    }

    async fn abort(self) {
        let temp = self.temp.clone();
        let _ = as_user(&self.id, move || {
            let _ = std::fs::remove_file(&temp);
            Ok(())
        })
        .await;
    }
}

/// The path a chain of symlinks ends at (the last one may not exist).
fn follow_links(mut path: PathBuf) -> Result<PathBuf, ConnectError> {
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&path)
                    .map_err(|e| crate::fs::io_error("read link", &path, &e))?;
                path = match path.parent() {
                    Some(parent) if target.is_relative() => parent.join(target),
                    _ => target,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(ConnectError::invalid_argument(format!(
        "write {}: too many levels of symbolic links",
        path.display()
    )))
}

/// Decompresses a gzip upload as it streams in.
struct Gunzip(flate2::write::GzDecoder<Vec<u8>>);

impl Gunzip {
    fn new() -> Self {
        Self(flate2::write::GzDecoder::new(Vec::new()))
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<Vec<u8>, ConnectError> {
        use std::io::Write;
        self.0.write_all(chunk).map_err(|e| {
            ConnectError::invalid_argument(format!("the upload is not valid gzip: {e}"))
        })?;
        Ok(std::mem::take(self.0.get_mut()))
    }

    fn finish(mut self) -> Result<Vec<u8>, ConnectError> {
        self.0.try_finish().map_err(|e| {
            ConnectError::invalid_argument(format!("the gzip upload is incomplete: {e}"))
        })?;
        Ok(std::mem::take(self.0.get_mut()))
    }
}

async fn copy_body(
    mut upload: Upload,
    mut body: Incoming,
    gzip: bool,
) -> Result<WrittenFile, ConnectError> {
    let mut gunzip = gzip.then(Gunzip::new);
    let result: Result<(), ConnectError> = async {
        loop {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        match &mut gunzip {
                            Some(g) => upload.write(&g.feed(data)?).await?,
                            None => upload.write(data).await?,
                        }
                    }
                }
                Some(Err(e)) => {
                    return Err(ConnectError::new(
                        Code::Canceled,
                        format!("upload interrupted: {e}"),
                    ));
                }
            }
        }
        if let Some(g) = gunzip.take() {
            upload.write(&g.finish()?).await?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => upload.commit().await,
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

fn parse_mode(query: &HashMap<String, String>) -> Result<Option<u32>, ConnectError> {
    match query.get("mode") {
        None => Ok(None),
        Some(m) => u32::from_str_radix(m, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(Some)
            .ok_or_else(|| {
                ConnectError::invalid_argument(format!(
                    "invalid mode {m:?}: expected octal such as 644"
                ))
            }),
    }
}

pub async fn upload(agent: Arc<Agent>, req: Request<Incoming>) -> Response<Body> {
    match upload_inner(agent, req).await {
        Ok(written) => {
            let json = serde_json::to_vec(&written).expect("written files serialize");
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(capsule_protocol::client::full_body(json))
                .expect("static response parts are valid")
        }
        Err(e) => plain_error(&e),
    }
}

async fn upload_inner(
    agent: Arc<Agent>,
    req: Request<Incoming>,
) -> Result<Vec<WrittenFile>, ConnectError> {
    let query = parse_query(req.uri().query());
    let id = identity(&agent, req.headers(), &query)?;
    let mode = parse_mode(&query)?;
    let query_path = query.get("path").filter(|p| !p.is_empty()).cloned();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let gzip = match req
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.as_bytes())
    {
        None | Some(b"identity") => false,
        Some(b"gzip") => true,
        Some(other) => {
            return Err(ConnectError::new(
                Code::Unimplemented,
                format!(
                    "Content-Encoding {:?} is not supported for uploads (gzip and identity are)",
                    String::from_utf8_lossy(other)
                ),
            ));
        }
    };

    if content_type.starts_with("multipart/form-data") {
        if gzip {
            return Err(ConnectError::invalid_argument(
                "gzip is only supported for application/octet-stream uploads",
            ));
        }
        let boundary = multer::parse_boundary(&content_type)
            .map_err(|e| ConnectError::invalid_argument(format!("multipart upload: {e}")))?;
        // The body goes to the parser through a channel, so that what follows
        // the closing boundary (a final CRLF, an epilogue) is still read
        // before the answer: an unread request body makes the connection
        // close under a client still sending.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, hyper::Error>>(4);
        let reader = tokio::spawn(feed_and_drain(req.into_body(), tx));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let multipart = multer::Multipart::new(stream, boundary);
        let result = write_parts(&id, mode, query_path, multipart).await;
        let _ = reader.await;
        return result;
    }

    let target = query_path
        .ok_or_else(|| ConnectError::invalid_argument("upload needs a path query parameter"))?;
    let dest = resolve(&target, &id)?;
    let up = Upload::begin(&id, dest, mode).await?;
    Ok(vec![copy_body(up, req.into_body(), gzip).await?])
}

/// Writes each part of a multipart upload to its file.
async fn write_parts(
    id: &Identity,
    mode: Option<u32>,
    query_path: Option<String>,
    mut multipart: multer::Multipart<'static>,
) -> Result<Vec<WrittenFile>, ConnectError> {
    let mut written = Vec::new();
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| ConnectError::invalid_argument(format!("multipart upload: {e}")))?
    {
        let target = match (&query_path, field.file_name()) {
            (Some(p), _) if written.is_empty() => p.clone(),
            (_, Some(name)) if !name.is_empty() => name.to_owned(),
            (Some(p), None) => p.clone(),
            _ => {
                return Err(ConnectError::invalid_argument(
                    "multipart upload: a part has no file name and no path was given",
                ));
            }
        };
        let dest = resolve(&target, id)?;
        let mut up = Upload::begin(id, dest, mode).await?;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if let Err(e) = up.write(&chunk).await {
                        up.abort().await;
                        return Err(e);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    up.abort().await;
                    return Err(ConnectError::invalid_argument(format!(
                        "multipart upload: {e}"
                    )));
                }
            }
        }
        written.push(up.commit().await?);
    }
    Ok(written)
}

/// Most bytes read and dropped after a multipart body's closing boundary.
const MAX_EPILOGUE: usize = 1 << 20;

/// Passes the body's data to `tx`; once the parser stops listening, reads
/// what is left (up to `MAX_EPILOGUE`) so the request ends cleanly.
async fn feed_and_drain(
    mut body: Incoming,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, hyper::Error>>,
) {
    use http_body_util::BodyExt;
    let mut dropped = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if tx.is_closed() {
                    dropped += data.len();
                    if dropped > MAX_EPILOGUE {
                        return;
                    }
                } else if let Err(returned) = tx.send(Ok(data)).await {
                    dropped += returned.0.map(|d| d.len()).unwrap_or(0);
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("path=%2Fworkspace%2Fa%20b.txt&username=user&x"));
        assert_eq!(q["path"], "/workspace/a b.txt");
        assert_eq!(q["username"], "user");
        assert_eq!(q["x"], "");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("a+b"), "a b");
    }
}
