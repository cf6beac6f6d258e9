-- Reads one task after the queue's maintenance, so the status seen is the one any worker
-- would act on. KEYS[9] the task.
local key = KEYS[9]
if redis.call('EXISTS', key) == 0 then return fail_reply('not_found') end
return reply('ok', key)
