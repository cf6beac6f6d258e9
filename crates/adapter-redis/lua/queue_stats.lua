-- Depth per status after maintenance: { queued, scheduled, running, succeeded, dead,
-- cancelled, oldest waiting ms (-1 = none) }.
local since = NOW - RETENTION
local oldest = -1
local w = redis.call('ZRANGE', K_WAITING, 0, 0, 'WITHSCORES')
if #w == 2 then oldest = math.max(0, NOW - tonumber(w[2])) end
wake()
return {
  redis.call('ZCARD', K_READY),
  redis.call('ZCARD', K_SCHED),
  redis.call('ZCARD', K_RUNNING),
  redis.call('ZCOUNT', K_SUCC, '(' .. fmt(since), '+inf'),
  redis.call('ZCOUNT', K_DEAD, '(' .. fmt(since), '+inf'),
  redis.call('ZCOUNT', K_CANC, '(' .. fmt(since), '+inf'),
  oldest,
}
