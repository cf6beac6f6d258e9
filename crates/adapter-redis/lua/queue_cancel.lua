-- Task::cancel. KEYS[9] the task.
local M = maintenance()
local key = KEYS[9]
if redis.call('EXISTS', key) == 0 then return fail_reply('not_found') end
local st = redis.call('HGET', key, 'status')
if FINISHED[st] ~= nil then return fail_reply('conflict', st) end
local id = redis.call('HGET', key, 'id')
redis.call('ZREM', K_READY, id)
redis.call('ZREM', K_WAITING, id)
redis.call('ZREM', K_SCHED, id)
redis.call('ZREM', K_RUNNING, id)
M.finish(id, key, 'cancelled')
return reply('ok', key)
