-- The flash-sale check-and-deduct, run atomically by Redis.
-- KEYS: stock left, buyers (hash user -> units), reservations (hash order -> "user:units:ms").
-- ARGV: user, quantity, per-user limit, order id, now (unix ms).
-- Returns stock left after the deduction, or -1 sold out, -2 over the buyer's
-- limit, -3 not loaded. The order id makes it idempotent: a client retry
-- (the cluster client resends after a lost reply) does not deduct twice.
-- scripts/bench-distributed runs this file through redis-benchmark as the
-- ceiling of intake.
if redis.call('HEXISTS', KEYS[3], ARGV[4]) == 1 then
  return tonumber(redis.call('GET', KEYS[1]) or '0')
end
local left = redis.call('GET', KEYS[1])
if not left then return -3 end
left = tonumber(left)
local quantity = tonumber(ARGV[2])
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if held + quantity > tonumber(ARGV[3]) then return -2 end
if left < quantity then return -1 end
redis.call('HINCRBY', KEYS[2], ARGV[1], quantity)
redis.call('HSET', KEYS[3], ARGV[4], ARGV[1] .. ':' .. ARGV[2] .. ':' .. ARGV[5])
return redis.call('DECRBY', KEYS[1], quantity)
