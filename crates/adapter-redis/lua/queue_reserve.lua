-- Task::reserve of the first ready task(s). ARGV[3] lease ms, ARGV[4] worker id or '',
-- ARGV[5] how many tasks to take at most (default 1). Each task gets its own lease: its own
-- lease_seq (fencing token) and expiry, exactly as from one reserve each.
-- Returns { 'ok', task fields, task fields, ... } with at least one task, or when nothing is
-- ready { 'empty', now, next } where next is the earliest due time or lease expiry of this
-- queue (-1 when none), so an idle reserver knows when to look again.
local lease, worker = tonumber(ARGV[3]), ARGV[4]
local want = tonumber(ARGV[5] or '1') or 1
local out = { 'ok' }
-- Ids that are no longer queued (cancelled meanwhile) are dropped: at most 10 of them per call.
local skips = 0
while #out <= want and skips < 10 do
  local top = redis.call('ZPOPMIN', K_READY)
  if #top == 0 then break end
  local id = top[1]
  redis.call('ZREM', K_WAITING, id)
  local key = task_key(id)
  local t = load(key)
  if t ~= nil and t.status == 'queued' then
    local expires = NOW + lease
    t.status = 'running'
    t.attempts = fmt((tonumber(t.attempts) or 0) + 1)
    t.lease_seq = fmt((tonumber(t.lease_seq) or 0) + 1)
    t.started_at = fmt(NOW)
    t.heartbeat_at = t.started_at
    t.lease_expires_at = fmt(expires)
    if worker ~= '' then
      t.worker = worker
      redis.call('HSET', key, 'status', 'running', 'attempts', t.attempts,
        'lease_seq', t.lease_seq, 'started_at', t.started_at, 'heartbeat_at', t.started_at,
        'lease_expires_at', t.lease_expires_at, 'worker', worker)
    else
      redis.call('HSET', key, 'status', 'running', 'attempts', t.attempts,
        'lease_seq', t.lease_seq, 'started_at', t.started_at, 'heartbeat_at', t.started_at,
        'lease_expires_at', t.lease_expires_at)
      if t.worker ~= nil then
        t.worker = nil
        redis.call('HDEL', key, 'worker')
      end
    end
    redis.call('ZADD', K_RUNNING, expires, id)
    due_at(expires)
    local flat = {}
    for k, v in pairs(t) do
      flat[#flat + 1] = k
      flat[#flat + 1] = v
    end
    out[#out + 1] = flat
  else
    skips = skips + 1
  end
end
if #out > 1 then
  wake()
  return out
end
local next_at = -1
local s = redis.call('ZRANGE', K_SCHED, 0, 0, 'WITHSCORES')
if #s == 2 then next_at = tonumber(s[2]) end
local r = redis.call('ZRANGE', K_RUNNING, 0, 0, 'WITHSCORES')
if #r == 2 and (next_at < 0 or tonumber(r[2]) < next_at) then next_at = tonumber(r[2]) end
wake()
return { 'empty', NOW, next_at }
