-- Claim the members of a schedule (a sorted set scored by due time in ms) that are due.
-- Each claimed member is pushed back by a hold time instead of removed, so work claimed by
-- a process that dies is claimed again once the hold passes.
-- KEYS: the sorted set. ARGV: now_ms, hold_ms, limit.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local later = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', later, member)
end
return due
