-- Task::reserve of the first ready task(s). ARGV[3] lease ms, ARGV[4] worker id or '',
-- ARGV[5] how many tasks to take at most (default 1). Each task gets its own lease: its own
-- lease_seq (fencing token) and expiry, exactly as from one reserve each.
-- Returns { 'ok', now, lease expiry, then per task four elements: 'p', its READ values (id,
-- spec, payload, max_attempts, backoff, enqueued_at, unique_key, scheduled_for, last_error;
-- false where absent; RESERVE_READ in queue.rs), its new attempts, its new lease_seq } with
-- at least one task. A task stored by an earlier version (no packed 'spec' field) comes as
-- 'f', its fields as HGETALL reads them, attempts, lease_seq. What the lease changes besides
-- attempts and lease_seq is the same for every task of the call (status running, started_at
-- = heartbeat_at = now, the expiry, the worker the client sent), so the client applies it.
--
-- Cost: per task this is one HMGET and one HSET. The fields come back by position, not as
-- HGETALL's name/value pairs: every element a script reads costs Redis ~1,300 instructions
-- to turn into a Lua string and ~750 to send back, and a task has ~12 fields (names and
-- values: ~24 elements each way; callgrind, "The floor of a Redis 7.0 script here" in
-- docs/PERFORMANCE.md). Only what the client
-- cannot know is read: not the status (queued, checked here), rank or ready_at, nor the id
-- (the ready set's member names it).
-- When nothing is ready:
-- { 'empty', now, next } where next is the earliest due time or lease expiry of this queue
-- (-1 when none), so an idle reserver knows when to look again.
local lease, worker = tonumber(ARGV[3]), ARGV[4]
local want = tonumber(ARGV[5] or '1') or 1
local expires = NOW + lease
local s_now, s_exp = fmt(NOW), fmt(expires)
local out = { 'ok', NOW, expires }
-- status, attempts, lease_seq, then READ but its id (the member names it): spec, payload,
-- max_attempts, backoff, enqueued_at, unique_key, scheduled_for, last_error; then the worker
-- only when this reserve records none (an earlier one must then be removed): an absent field
-- costs HMGET a scan of the whole listpack.
local read = { 'status', 'attempts', 'lease_seq', 'spec', 'payload', 'max_attempts', 'backoff',
  'enqueued_at', 'unique_key', 'scheduled_for', 'last_error' }
if worker == '' then read[12] = 'worker' end
local taken, running = 0, {}
-- Ids that are no longer queued (cancelled meanwhile) are dropped: pops stop after 10 of them.
local skips = 0
while taken < want and skips < 10 do
  -- ZRANGE + ZREMRANGEBYRANK, not ZPOPMIN: a popped score comes back as a double, and
  -- formatting it costs Redis more (~4k instructions per task) than the second command.
  local ids = redis.call('ZRANGE', K_READY, 0, want - taken - 1)
  if #ids == 0 then break end
  redis.call('ZREMRANGEBYRANK', K_READY, 0, #ids - 1)
  redis.call('ZREM', K_WAITING, unpack(ids))
  for _, id in ipairs(ids) do
    local key = task_key(id)
    local f = redis.call('HMGET', key, unpack(read))
    local status, attempts, seq = f[1], f[2], f[3]
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
        if f[12] then redis.call('HDEL', key, 'worker') end
      end
      running[#running + 1] = s_exp
      running[#running + 1] = id
      taken = taken + 1
      local n = #out
      if f[4] then
        out[n + 1] = 'p'
        out[n + 2] = { id, f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11] }
      else
        out[n + 1] = 'f'
        out[n + 2] = redis.call('HGETALL', key)
      end
      out[n + 3] = attempts
      out[n + 4] = seq
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
