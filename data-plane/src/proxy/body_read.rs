//! Reading a request body into memory, within bounds: a declared `Content-Length` over the
//! limit is refused before a byte is read; a compressed body (`content-encoding: gzip`,
//! `deflate`, `zstd`) is decoded as it arrives, with the limit on the *decoded* size (a
//! zip bomb is refused at the limit, never inflated); every byte kept is charged to the
//! body budget (`body_budget.rs`) before it is stored.

use std::pin::Pin;

use async_compression::tokio::bufread::{GzipDecoder, ZlibDecoder, ZstdDecoder};
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http_body_util::{BodyExt, BodyStream};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::io::StreamReader;
use tollgate_shared::ErrorCode;

use super::body::limit_text;
use super::body_budget::Charge;
use super::errors::ClientError;

/// Decoded bytes read from a decoder at a time (and so the most a decoder can inflate
/// past the limit before it is stopped).
const DECODE_CHUNK: usize = 64 << 10;

/// Largest zstd window accepted: 8 MiB (window log 23), what `zstd` uses up to level 19.
/// A frame may ask for up to 2 GiB of window memory; larger ones are refused as invalid.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// How the body is encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    /// HTTP's `deflate`: the zlib format (RFC 9110 §8.4.1.2).
    Deflate,
    Zstd,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
            Self::Zstd => "zstd",
        }
    }
}

/// The body's `content-encoding`: one of the supported codings, or 415.
pub fn encoding(headers: &HeaderMap) -> Result<Encoding, ClientError> {
    let mut codings = headers
        .get_all(CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity");
    let Some(first) = codings.next() else {
        return Ok(Encoding::Identity);
    };
    let unsupported = |what: &str| {
        ClientError::new(
            ErrorCode::UnsupportedContentEncoding,
            format!(
                "Unsupported Content-Encoding {what:?}: send the body uncompressed or with one of gzip, deflate, zstd"
            ),
        )
    };
    if codings.next().is_some() {
        return Err(unsupported(
            &headers
                .get_all(CONTENT_ENCODING)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect::<Vec<_>>()
                .join(", "),
        ));
    }
    match first.as_str() {
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "deflate" => Ok(Encoding::Deflate),
        "zstd" => Ok(Encoding::Zstd),
        other => Err(unsupported(other)),
    }
}

fn too_large(limit: usize, encoding: Encoding) -> ClientError {
    let decoded = if encoding == Encoding::Identity {
        ""
    } else {
        " (decoded)"
    };
    ClientError::new(
        ErrorCode::BodyTooLarge,
        format!(
            "Request body too large, limit is {}{decoded}",
            limit_text(limit)
        ),
    )
}

fn unreadable() -> ClientError {
    ClientError::new(ErrorCode::InvalidRequest, "Failed to read request body")
}

/// The declared `Content-Length`, when there is one that parses.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Reads the whole body (decoded), at most `limit` bytes, charging `charge` for every
/// byte kept. Returns the bytes and the charge, which the caller holds while it holds
/// the body (or what it parsed from it).
pub async fn read<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
    mut charge: Charge,
) -> Result<(Bytes, Charge), ClientError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let encoding = encoding(headers)?;
    // Refused before reading: the wire bytes alone are over the limit (for a compressed
    // body the decoded size can only be larger, give or take the framing).
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit, encoding));
    }
    let bytes = match encoding {
        Encoding::Identity => read_plain(body, limit, declared, &mut charge).await?,
        coded => {
            let wire = BodyStream::new(body)
                .try_filter_map(|frame| futures::future::ready(Ok(frame.into_data().ok())))
                .map_err(std::io::Error::other);
            let reader = StreamReader::new(wire);
            let decoder: Pin<Box<dyn AsyncRead + Send>> = match coded {
                Encoding::Gzip => Box::pin(GzipDecoder::new(reader)),
                Encoding::Deflate => Box::pin(ZlibDecoder::new(reader)),
                _ => Box::pin(ZstdDecoder::with_params(
                    reader,
                    &[async_compression::zstd::DParameter::window_log_max(
                        ZSTD_WINDOW_LOG_MAX,
                    )],
                )),
            };
            read_decoded(decoder, coded, limit, &mut charge).await?
        }
    };
    Ok((bytes, charge))
}

/// An uncompressed body. A declared length is charged (and allocated) up front, so
/// concurrent bodies do not each hold part of the budget while waiting for the rest.
async fn read_plain<B>(
    body: B,
    limit: usize,
    declared: Option<u64>,
    charge: &mut Charge,
) -> Result<Bytes, ClientError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut out = BytesMut::new();
    if let Some(n) = declared.and_then(|n| usize::try_from(n).ok()) {
        charge
            .grow(n)
            .await
            .map_err(|f| f.client_error(charge.wait()))?;
        out.reserve(n);
    }
    let body = std::pin::pin!(body);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| unreadable())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let len = out.len() + data.len();
        if len > limit {
            return Err(too_large(limit, Encoding::Identity));
        }
        if len > charge.bytes() {
            charge
                .grow(len - charge.bytes())
                .await
                .map_err(|f| f.client_error(charge.wait()))?;
        }
        out.extend_from_slice(&data);
    }
    Ok(out.freeze())
}

/// A compressed body, decoded a chunk at a time: each decoded chunk is checked against
/// the limit and charged before it is kept.
async fn read_decoded(
    mut decoder: Pin<Box<dyn AsyncRead + Send>>,
    encoding: Encoding,
    limit: usize,
    charge: &mut Charge,
) -> Result<Bytes, ClientError> {
    let mut out = BytesMut::new();
    let mut chunk = vec![0u8; DECODE_CHUNK];
    loop {
        let n = decoder.read(&mut chunk).await.map_err(|e| {
            tracing::debug!(error = %e, encoding = encoding.name(), "request body not decodable");
            ClientError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "Failed to decode the {} request body (Content-Encoding: {})",
                    encoding.name(),
                    encoding.name()
                ),
            )
        })?;
        if n == 0 {
            break;
        }
        let len = out.len() + n;
        if len > limit {
            return Err(too_large(limit, encoding));
        }
        charge
            .grow(n)
            .await
            .map_err(|f| f.client_error(charge.wait()))?;
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(encoding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_ENCODING, HeaderValue::from_str(encoding).unwrap());
        h
    }

    #[test]
    fn encodings() {
        assert_eq!(encoding(&HeaderMap::new()), Ok(Encoding::Identity));
        assert_eq!(encoding(&with("identity")), Ok(Encoding::Identity));
        assert_eq!(encoding(&with("GZIP")), Ok(Encoding::Gzip));
        assert_eq!(encoding(&with("x-gzip")), Ok(Encoding::Gzip));
        assert_eq!(encoding(&with(" deflate ")), Ok(Encoding::Deflate));
        assert_eq!(encoding(&with("zstd")), Ok(Encoding::Zstd));
        let e = encoding(&with("br")).unwrap_err();
        assert_eq!(e.status().as_u16(), 415);
        assert_eq!(
            e.message,
            "Unsupported Content-Encoding \"br\": send the body uncompressed or with one of gzip, deflate, zstd"
        );
        assert_eq!(
            encoding(&with("gzip, zstd")).unwrap_err().status().as_u16(),
            415
        );
    }
}
