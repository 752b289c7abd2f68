//! What a 304 (or a HEAD's 200) does to the stored entry it revalidated.
//!
//! Invariant: a merged head is asked storability again before it is stored.

use super::*;

/// What a 304 does to the stored entry it revalidated.
pub(super) enum Merged304 {
    /// The merge may be shared: store it (the client also gets `client_only`).
    Store(Refreshed),
    /// The merged response may be shared, but not as the answer to this request (it carried
    /// Authorization, `no-store`...): answer this client from the merge, leave the entry.
    ClientOnly(Refreshed, NotStorable),
    /// The merged response may no longer be shared (`private`, `no-store`, `Vary: *`...):
    /// remove the entry; this client is still answered from the merge.
    Remove(Refreshed, NotStorable),
    /// The 304's validators do not select the entry.
    NoMatch,
}

/// Merge a 304 into `head` and ask storability again, on the response alone (may anyone
/// share it?) and then with the request that was sent (may this exchange update it?).
pub(super) fn merge_304(
    rule: Option<&Rule>,
    req: &Parts,
    head: &StoredHead,
    res: &http::response::Parts,
    (t_req, t_res, delta): (SystemTime, SystemTime, std::time::Duration),
    opts: &LookupOptions,
) -> Merged304 {
    let Some(mut r) = http_cache::refresh(head, req, res, t_req, t_res) else {
        return Merged304::NoMatch;
    };
    r.head.fetch_delta = delta;
    Merged304::classify(rule, req, r, opts)
}

impl Merged304 {
    /// Ask storability again about a merged head (a 304, or a HEAD's 200): on the response
    /// alone (may anyone share it?), then with the request that was sent (may this exchange
    /// update it?).
    pub(super) fn classify(
        rule: Option<&Rule>,
        req: &Parts,
        r: Refreshed,
        opts: &LookupOptions,
    ) -> Self {
        let merged = r.head.response_parts();
        let mut anonymous = req.clone();
        anonymous.headers = HeaderMap::new();
        if let Err(reason) = http_cache::storability_under(rule, &anonymous, &merged, opts) {
            return Merged304::Remove(r, reason);
        }
        // A Range request revalidates the whole stored response; the range is not the
        // exchange's.
        if let Err(reason) = http_cache::storability_under(rule, &without_range(req), &merged, opts)
        {
            return Merged304::ClientOnly(r, reason);
        }
        Merged304::Store(r)
    }
}
