-- Task::requeue. KEYS[9] the task.
local key = KEYS[9]
if redis.call('EXISTS', key) == 0 then return fail_reply('not_found') end
local st = redis.call('HGET', key, 'status')
if st ~= 'dead' and st ~= 'cancelled' then return fail_reply('conflict', st) end
local id = redis.call('HGET', key, 'id')
redis.call('ZREM', FINISHED[st], id)
redis.call('PERSIST', key)
redis.call('HSET', key, 'attempts', '0')
redis.call('HDEL', key, 'finished_at', 'scheduled_for')
make_ready(id, key, NOW)
local uk = redis.call('HGET', key, 'unique_key')
if uk then redis.call('SET', BASE .. 'u:' .. uk, id, 'NX') end
return reply('ok', key)
