-- Stores cache values of ONE project scope and records them in the scope's index.
-- KEYS[1]     the scope index zset (<prefix>:{c:<project>}:idx), member = cache key, score = expiry ms
-- KEYS[2..n]  the value keys, one per entry
-- ARGV        per entry: member (the cache key), value, ttl in ms
-- Time comes from the server. Expired index members are pruned (bounded batch) and the index
-- lives as long as its longest-lived member.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idx = KEYS[1]
for i = 2, #KEYS do
  local a = (i - 2) * 3
  local member, value, ttl = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  redis.call('SET', KEYS[i], value, 'PX', ttl)
  redis.call('ZADD', idx, now + ttl, member)
end
local stale = redis.call('ZRANGEBYSCORE', idx, '-inf', now, 'LIMIT', 0, 100)
if #stale > 0 then
  redis.call('ZREM', idx, unpack(stale))
end
local last = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
if #last == 2 then
  redis.call('PEXPIREAT', idx, tonumber(last[2]) + 1)
end
return #KEYS - 1
