-- Records cache values in their scope's index: appended to cache_set.lua, or sent alone (with
-- EVAL, so never NOSCRIPT) after the values' SETs in the same MULTI/EXEC.
-- KEYS[1]     the scope index zset (<prefix>:{c:<project>}:idx), member = cache key, score = expiry ms
-- ARGV        per entry STRIDE items (STRIDE is defined by what precedes this file): the
--             member (the cache key), the ttl in ms, then what the entry's writer needs
-- Time comes from the server. The index only grows when a write adds members; only then are
-- its expired members pruned (bounded batch), so overwriting a key costs no pruning. The
-- index lives at least as long as its longest-lived member: its expiry is pushed out when a
-- write outlives it, never pulled in.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idx = KEYS[1]
local added, longest = 0, 0
for a = 1, #ARGV, STRIDE do
  local ttl = tonumber(ARGV[a + 1])
  added = added + redis.call('ZADD', idx, now + ttl, ARGV[a])
  if ttl > longest then longest = ttl end
end
if added > 0 then
  local stale = redis.call('ZRANGEBYSCORE', idx, '-inf', now, 'LIMIT', 0, 100)
  if #stale > 0 then
    redis.call('ZREM', idx, unpack(stale))
  end
end
-- PTTL is -1 for an index just created (no expiry yet). The margin covers the gap between
-- TIME and the server's command time that PTTL counts from.
if redis.call('PTTL', idx) < longest + 3 then
  redis.call('PEXPIREAT', idx, now + longest + 3)
end
return #ARGV / STRIDE
