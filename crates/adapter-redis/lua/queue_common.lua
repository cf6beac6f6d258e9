-- Shared prelude of every queue script (prepended at compile time). Mirrors the transitions
-- of spool_domain::task::Task and the TaskStatus state machine.
--
-- KEYS[1..8]  ready, waiting, scheduled, running, succeeded, dead, cancelled, seq — all under
--             the queue's hash tag {q:<name>}; KEYS[9] the task hash when the call is about
--             one task.
-- ARGV[1]     the queue's key base (<prefix>:{q:<name>}:), for task, unique-key and channel
--             names, which share the tag (so the slot) of KEYS.
-- ARGV[2]     finished-task retention in ms.
-- WAKE_PUBLISH is defined by the line the adapter prepends: 'PUBLISH' on one server,
--             'SPUBLISH' (sharded pub/sub; the channel shares the queue's slot) on a Redis 7
--             cluster.
local K_READY, K_WAITING, K_SCHED, K_RUNNING = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_SUCC, K_DEAD, K_CANC, K_SEQ = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local BASE = ARGV[1]
local RETENTION = tonumber(ARGV[2])
local BATCH = 100
local RANK_SCALE = 1099511627776 -- 2^40: ready score = rank * 2^40 + seq

local tm = redis.call('TIME')
local NOW = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local woke = false

local function fmt(n) return string.format('%d', n) end
local function task_key(id) return BASE .. 't:' .. id end

local FINISHED = { succeeded = K_SUCC, dead = K_DEAD, cancelled = K_CANC }

-- The task becomes ready (status queued), at the back of its priority.
local function make_ready(id, key, since)
  local rank = tonumber(redis.call('HGET', key, 'rank')) or 100
  local seq = redis.call('INCR', K_SEQ)
  redis.call('ZADD', K_READY, rank * RANK_SCALE + seq, id)
  redis.call('ZADD', K_WAITING, since, id)
  redis.call('HSET', key, 'status', 'queued', 'ready_at', fmt(since))
  woke = true
end

-- The task finishes (succeeded, dead or cancelled): kept for the retention, unique key freed.
local function finish(id, key, status)
  redis.call('HSET', key, 'status', status, 'finished_at', fmt(NOW))
  redis.call('HDEL', key, 'lease_expires_at')
  redis.call('ZADD', FINISHED[status], NOW, id)
  redis.call('PEXPIRE', key, RETENTION)
  local uk = redis.call('HGET', key, 'unique_key')
  if uk then
    local ukey = BASE .. 'u:' .. uk
    if redis.call('GET', ukey) == id then redis.call('DEL', ukey) end
  end
end

-- Due scheduled/retrying tasks become ready; expired leases are reclaimed (Task::expire_lease);
-- finished tasks past retention leave their sets. Bounded batches, safe from many processes.
-- Due tasks and reclaimed leases are handled in the order of their due time / lease expiry,
-- which is also the time they count as ready since, so FIFO follows that time.
local function reclaim(id, key)
  local f = redis.call('HMGET', key, 'attempts', 'max_attempts')
  local attempts, max = tonumber(f[1]) or 0, tonumber(f[2]) or 1
  redis.call('HDEL', key, 'lease_expires_at')
  if attempts >= max then
    redis.call('HSET', key, 'last_error',
      'lease expired on attempt ' .. fmt(attempts) .. ' of ' .. fmt(max))
    finish(id, key, 'dead')
    return false
  end
  redis.call('HSET', key, 'last_error', 'lease expired on attempt ' .. fmt(attempts))
  return true
end

local function maintain()
  local due = redis.call('ZRANGEBYSCORE', K_SCHED, '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, BATCH)
  local expired = redis.call('ZRANGEBYSCORE', K_RUNNING, '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, BATCH)
  local i, j = 1, 1
  while i <= #due or j <= #expired do
    local take_due = j > #expired
      or (i <= #due and tonumber(due[i + 1]) <= tonumber(expired[j + 1]))
    if take_due then
      local id, at = due[i], tonumber(due[i + 1])
      i = i + 2
      redis.call('ZREM', K_SCHED, id)
      local key = task_key(id)
      if redis.call('EXISTS', key) == 1 then make_ready(id, key, at) end
    else
      local id, at = expired[j], tonumber(expired[j + 1])
      j = j + 2
      redis.call('ZREM', K_RUNNING, id)
      local key = task_key(id)
      if redis.call('EXISTS', key) == 1 and reclaim(id, key) then make_ready(id, key, at) end
    end
  end
  for _, z in ipairs({ K_SUCC, K_DEAD, K_CANC }) do
    local old = redis.call('ZRANGEBYSCORE', z, '-inf', NOW - RETENTION, 'LIMIT', 0, BATCH)
    if #old > 0 then redis.call('ZREM', z, unpack(old)) end
  end
end

-- Task::holds_lease.
local function holds_lease(key, token)
  local f = redis.call('HMGET', key, 'status', 'lease_seq', 'lease_expires_at')
  return f[1] == 'running' and f[2] == token and f[3] ~= false and tonumber(f[3]) > NOW
end

local function wake()
  if woke then redis.call(WAKE_PUBLISH, BASE .. 'wake', '1') end
end

local function reply(tag, key)
  wake()
  return { tag, redis.call('HGETALL', key) }
end

local function fail_reply(tag, detail)
  wake()
  return { tag, detail or '' }
end

maintain()
