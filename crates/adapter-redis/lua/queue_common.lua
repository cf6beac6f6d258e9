-- Shared prelude of every queue script (prepended at compile time). Mirrors the transitions
-- of spool_domain::task::Task and the TaskStatus state machine.
--
-- KEYS[1..8]  ready, waiting, scheduled, running, succeeded, dead, cancelled, seq — all under
--             the queue's hash tag {q:<name>}; KEYS[9] the task hash when the call is about
--             one task.
-- ARGV[1]     the queue's key base (<prefix>:{q:<name>}:), for task, unique-key and channel
--             names, which share the tag (so the slot) of KEYS.
-- ARGV[2]     finished-task retention in ms.
-- <base>next  the maintenance hint: a time before which no maintenance can be due (no
--             scheduled task due, no lease expired, no finished task to prune). Every script
--             that adds to `scheduled` or `running` MUST go through due_at() so it stays a
--             lower bound; a missing hint means "maintain now". Stale-early is harmless (one
--             maintenance that finds nothing and recomputes it).
-- WAKE_PUBLISH is defined by the line the adapter prepends: 'PUBLISH' on one server,
--             'SPUBLISH' (sharded pub/sub; the channel shares the queue's slot) on a Redis 7
--             cluster.
local K_READY, K_WAITING, K_SCHED, K_RUNNING = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_SUCC, K_DEAD, K_CANC, K_SEQ = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local BASE = ARGV[1]
local RETENTION = tonumber(ARGV[2])
local BATCH = 100
local RANK_SCALE = 1099511627776 -- 2^40: ready score = rank * 2^40 + seq
local NONE = 9000000000000000 -- hint value when nothing will ever be due
-- Finished tasks are pruned from their sets at most this long after their retention ends
-- (stats count them by score, so the lag is invisible); it batches the pruning.
local SLACK = math.min(RETENTION, 60000)
local K_NEXT = BASE .. 'next'

local tm = redis.call('TIME')
local NOW = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local woke = false
local NEXT = tonumber(redis.call('GET', K_NEXT)) or 0

local function fmt(n) return string.format('%d', n) end
local function task_key(id) return BASE .. 't:' .. id end

local FINISHED = { succeeded = K_SUCC, dead = K_DEAD, cancelled = K_CANC }

-- Something of this queue comes due at `at` (a scheduled task, a lease expiry, a finished
-- task's pruning): keeps the maintenance hint a lower bound.
local function due_at(at)
  if at < NEXT then
    NEXT = at
    redis.call('SET', K_NEXT, fmt(at))
  end
end

-- Helpers of the cold paths (maintenance, retries, release, cancel, requeue) are defined only
-- when one runs: creating a closure costs the Lua VM real work on every call, and the hot
-- transitions (enqueue, reserve, complete) never need these. A script calls cold() before
-- using make_ready, finish, reclaim, next_due or maintain_all.
local make_ready, finish, reclaim, next_due, maintain_all
local function cold()
  if make_ready ~= nil then return end
  -- The task becomes ready (status queued), at the back of its priority.
  make_ready = function(id, key, since)
    local rank = tonumber(redis.call('HGET', key, 'rank')) or 100
    local seq = redis.call('INCR', K_SEQ)
    redis.call('ZADD', K_READY, rank * RANK_SCALE + seq, id)
    redis.call('ZADD', K_WAITING, since, id)
    redis.call('HSET', key, 'status', 'queued', 'ready_at', fmt(since))
    woke = true
  end

  -- The task finishes (succeeded, dead or cancelled): kept for the retention, unique key freed.
  finish = function(id, key, status)
    redis.call('HSET', key, 'status', status, 'finished_at', fmt(NOW))
    redis.call('HDEL', key, 'lease_expires_at')
    redis.call('ZADD', FINISHED[status], NOW, id)
    due_at(NOW + RETENTION + SLACK)
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
  reclaim = function(id, key)
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

  -- The earliest time anything of the queue comes due, from the heads of its sets.
  next_due = function()
    local at = NONE
    local function head(z, plus)
      local h = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
      if #h == 2 and tonumber(h[2]) + plus < at then at = tonumber(h[2]) + plus end
    end
    head(K_SCHED, 0)
    head(K_RUNNING, 0)
    head(K_SUCC, RETENTION + SLACK)
    head(K_DEAD, RETENTION + SLACK)
    head(K_CANC, RETENTION + SLACK)
    return at
  end

  -- The full maintenance, run when the hint says something may be due; resets the hint.
  maintain_all = function()
    local more = false
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
      if #old == BATCH then more = true end
    end
    -- Due tasks / leases left beyond this batch keep the hint in the past by themselves.
    NEXT = more and NOW or next_due()
    redis.call('SET', K_NEXT, fmt(NEXT))
  end
end

-- Runs the maintenance only when the hint says something may be due (one GET otherwise).
local function maintain()
  if NOW < NEXT then return end
  cold()
  maintain_all()
end

-- Task::holds_lease.
local function holds_lease(key, token)
  local f = redis.call('HMGET', key, 'status', 'lease_seq', 'lease_expires_at')
  return f[1] == 'running' and f[2] == token and f[3] ~= false and tonumber(f[3]) > NOW
end

local function wake()
  if woke then redis.call(WAKE_PUBLISH, BASE .. 'wake', '1') end
end

-- The hot transitions (enqueue, reserve, complete) read the task hash once into a Lua table,
-- write only what changes, and reply with the table: no field-by-field reads, no HGETALL
-- after the write.

-- The task hash as a table (field -> value); nil when the task does not exist.
local function load(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

-- Task::holds_lease, on a loaded task.
local function holds(t, token)
  return t.status == 'running' and t.lease_seq == token and t.lease_expires_at ~= nil
    and tonumber(t.lease_expires_at) > NOW
end

-- finish() on a loaded task, with `set` (field, value, ...) and `del` (fields) written in the
-- same HSET / HDEL; updates `t` to match the hash.
local function finish_loaded(id, key, t, status, set, del)
  t.status, t.finished_at = status, fmt(NOW)
  set[#set + 1] = 'status'
  set[#set + 1] = status
  set[#set + 1] = 'finished_at'
  set[#set + 1] = t.finished_at
  for i = 1, #set, 2 do t[set[i]] = set[i + 1] end
  redis.call('HSET', key, unpack(set))
  del[#del + 1] = 'lease_expires_at'
  for i = 1, #del do t[del[i]] = nil end
  redis.call('HDEL', key, unpack(del))
  redis.call('ZADD', FINISHED[status], NOW, id)
  due_at(NOW + RETENTION + SLACK)
  redis.call('PEXPIRE', key, RETENTION)
  local uk = t.unique_key
  if uk then
    local ukey = BASE .. 'u:' .. uk
    if redis.call('GET', ukey) == id then redis.call('DEL', ukey) end
  end
end

-- A reply carrying a loaded (and updated) task, shaped like HGETALL.
local function reply_task(tag, t)
  wake()
  local flat = {}
  for k, v in pairs(t) do
    flat[#flat + 1] = k
    flat[#flat + 1] = v
  end
  return { tag, flat }
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
