-- Stores cache values of ONE project scope and records them in the scope's index.
-- KEYS[1]     the scope index zset (<prefix>:{c:<project>}:idx), member = cache key, score = expiry ms
-- KEYS[2..n]  the value keys, one per entry
-- ARGV        per entry: member (the cache key), value, ttl in ms
-- Time comes from the server. The index only grows when a write adds members; only then are
-- its expired members pruned (bounded batch), so overwriting a key costs no pruning. The
-- index lives at least as long as its longest-lived member: its expiry is pushed out when a
-- write outlives it, never pulled in.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idx = KEYS[1]
local added, longest = 0, 0
for i = 2, #KEYS do
  local a = (i - 2) * 3
  local ttl_text = ARGV[a + 3]
  local ttl = tonumber(ttl_text)
  redis.call('SET', KEYS[i], ARGV[a + 2], 'PX', ttl_text)
  added = added + redis.call('ZADD', idx, now + ttl, ARGV[a + 1])
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
return #KEYS - 1
