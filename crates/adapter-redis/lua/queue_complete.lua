-- Task::complete. KEYS[9] the task; ARGV[3] token, ARGV[4] '1' when a result follows,
-- ARGV[5] the result JSON.
local key, token = KEYS[9], ARGV[3]
if redis.call('EXISTS', key) == 0 then return fail_reply('not_found') end
if not holds_lease(key, token) then return fail_reply('lease_lost') end
local id = redis.call('HGET', key, 'id')
redis.call('ZREM', K_RUNNING, id)
if ARGV[4] == '1' then
  redis.call('HSET', key, 'result', ARGV[5])
else
  redis.call('HDEL', key, 'result')
end
finish(id, key, 'succeeded')
return reply('ok', key)
