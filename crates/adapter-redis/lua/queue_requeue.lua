-- Task::requeue. KEYS[9] the task.
local M = maintenance()
local key = KEYS[9]
if redis.call('EXISTS', key) == 0 then return fail_reply('not_found') end
local st = redis.call('HGET', key, 'status')
if st ~= 'dead' and st ~= 'cancelled' then return fail_reply('conflict', st) end
local id = redis.call('HGET', key, 'id')
-- Two live tasks never share a unique key: refuse while another live task holds it.
local uk = redis.call('HGET', key, 'unique_key')
if uk then
  local holder = redis.call('GET', BASE .. 'u:' .. uk)
  if holder and holder ~= id then
    local hst = redis.call('HGET', task_key(holder), 'status')
    if hst and FINISHED[hst] == nil then
      return fail_reply('conflict', 'unique key ' .. uk .. ' is held by live task ' .. holder)
    end
  end
end
redis.call('ZREM', FINISHED[st], id)
redis.call('PERSIST', key)
redis.call('HSET', key, 'attempts', '0')
redis.call('HDEL', key, 'finished_at', 'scheduled_for')
M.make_ready(id, key, NOW)
if uk then redis.call('SET', BASE .. 'u:' .. uk, id) end
return reply('ok', key)
