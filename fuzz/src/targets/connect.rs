//! The agent protocol: Connect envelopes as the server reads the agent's
//! streams and the agent reads the server's, end-of-stream messages, and
//! error bodies (`client::error_from_body`).

use capsule_protocol::client::error_from_body;
use capsule_protocol::connect::{
    Code, ConnectError, EndStream, EnvelopeDecoder, FLAG_COMPRESSED, FLAG_END_STREAM, FrameError,
    encode_envelope,
};

use super::{ensure, sig};
use crate::{Rng, Target};

/// The decoder's limit in this target: small, so oversized frames are common.
const MAX: usize = 4096;

pub const FRAMES: Target = Target {
    name: "connect_frames",
    about: "EnvelopeDecoder on arbitrary bytes and chunkings; decode(encode(x)) == x; end-of-stream messages",
    seeds: || {
        let mut wire = Vec::new();
        wire.extend_from_slice(&encode_envelope(
            0,
            br#"{"event":{"data":{"stdout":"aGk="}}}"#,
        ));
        wire.extend_from_slice(&encode_envelope(
            FLAG_END_STREAM,
            br#"{"error":{"code":"not_found","message":"no"}}"#,
        ));
        vec![
            wire,
            encode_envelope(FLAG_END_STREAM, b"{}").to_vec(),
            vec![0, 0, 0, 0x10, 0x01, b'x'],
            vec![1, 0, 0, 0, 1, b'x'],
            vec![0, 0xff, 0xff, 0xff, 0xff],
        ]
    },
    dictionary: &[
        b"\x00\x00\x00\x00\x02{}",
        b"\x02\x00\x00\x00\x02{}",
        b"\x01",
        b"\x03",
        b"\xff\xff\xff\xff",
        b"\x00\x00\x10\x00",
        b"{\"error\":{\"code\":\"internal\",\"message\":\"x\"}}",
        b"{\"error\":null}",
    ],
    run: frames,
};

/// What a decoder yields for some bytes: the envelopes (flags, data), the
/// error that stopped it, and whether `finish` found nothing left over.
type Decoded = (Vec<(u8, Vec<u8>)>, Option<FrameError>, bool);

/// Everything a decoder yields for `input` fed in the given chunk sizes.
fn decode(input: &[u8], chunks: &mut dyn FnMut() -> usize) -> Decoded {
    let mut dec = EnvelopeDecoder::new(MAX);
    let mut out = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let n = chunks().clamp(1, input.len() - at);
        dec.push(&input[at..at + n]);
        at += n;
        loop {
            match dec.next_envelope() {
                Ok(Some(env)) => out.push((env.flags, env.data.to_vec())),
                Ok(None) => break,
                Err(e) => return (out, Some(e), false),
            }
        }
    }
    let clean = dec.finish().is_ok();
    (out, None, clean)
}

fn frames(input: &[u8]) -> Result<u64, String> {
    // Longer inputs only repeat what shorter ones show, more slowly.
    let input = &input[..input.len().min(8192)];
    // Arbitrary bytes: whole, and in chunk sizes drawn from the input.
    let (whole, err, clean) = decode(input, &mut || usize::MAX);
    let mut rng = Rng::new(
        input
            .iter()
            .fold(7u64, |a, &b| a.wrapping_mul(31) ^ u64::from(b)),
    );
    let (chunked, err2, clean2) = decode(input, &mut || 1 + rng.below(9));
    ensure(whole == chunked && err == err2 && clean == clean2, || {
        "the envelopes depend on how the bytes were chunked".into()
    })?;
    let mut used = 0;
    for (flags, data) in &whole {
        ensure(data.len() <= MAX, || {
            "an envelope above the limit was accepted".into()
        })?;
        ensure(flags & FLAG_COMPRESSED == 0, || {
            "a compressed envelope was accepted".into()
        })?;
        used += 5 + data.len();
        if flags & FLAG_END_STREAM != 0
            && let Ok(end) = serde_json::from_slice::<EndStream>(data)
            && let Some(e) = end.error
        {
            let back: ConnectError = serde_json::from_slice(&e.to_json())
                .map_err(|x| format!("a Connect error does not read back: {x}"))?;
            ensure(back == e, || {
                "a Connect error changed on a round trip".into()
            })?;
        }
    }
    ensure(used <= input.len(), || {
        "more bytes decoded than given".into()
    })?;
    if err.is_none() {
        ensure(clean == (used == input.len()), || {
            format!(
                "finish() says clean={clean} with {used} of {} bytes used",
                input.len()
            )
        })?;
    }
    // Framing what we read yields the same bytes back.
    let mut again = Vec::new();
    for (flags, data) in &whole {
        again.extend_from_slice(&encode_envelope(*flags, data));
    }
    ensure(again == input[..used], || {
        "re-encoding the envelopes changed the bytes".into()
    })?;
    // And messages cut from the input survive encode then decode.
    let messages: Vec<&[u8]> = input
        .chunks(1 + usize::from(input.first().copied().unwrap_or(0)))
        .collect();
    let mut wire = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let flags = if i + 1 == messages.len() {
            FLAG_END_STREAM
        } else {
            0
        };
        wire.extend_from_slice(&encode_envelope(flags, m));
    }
    let mut rng = Rng::new(input.len() as u64);
    let (decoded, e, ok) = decode(&wire, &mut || 1 + rng.below(64));
    ensure(e.is_none() && ok, || {
        "a valid stream failed to decode".into()
    })?;
    let data: Vec<&[u8]> = decoded.iter().map(|(_, d)| d.as_slice()).collect();
    ensure(data == messages, || "decode(encode(x)) != x".into())?;
    Ok(sig((
        whole.len().min(8),
        err.map(|e| std::mem::discriminant(&e)),
        clean,
    )))
}

pub const ERRORS: Target = Target {
    name: "connect_errors",
    about: "error_from_body on any status and body; Code mappings",
    seeds: || {
        [
            &br#"{"code":"not_found","message":"no file"}"#[..],
            br#"{"code":404,"message":"read /x: no such file"}"#,
            b"oops",
            br#"{"code":"nope"}"#,
            b"",
        ]
        .iter()
        .map(|b| {
            let mut v = vec![0x01, 0x94];
            v.extend_from_slice(b);
            v
        })
        .collect()
    },
    dictionary: &[
        b"\"code\":",
        b"\"message\":",
        b"\"unauthenticated\"",
        b"\"internal\"",
        b"404",
        b"null",
        b"\xf0\x9f\x92",
    ],
    run: errors,
};

fn errors(input: &[u8]) -> Result<u64, String> {
    let (status, body) = match input {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => (500, input),
    };
    let status = http::StatusCode::from_u16(status.clamp(100, 999))
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let e = error_from_body(status, body);
    // A body that is not an error message is quoted, but only its start.
    // At most 512 bytes of the body, each at most a 3-byte replacement character.
    ensure(
        e.message.len() <= 64 + 3 * 512
            || serde_json::from_slice::<serde_json::Value>(body).is_ok(),
        || format!("an unparsed body was quoted at {} bytes", e.message.len()),
    )?;
    let _ = Code::from_http_status(status.as_u16()).http_status();
    let _ = e.code.http_status();
    Ok(sig(e.code.as_str()))
}
