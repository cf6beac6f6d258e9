-- Task::heartbeat. KEYS[9] the task; ARGV[3] token, ARGV[4] lease ms.
local key, token, lease = KEYS[9], ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', key) == 0 then return fail_reply('not_found') end
if not holds_lease(key, token) then return fail_reply('lease_lost') end
local expires = NOW + lease
local s_exp = fmt(expires)
redis.call('HSET', key, 'heartbeat_at', fmt(NOW), 'lease_expires_at', s_exp)
redis.call('ZADD', K_RUNNING, s_exp, redis.call('HGET', key, 'id'))
due_at(expires)
return reply('ok', key)
