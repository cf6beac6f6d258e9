-- Task::reserve of the first ready task(s). ARGV[3] lease ms, ARGV[4] worker id or '',
-- ARGV[5] how many tasks to take at most (default 1). Each task gets its own lease: its own
-- lease_seq (fencing token) and expiry, exactly as from one reserve each.
-- Returns { 'ok', now, lease expiry, then per task: its fields as HGETALL read them before the
-- lease, its new attempts, its new lease_seq } with at least one task. What the lease changes
-- besides those two is the same for every task of the call (status running, started_at =
-- heartbeat_at = now, the expiry, the worker the client sent), so the client applies it and
-- the task is neither rebuilt nor re-read here. When nothing is ready:
-- { 'empty', now, next } where next is the earliest due time or lease expiry of this queue
-- (-1 when none), so an idle reserver knows when to look again.
local lease, worker = tonumber(ARGV[3]), ARGV[4]
local want = tonumber(ARGV[5] or '1') or 1
local expires = NOW + lease
local s_now, s_exp = fmt(NOW), fmt(expires)
local out = { 'ok', NOW, expires }
local taken, running = 0, {}
-- Ids that are no longer queued (cancelled meanwhile) are dropped: pops stop after 10 of them.
local skips = 0
while taken < want and skips < 10 do
  local top = redis.call('ZPOPMIN', K_READY, want - taken)
  if #top == 0 then break end
  local ids = {}
  for i = 1, #top, 2 do ids[#ids + 1] = top[i] end
  redis.call('ZREM', K_WAITING, unpack(ids))
  for _, id in ipairs(ids) do
    local key = task_key(id)
    local flat = redis.call('HGETALL', key)
    local status, attempts, seq, had_worker
    for i = 1, #flat, 2 do
      local k = flat[i]
      if k == 'status' then status = flat[i + 1]
      elseif k == 'attempts' then attempts = flat[i + 1]
      elseif k == 'lease_seq' then seq = flat[i + 1]
      elseif k == 'worker' then had_worker = true
      end
    end
    if status == 'queued' then
      attempts = fmt((tonumber(attempts) or 0) + 1)
      seq = fmt((tonumber(seq) or 0) + 1)
      if worker ~= '' then
        redis.call('HSET', key, 'status', 'running', 'attempts', attempts, 'lease_seq', seq,
          'started_at', s_now, 'heartbeat_at', s_now, 'lease_expires_at', s_exp,
          'worker', worker)
      else
        redis.call('HSET', key, 'status', 'running', 'attempts', attempts, 'lease_seq', seq,
          'started_at', s_now, 'heartbeat_at', s_now, 'lease_expires_at', s_exp)
        if had_worker then redis.call('HDEL', key, 'worker') end
      end
      running[#running + 1] = expires
      running[#running + 1] = id
      taken = taken + 1
      out[#out + 1] = flat
      out[#out + 1] = attempts
      out[#out + 1] = seq
    else
      skips = skips + 1
    end
  end
end
if taken > 0 then
  redis.call('ZADD', K_RUNNING, unpack(running))
  due_at(expires)
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
