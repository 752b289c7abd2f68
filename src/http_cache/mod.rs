//! Pure HTTP caching logic (RFC 9111, RFC 5861, RFC 9211). Does no I/O; `now` is always a parameter.
