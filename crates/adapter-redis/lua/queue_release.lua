-- Task::release. KEYS[9] the task; ARGV[3] token, ARGV[4] reason.
-- The lease holder hands the task back unfinished: the lease is revoked and the task is ready
-- again at once (at the back of its priority, waiting since now, like a reclaimed lease),
-- with the interrupted attempt not counted. lease_seq is kept, so the next token is greater.
local M = maintenance()
local key, token, reason = KEYS[9], ARGV[3], ARGV[4]
if redis.call('EXISTS', key) == 0 then return fail_reply('not_found') end
if not holds_lease(key, token) then return fail_reply('lease_lost') end
local f = redis.call('HMGET', key, 'id', 'attempts')
local id, attempts = f[1], tonumber(f[2]) or 0
redis.call('ZREM', K_RUNNING, id)
redis.call('HDEL', key, 'lease_expires_at')
redis.call('HSET', key, 'attempts', fmt(math.max(attempts - 1, 0)),
  'last_error', 'released: ' .. reason)
M.make_ready(id, key, NOW)
return reply('ok', key)
