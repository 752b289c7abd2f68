//! The Lua scripts the tier runs in Redis (row writes, lease release, purge), each atomic on
//! the keys of one URL (one hash tag, so one cluster slot).
//!
//! Invariant: a script touches only keys of the URL it was called for.

pub(super) const PUT_SCRIPT: &str = r#"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"#;

/// Replace the header of an existing row, keeping its body section byte for byte; only a
/// row of the same version as the new header (1: the body section is length and xxh3, 16
/// bytes; 2, sealed: a 32-byte head tag ends the header, the body section is length and
/// tag, 40 bytes).
pub(super) const PUT_META_SCRIPT: &str = r#"
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
local function u32(s, i)
  local a, b, c, d = string.byte(s, i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
local v = string.byte(old, 1)
if #old < 9 or (v ~= 1 and v ~= 2) or string.byte(ARGV[1], 1) ~= v then return 0 end
local klen = u32(old, 2)
if #old < 9 + klen then return 0 end
if string.sub(old, 6, 5 + klen) ~= ARGV[4] then return 0 end
local mlen = u32(old, 6 + klen)
local off = 10 + klen + mlen
local section = 16
if v == 2 then off = off + 32; section = 40 end
if #old < off + section - 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. string.sub(old, off), 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"#;

/// Compare-and-delete of a lease; publishes on `ARGV[2]` always (`ARGV[4]` = "1") or only
/// when the lease was ours and got deleted.
pub(super) const RELEASE_SCRIPT: &str = r#"
local r = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then r = redis.call('DEL', KEYS[1]) end
if ARGV[4] == '1' or r == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return r
"#;

/// Delete every row of a URL and its rows set, then publish the invalidation.
pub(super) const PURGE_SCRIPT: &str = r#"
local ids = redis.call('SMEMBERS', KEYS[1])
local n = 0
for _, id in ipairs(ids) do n = n + redis.call('DEL', ARGV[1] .. id) end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return n
"#;

pub(super) struct Scripts {
    pub(super) put: redis::Script,
    pub(super) put_meta: redis::Script,
    pub(super) release: redis::Script,
    pub(super) purge: redis::Script,
}
