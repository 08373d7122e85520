//! The one SSE parser of the tests, faithful to the WHATWG event-stream rules: lines end
//! in CRLF, LF or CR; `data:` lines join with `\n`; one space after the colon is dropped
//! and nothing else is trimmed; `:` lines are comments (keep-alive pings). Each event
//! keeps the exact text of its block, so a test can compare bytes, not just meanings.

use std::ops::Deref;

use serde_json::Value;

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field, if any.
    pub id: Option<String>,
    /// The block exactly as received, comments and line endings included, up to and
    /// including the blank line that ended it (for an unterminated last block: what
    /// arrived).
    pub raw: String,
}

impl SseEvent {
    /// The `event:` field, `""` when there is none.
    pub fn name(&self) -> &str {
        self.event.as_deref().unwrap_or("")
    }

    /// `data` as JSON; panics (naming the data) when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {:?}", self.data))
    }

    /// `event:`, else the `type` of the data.
    pub fn kind(&self) -> Option<String> {
        self.event.clone().or_else(|| {
            self.json()
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
    }
}

/// A parsed stream: its events in order (it derefs to them) and its comments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sse {
    pub events: Vec<SseEvent>,
    /// Comment lines without the leading `:` (a bare `:` keep-alive is `""`), in order.
    pub comments: Vec<String>,
}

impl Deref for Sse {
    type Target = [SseEvent];

    fn deref(&self) -> &[SseEvent] {
        &self.events
    }
}

/// Splits `text` into lines, each with its terminator (CRLF, LF or CR; none for an
/// unterminated last line).
fn lines(text: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (line, end_len) = match rest.find(['\r', '\n']) {
            None => (rest, 0),
            Some(i) if rest[i..].starts_with("\r\n") => (&rest[..i], 2),
            Some(i) => (&rest[..i], 1),
        };
        let whole = &rest[..line.len() + end_len];
        rest = &rest[whole.len()..];
        Some((line, whole))
    })
}

/// Parses an event stream as read from the wire. Blocks without data (comment-only
/// keep-alives) dispatch no event; an unterminated last block is included, so a test can
/// parse a stream cut short.
pub fn parse_sse(text: &str) -> Sse {
    let mut out = Sse::default();
    let mut raw = String::new();
    let mut event = None;
    let mut id = None;
    let mut data: Option<String> = None;
    let dispatch = |raw: &mut String,
                    event: &mut Option<String>,
                    id: &mut Option<String>,
                    data: &mut Option<String>,
                    events: &mut Vec<SseEvent>| {
        if let Some(data) = data.take() {
            events.push(SseEvent {
                event: event.take(),
                data,
                id: id.take(),
                raw: std::mem::take(raw),
            });
        }
        *event = None;
        *id = None;
        raw.clear();
    };
    for (line, whole) in lines(text) {
        raw.push_str(whole);
        if line.is_empty() {
            dispatch(&mut raw, &mut event, &mut id, &mut data, &mut out.events);
            continue;
        }
        if let Some(comment) = line.strip_prefix(':') {
            out.comments.push(comment.to_owned());
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "id" => id = Some(value.to_owned()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            _ => {}
        }
    }
    dispatch(&mut raw, &mut event, &mut id, &mut data, &mut out.events);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_multi_line_data_and_every_line_ending() {
        let text = "event: a\r\ndata: {\"x\":\r\ndata:  1}\r\n\r\n: ping\n\nid: 7\rdata:two\r\r";
        let sse = parse_sse(text);
        assert_eq!(sse.len(), 2);
        assert_eq!(sse[0].name(), "a");
        assert_eq!(
            sse[0].data, "{\"x\":\n 1}",
            "joined with \\n, one space dropped"
        );
        assert_eq!(sse[0].json()["x"], 1);
        assert_eq!(sse[0].raw, "event: a\r\ndata: {\"x\":\r\ndata:  1}\r\n\r\n");
        assert_eq!(sse[1].id.as_deref(), Some("7"));
        assert_eq!(sse[1].data, "two");
        assert_eq!(sse[1].raw, "id: 7\rdata:two\r\r");
        assert_eq!(sse.comments, [" ping"]);
    }

    #[test]
    fn empty_data_is_an_event_and_a_cut_block_is_kept() {
        let sse = parse_sse("data:\n\n:\n\nevent: e\ndata: par");
        assert_eq!(sse.len(), 2);
        assert_eq!(sse[0].data, "");
        assert_eq!(sse[1].name(), "e");
        assert_eq!(sse[1].data, "par");
        assert_eq!(sse[1].raw, "event: e\ndata: par");
        assert_eq!(sse.comments, [""]);
    }
}
