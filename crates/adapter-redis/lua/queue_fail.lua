-- Task::fail with Backoff::delay. KEYS[9] the task; ARGV[3] token, ARGV[4] error,
-- ARGV[5] retry mode ('backoff' | 'after' | 'never'), ARGV[6] delay ms for 'after',
-- ARGV[7] random fraction in [0, 1) for the jitter.
local M = maintenance()
local key, token, err, mode = KEYS[9], ARGV[3], ARGV[4], ARGV[5]
local after_ms, random = tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('EXISTS', key) == 0 then return fail_reply('not_found') end
if not holds_lease(key, token) then return fail_reply('lease_lost') end
local f = redis.call('HMGET', key, 'id', 'attempts', 'max_attempts', 'backoff_initial_ms',
  'backoff_max_ms', 'backoff_factor', 'backoff_jitter', 'backoff')
local id, attempts, max = f[1], tonumber(f[2]), tonumber(f[3])
if f[8] then
  -- The packed form '<initial> <max> <factor> <jitter>' (tasks of earlier versions keep four
  -- fields).
  f[4], f[5], f[6], f[7] = string.match(f[8], '^(%d+) (%d+) (%d+) (%a+)$')
end
local delay = nil
if mode == 'never' or attempts >= max then
  delay = nil
elseif mode == 'backoff' then
  local initial, cap, factor = tonumber(f[4]), tonumber(f[5]), tonumber(f[6])
  local d = initial
  for _ = 2, math.max(attempts, 1) do
    if d >= cap then break end
    d = d * factor
  end
  d = math.min(d, cap)
  if f[7] == 'full' then
    local r = random
    if r ~= r then r = 0 end
    r = math.max(0, math.min(1, r))
    d = math.floor(d * r)
  end
  delay = d
else
  delay = after_ms
end
redis.call('ZREM', K_RUNNING, id)
redis.call('HSET', key, 'last_error', err)
redis.call('HDEL', key, 'lease_expires_at')
if delay then
  local due = NOW + delay
  local s_due = fmt(due)
  redis.call('HSET', key, 'status', 'failed', 'scheduled_for', s_due)
  redis.call('ZADD', K_SCHED, s_due, id)
  due_at(due)
else
  M.finish(id, key, 'dead')
end
return reply('ok', key)
