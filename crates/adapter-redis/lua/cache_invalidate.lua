-- Drops every key of one project scope: O(keys in the scope), never a keyspace scan.
-- KEYS[1] the scope index; ARGV[1] the value-key prefix of the scope (<prefix>:{c:<project>}:k:).
-- Every value key shares the index's hash tag, so it lives in the same slot.
local idx, base = KEYS[1], ARGV[1]
local members = redis.call('ZRANGE', idx, 0, -1)
local batch = {}
local dropped = 0
for i = 1, #members do
  batch[#batch + 1] = base .. members[i]
  if #batch == 500 then
    dropped = dropped + redis.call('DEL', unpack(batch))
    batch = {}
  end
end
if #batch > 0 then
  dropped = dropped + redis.call('DEL', unpack(batch))
end
redis.call('DEL', idx)
return dropped
