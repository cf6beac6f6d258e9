-- Stores cache values of ONE project scope and records them in the scope's index: the values
-- here, the index by cache_index.lua, appended at compile time.
-- KEYS[1]     the scope index zset (<prefix>:{c:<project>}:idx), member = cache key, score = expiry ms
-- KEYS[2..n]  the value keys, one per entry
-- ARGV        per entry: member (the cache key), ttl in ms, value
-- Only for small values: a value passed to a script costs Redis's Lua ~11 instructions per
-- byte (it hashes every string it creates whole; docs/PERFORMANCE.md), so writes carrying
-- 64 KiB or more send each value by a plain SET, next to cache_index.lua alone, in one
-- MULTI/EXEC (src/cache.rs, LARGE_WRITE_BYTES).
local STRIDE = 3
for i = 2, #KEYS do
  local a = (i - 2) * STRIDE
  redis.call('SET', KEYS[i], ARGV[a + 3], 'PX', ARGV[a + 2])
end
