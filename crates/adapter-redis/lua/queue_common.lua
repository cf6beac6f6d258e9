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
--
-- Cost: every queue script runs this prelude on every call, so it creates few closures, each
-- over few locals. In Redis's Lua 5.1 every local a closure captures is an upvalue allocated
-- on every call, and the prelude once spent ~34k of an enqueue's ~183k instructions on
-- closures over the queue's names (callgrind, docs/PERFORMANCE-HISTORY.md). So the mutable
-- state the helpers share is one table (S), and the helpers of maintenance and of the cold
-- transitions (retry, release, cancel, requeue) are built only when one runs, by
-- maintenance(), from KEYS and ARGV rather than from the locals here. Helpers that one script
-- alone needs live in it.
local K_READY, K_WAITING, K_SCHED, K_RUNNING = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_SUCC, K_DEAD, K_CANC, K_SEQ = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local BASE = ARGV[1]
local RETENTION = tonumber(ARGV[2])
-- The same as the client sent it, for arguments: a Lua number passed to redis.call costs Redis
-- a '%.17g' format (glibc's float printer, ~2.5k instructions) each time; text costs nothing.
-- Hot paths hand redis.call text for the same reason (fmt() once, not a number per task).
local RETENTION_ARG = ARGV[2]
-- Finished tasks are pruned from their sets at most this long after their retention ends
-- (stats count them by score, so the lag is invisible); it batches the pruning.
local SLACK = RETENTION < 60000 and RETENTION or 60000
local RANK_SCALE = 1099511627776 -- 2^40: ready score = rank * 2^40 + seq
local K_NEXT = BASE .. 'next'

local tm = redis.call('TIME')
local NOW = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
-- next: the maintenance hint (as read, or lowered since); woke: a task became ready, so idle
-- reservers are woken when the script ends.
local S = { next = tonumber(redis.call('GET', K_NEXT)) or 0, woke = false }

local function fmt(n) return string.format('%d', n) end
local function task_key(id) return BASE .. 't:' .. id end

local FINISHED = { succeeded = K_SUCC, dead = K_DEAD, cancelled = K_CANC }

-- Something of this queue comes due at `at` (a scheduled task, a lease expiry, a finished
-- task's pruning): keeps the maintenance hint a lower bound.
local function due_at(at)
  if at < S.next then
    S.next = at
    redis.call('SET', K_NEXT, fmt(at))
  end
end

local function wake()
  if S.woke then redis.call(WAKE_PUBLISH, BASE .. 'wake', '1') end
end

-- Task::holds_lease.
local function holds_lease(key, token)
  local f = redis.call('HMGET', key, 'status', 'lease_seq', 'lease_expires_at')
  return f[1] == 'running' and f[2] == token and f[3] ~= false and tonumber(f[3]) > NOW
end

local function reply(tag, key)
  wake()
  return { tag, redis.call('HGETALL', key) }
end

local function fail_reply(tag, detail)
  wake()
  return { tag, detail or '' }
end

-- The helpers of maintenance and of the cold transitions, built on first use (see Cost
-- above): a table with
--   make_ready(id, key, since)  the task becomes ready (status queued), at the back of its
--                               priority, ready since `since`;
--   finish(id, key, status)     the task finishes (succeeded, dead or cancelled): kept for the
--                               retention, its unique key freed;
--   maintain_all()              the full maintenance; resets the hint.
local function maintenance()
  if S.m then return S.m end
  local READY, WAITING, SCHED, RUNNING = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local SUCC, DEAD, CANC, SEQ = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
  local base, retention = ARGV[1], tonumber(ARGV[2])
  local slack = math.min(retention, 60000)
  local done = { succeeded = SUCC, dead = DEAD, cancelled = CANC }
  local BATCH = 100
  local NONE = 9000000000000000 -- hint value when nothing will ever be due
  local M = {}
  S.m = M

  M.make_ready = function(id, key, since)
    local rank = tonumber(redis.call('HGET', key, 'rank')) or 100
    local seq = redis.call('INCR', SEQ)
    local s_since = fmt(since)
    redis.call('ZADD', READY, fmt(rank * 1099511627776 + seq), id)
    redis.call('ZADD', WAITING, s_since, id)
    redis.call('HSET', key, 'status', 'queued', 'ready_at', s_since)
    S.woke = true
  end

  M.finish = function(id, key, status)
    local at = fmt(NOW)
    redis.call('HSET', key, 'status', status, 'finished_at', at)
    redis.call('HDEL', key, 'lease_expires_at')
    redis.call('ZADD', done[status], at, id)
    due_at(NOW + retention + slack)
    redis.call('PEXPIRE', key, ARGV[2])
    local uk = redis.call('HGET', key, 'unique_key')
    if uk then
      local ukey = base .. 'u:' .. uk
      if redis.call('GET', ukey) == id then redis.call('DEL', ukey) end
    end
  end

  -- Task::expire_lease: false when the task is out of attempts (it is then dead).
  local function reclaim(id, key)
    local f = redis.call('HMGET', key, 'attempts', 'max_attempts')
    local attempts, max = tonumber(f[1]) or 0, tonumber(f[2]) or 1
    redis.call('HDEL', key, 'lease_expires_at')
    if attempts >= max then
      redis.call('HSET', key, 'last_error',
        'lease expired on attempt ' .. fmt(attempts) .. ' of ' .. fmt(max))
      M.finish(id, key, 'dead')
      return false
    end
    redis.call('HSET', key, 'last_error', 'lease expired on attempt ' .. fmt(attempts))
    return true
  end

  -- The earliest time anything of the queue comes due, from the heads of its sets.
  local function next_due()
    local at = NONE
    local function head(z, plus)
      local h = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
      if #h == 2 and tonumber(h[2]) + plus < at then at = tonumber(h[2]) + plus end
    end
    head(SCHED, 0)
    head(RUNNING, 0)
    head(SUCC, retention + slack)
    head(DEAD, retention + slack)
    head(CANC, retention + slack)
    return at
  end

  -- Due scheduled/retrying tasks become ready; expired leases are reclaimed; finished tasks
  -- past retention leave their sets. Bounded batches, safe from many processes. Due tasks and
  -- reclaimed leases are handled in the order of their due time / lease expiry, which is also
  -- the time they count as ready since, so FIFO follows that time.
  M.maintain_all = function()
    local more = false
    local due = redis.call('ZRANGEBYSCORE', SCHED, '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, BATCH)
    local expired = redis.call('ZRANGEBYSCORE', RUNNING, '-inf', NOW, 'WITHSCORES', 'LIMIT', 0, BATCH)
    local i, j = 1, 1
    while i <= #due or j <= #expired do
      local take_due = j > #expired
        or (i <= #due and tonumber(due[i + 1]) <= tonumber(expired[j + 1]))
      if take_due then
        local id, at = due[i], tonumber(due[i + 1])
        i = i + 2
        redis.call('ZREM', SCHED, id)
        local key = base .. 't:' .. id
        if redis.call('EXISTS', key) == 1 then M.make_ready(id, key, at) end
      else
        local id, at = expired[j], tonumber(expired[j + 1])
        j = j + 2
        redis.call('ZREM', RUNNING, id)
        local key = base .. 't:' .. id
        if redis.call('EXISTS', key) == 1 and reclaim(id, key) then M.make_ready(id, key, at) end
      end
    end
    for _, z in ipairs({ SUCC, DEAD, CANC }) do
      local old = redis.call('ZRANGEBYSCORE', z, '-inf', NOW - retention, 'LIMIT', 0, BATCH)
      if #old > 0 then redis.call('ZREM', z, unpack(old)) end
      if #old == BATCH then more = true end
    end
    -- Due tasks / leases left beyond this batch keep the hint in the past by themselves.
    S.next = more and NOW or next_due()
    redis.call('SET', base .. 'next', fmt(S.next))
  end
  return M
end

-- The maintenance runs only when the hint says something may be due (one GET otherwise).
if NOW >= S.next then maintenance().maintain_all() end
