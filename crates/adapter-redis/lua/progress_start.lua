-- Operation::start: snapshot and first event (kind snapshot) in one atomic step.
-- KEYS[1] snapshot, KEYS[2] event stream (same {p:<id>} tag).
-- ARGV[1] the stored operation JSON without timestamps, ARGV[2] ttl ms, ARGV[3] event cap.
-- Returns { 'ok', event id, stored JSON } or { 'conflict' }.
if redis.call('EXISTS', KEYS[1]) == 1 then return { 'conflict' } end
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local op = cjson.decode(ARGV[1])
op.created_at = now
op.updated_at = now
local json = cjson.encode(op)
-- As text: a Lua number passed to redis.call costs Redis a '%.17g' float format.
local ttl = ARGV[2]
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], json, 'PX', ttl)
local id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 'k', 'snapshot', 'o', json)
redis.call('PEXPIRE', KEYS[2], ttl)
return { 'ok', id, json }
