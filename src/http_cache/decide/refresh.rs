//! How a stored head is updated without its body: merged with a 304 (RFC 9111 4.3.4) or
//! freshened by a 200 to HEAD (4.3.5), and which fields belong to one client only.
//!
//! Invariant: pure; a merged head never keeps a per-client field, and fields describing the
//! stored body (length, coding, range, validator) are never taken from the 304.

use super::*;

/// Fields a 304 never updates: those that describe the stored body, its framing, coding,
/// range, digest and the validator that selected it (RFC 9111 3.2, 4.3.4).
const NOT_UPDATED: &[&str] = &[
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "content-range",
    "content-md5",
    "etag",
];

/// Response fields that belong to the one client whose request produced them and never to a
/// stored response other clients receive: cookies being set, and the [`withheld_fields`].
/// Names are lower-case.
pub fn per_client_fields(res: &HeaderMap) -> Vec<String> {
    let mut out = vec!["set-cookie".to_string(), "set-cookie2".to_string()];
    out.extend(withheld_fields(res));
    out
}

/// The fields a qualified `private="..."` or `no-cache="..."` names (RFC 9111 5.2.2.4,
/// 5.2.2.7): a shared cache stores the response without them, so they are never served from
/// the cache (only with the response that carried them, or after a revalidation that
/// sends them again). Names are lower-case.
pub fn withheld_fields(res: &HeaderMap) -> Vec<String> {
    let cc = parse_cache_control(res);
    let mut out = Vec::new();
    for (name, value) in cc.iter() {
        if let ("private" | "no-cache", Some(list)) = (name, value) {
            out.extend(
                list.split(',')
                    .map(|n| n.trim().to_ascii_lowercase())
                    .filter(|n| !n.is_empty()),
            );
        }
    }
    out
}

/// A 304 merged into a stored head (RFC 9111 4.3.4).
#[derive(Debug, Clone)]
pub struct Refreshed {
    /// The head to store: the stored one updated by the 304, without [`per_client_fields`].
    pub head: StoredHead,
    /// The 304's [`per_client_fields`]: sent to the client whose request revalidated, never
    /// stored (a rolling session cookie must not reach the next client).
    pub client_only: HeaderMap,
}

fn trim(v: &header::HeaderValue) -> &[u8] {
    v.as_bytes().trim_ascii()
}

/// RFC 9111 4.3.4 selection: does the 304 refer to this stored response?
fn validators_match(head: &StoredHead, h304: &HeaderMap) -> bool {
    let old_etag = head.etag().map(trim);
    let weak = |e: &[u8]| e.strip_prefix(b"W/").map_or(e.to_vec(), <[u8]>::to_vec);
    if let Some(new) = h304.get(header::ETAG).map(trim) {
        return if new.starts_with(b"W/") {
            old_etag.is_some_and(|old| weak(old) == weak(new))
        } else {
            old_etag == Some(new)
        };
    }
    if let Some(new_lm) = h304.get(header::LAST_MODIFIED).map(trim) {
        return head.last_modified().map(trim) == Some(new_lm);
    }
    // No validator in the 304: it answers the conditional request made with this stored
    // response's own validators (this is the revalidation of one stored response; a Vary
    // miss that offered several goes through `selects_for_another_request`, which needs a
    // strong ETag), so it says that response "can be updated and reused" (RFC 9111 4.3.3).
    // Origins send such 304s: `Last-Modified` need not be repeated (RFC 9110 15.4.5), and
    // servers that leave out the ETag too are common. Read to the letter, 4.3.4's third
    // bullet would select nothing here and every revalidation of such an origin would cost
    // a 304 and then a full 200 (what hoard did in session 11; the http-cache-tests suite
    // expects reuse, as browsers and other caches do).
    true
}

/// `headers`' `ETag` when it is strong. Only a strong validator identifies one
/// representation, content-coding included (RFC 9110 8.8.1, 8.8.3); a weak one says
/// "equivalent", and origins reuse weak tags across codings (nginx gives the gzip and the br
/// variant of one file the same `W/"..."`).
pub fn strong_etag(headers: &HeaderMap) -> Option<&header::HeaderValue> {
    headers
        .get(header::ETAG)
        .filter(|t| t.as_bytes().trim_ascii_start().starts_with(b"\""))
}

/// RFC 9111 4.3.1, 4.3.4: does a 304 answering a request `head` was not stored for (a Vary
/// miss offered the stored variants' tags) select `head`? Only when the 304 names `head`'s
/// strong ETag: a weak match, a `Last-Modified` match or no validator could select another
/// coding than the request accepts, which then answers it and every later request like it.
pub fn selects_for_another_request(head: &StoredHead, h304: &HeaderMap) -> bool {
    match (strong_etag(&head.response_headers), strong_etag(h304)) {
        (Some(stored), Some(new)) => trim(stored) == trim(new),
        _ => false,
    }
}

/// Merges a 304 into `head` (RFC 9111 4.3.4 / 3.2): each field in the 304 replaces all stored
/// lines of that name or is added; hop-by-hop and [`NOT_UPDATED`] fields are ignored, and
/// [`per_client_fields`] (judged on the merged `Cache-Control`) go to
/// [`Refreshed::client_only`], never into the stored head. Body length, digest, status and
/// `fetch_delta` stay. `None` when the 304's validators do not select this entry (or the
/// response is not a 304). Whether the merged response may still be shared is the caller's
/// question ([`storability`] on [`StoredHead::response_parts`]).
pub fn refresh(
    head: &StoredHead,
    req: &request::Parts,
    not_modified: &response::Parts,
    now_request: SystemTime,
    now_response: SystemTime,
) -> Option<Refreshed> {
    if not_modified.status != StatusCode::NOT_MODIFIED
        || !validators_match(head, &not_modified.headers)
    {
        return None;
    }
    Some(merge_head(
        head,
        req,
        &not_modified.headers,
        now_request,
        now_response,
    ))
}

/// The field merge shared by a 304 and a HEAD response (RFC 9111 3.2).
fn merge_head(
    head: &StoredHead,
    req: &request::Parts,
    incoming: &HeaderMap,
    now_request: SystemTime,
    now_response: SystemTime,
) -> Refreshed {
    let mut incoming = incoming.clone();
    strip_hop_by_hop(&mut incoming);
    let mut merged = head.response_headers.clone();
    for name in incoming.keys() {
        if NOT_UPDATED.contains(&name.as_str()) {
            continue;
        }
        merged.remove(name);
        for v in incoming.get_all(name) {
            merged.append(name.clone(), v.clone());
        }
    }
    let mut client_only = HeaderMap::new();
    for name in per_client_fields(&merged) {
        let Ok(name) = header::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        merged.remove(&name);
        for v in incoming.get_all(&name) {
            client_only.append(name.clone(), v.clone());
        }
    }
    let vary = Vary::from_headers(&merged);
    Refreshed {
        head: StoredHead {
            request_headers: stored_request_headers(&req.headers, &vary),
            response_headers: merged,
            request_time: now_request,
            response_time: now_response,
            vary,
            memo: Default::default(),
            ..head.clone()
        },
        client_only,
    }
}

/// What a `200` response to a `HEAD` the cache forwarded does to the stored GET response
/// (RFC 9111 4.3.5).
#[derive(Debug, Clone)]
// Not boxed: built once per HEAD response and consumed at once, like `HeadRecord`.
#[allow(clippy::large_enum_variant)]
pub enum HeadUpdate {
    /// Validators (and `Content-Length`, when given) match: the stored header fields and
    /// freshness are updated like by a 304; fields the HEAD response lacks are kept.
    Freshened(Refreshed),
    /// The HEAD response describes another representation: the stored one is invalidated.
    Invalidate,
    /// Not a 200: the stored response is left alone.
    Ignore,
}

/// RFC 9111 4.3.5 freshening with HEAD: the HEAD response's `ETag` and `Last-Modified` must
/// equal the stored ones where either side has them (a validator present on one side only is
/// a mismatch), and its `Content-Length`, when present, the stored body length.
pub fn freshen_with_head(
    head: &StoredHead,
    req: &request::Parts,
    res: &response::Parts,
    now_request: SystemTime,
    now_response: SystemTime,
) -> HeadUpdate {
    if res.status != StatusCode::OK {
        return HeadUpdate::Ignore;
    }
    let same = |name: header::HeaderName| {
        head.response_headers.get(&name).map(trim) == res.headers.get(&name).map(trim)
    };
    let length_ok = res
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim().parse::<u64>().ok() == Some(head.body_len));
    if !(same(header::ETAG) && same(header::LAST_MODIFIED) && length_ok) {
        return HeadUpdate::Invalidate;
    }
    HeadUpdate::Freshened(merge_head(
        head,
        req,
        &res.headers,
        now_request,
        now_response,
    ))
}
