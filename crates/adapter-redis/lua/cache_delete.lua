-- Deletes one cached value and its index entry.
-- KEYS[1] the value key, KEYS[2] the scope index; ARGV[1] the member (cache key).
-- Returns 1 when the value existed.
local n = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return n
