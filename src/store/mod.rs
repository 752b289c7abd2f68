//! Disk-backed key/value store modelled on Python's diskcache. Knows nothing about HTTP.
