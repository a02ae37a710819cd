//! The Lua scripts of the Redis transport (`reactive::redis`): each step of a lease, a
//! settlement or a restore is one script, so it is atomic on the broker.

/// Reap expired leases and claims, move due delayed messages, then pop one message into a
/// new lease; when there is none, register the claim for the blocking move.
/// KEYS: leases, claims, delayed, lease list, then the queue's priority lists.
/// ARGV: now ms, lease deadline ms, lease id, lease list prefix, claim deadline ms, max moved.
/// -> {1, payload} or {0, next due ms or -1}.
pub(super) const LEASE_SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[6])
local head = KEYS[5]
for _, set in ipairs({KEYS[1], KEYS[2]}) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, limit)) do
    local list = ARGV[4] .. id
    local msg = redis.call('RPOP', list)
    while msg do
      redis.call('RPUSH', head, msg)
      msg = redis.call('RPOP', list)
    end
    redis.call('ZREM', set, id)
  end
end
for _, msg in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('LPUSH', head, msg)
  redis.call('ZREM', KEYS[3], msg)
end
for i = 5, #KEYS do
  local msg = redis.call('RPOP', KEYS[i])
  if msg then
    redis.call('LPUSH', KEYS[4], msg)
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
    return {1, msg}
  end
end
local next_due = -1
for _, set in ipairs({KEYS[1], KEYS[2], KEYS[3]}) do
  local first = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if first[2] then
    local at = tonumber(first[2])
    if next_due < 0 or at < next_due then next_due = at end
  end
end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
return {0, tostring(next_due)}
"#;

/// After a blocking move delivered: the claim becomes a lease. KEYS: claims, leases, lease
/// list. ARGV: lease id, deadline ms. -> payload, or nil when the claim was reaped meanwhile.
pub(super) const PROMOTE_SCRIPT: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
  return redis.call('LINDEX', KEYS[3], 0)
end
return false
"#;

/// KEYS: leases, lease list. ARGV: lease id. -> 1, or 0 when the lease was lost.
pub(super) const ACK_SCRIPT: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"#;

/// KEYS: leases. ARGV: lease id, new deadline ms.
pub(super) const RENEW_SCRIPT: &str = r#"
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])
  return 1
end
return 0
"#;

/// KEYS: leases, lease list, delayed, queue. ARGV: lease id, payload, not-before ms, now ms.
/// Due now: straight to the tail of the queue (wakes a blocked worker); else delayed.
pub(super) const REQUEUE_SCRIPT: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
  if tonumber(ARGV[3]) <= tonumber(ARGV[4]) then
    redis.call('LPUSH', KEYS[4], ARGV[2])
  else
    redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
  end
  return 1
end
return 0
"#;

/// A message whose lease the broker lost: put back unless a copy is still anywhere in the
/// queue (lists, delayed, lease lists of live leases and claims). Scans the queue: only run
/// when a lease was lost. KEYS: leases, claims, delayed, then the queue's priority lists.
/// ARGV: needle, lease list prefix, payload, not-before ms, now ms, "1" when the needle is
/// the whole payload (else a substring: the delivery tag). -> 1 put back, 0 still there.
pub(super) const RESTORE_SCRIPT: &str = r#"
local needle = ARGV[1]
local exact = ARGV[6] == '1'
local function has(msgs)
  for _, msg in ipairs(msgs) do
    if (exact and msg == needle) or ((not exact) and string.find(msg, needle, 1, true)) then
      return true
    end
  end
  return false
end
for i = 4, #KEYS do
  if has(redis.call('LRANGE', KEYS[i], 0, -1)) then return 0 end
end
if has(redis.call('ZRANGE', KEYS[3], 0, -1)) then return 0 end
for _, set in ipairs({KEYS[1], KEYS[2]}) do
  for _, id in ipairs(redis.call('ZRANGE', set, 0, -1)) do
    if has(redis.call('LRANGE', ARGV[2] .. id, 0, -1)) then return 0 end
  end
end
if tonumber(ARGV[4]) <= tonumber(ARGV[5]) then
  redis.call('LPUSH', KEYS[4], ARGV[3])
else
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
end
return 1
"#;

/// KEYS: leases, lease list, queue. ARGV: lease id. Back at the head, served next.
pub(super) const RELEASE_SCRIPT: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  local msg = redis.call('RPOP', KEYS[2])
  while msg do
    redis.call('RPUSH', KEYS[3], msg)
    msg = redis.call('RPOP', KEYS[2])
  end
  return 1
end
return 0
"#;
