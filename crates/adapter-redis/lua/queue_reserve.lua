-- Task::reserve of the first ready task. ARGV[3] lease ms, ARGV[4] worker id or ''.
-- When nothing is ready: { 'empty', now, next } where next is the earliest due time or lease
-- expiry of this queue (-1 when none), so an idle reserver knows when to look again.
local lease, worker = tonumber(ARGV[3]), ARGV[4]
for _ = 1, 10 do
  local top = redis.call('ZRANGE', K_READY, 0, 0)
  if #top == 0 then break end
  local id = top[1]
  redis.call('ZREM', K_READY, id)
  redis.call('ZREM', K_WAITING, id)
  local key = task_key(id)
  if redis.call('HGET', key, 'status') == 'queued' then
    local expires = NOW + lease
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HINCRBY', key, 'lease_seq', 1)
    redis.call('HSET', key, 'status', 'running', 'started_at', fmt(NOW),
      'heartbeat_at', fmt(NOW), 'lease_expires_at', fmt(expires))
    if worker ~= '' then
      redis.call('HSET', key, 'worker', worker)
    else
      redis.call('HDEL', key, 'worker')
    end
    redis.call('ZADD', K_RUNNING, expires, id)
    return reply('ok', key)
  end
end
local next_at = -1
local s = redis.call('ZRANGE', K_SCHED, 0, 0, 'WITHSCORES')
if #s == 2 then next_at = tonumber(s[2]) end
local r = redis.call('ZRANGE', K_RUNNING, 0, 0, 'WITHSCORES')
if #r == 2 and (next_at < 0 or tonumber(r[2]) < next_at) then next_at = tonumber(r[2]) end
wake()
return { 'empty', NOW, next_at }
