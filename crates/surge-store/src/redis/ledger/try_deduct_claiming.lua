-- The flash-sale check-and-deduct of a keyed request, which also claims the
-- request's idempotency key: one round trip instead of a claim, a deduction
-- and (on a refusal) a delete.
-- KEYS: stock left, buyers, reservations, the intake key.
-- ARGV: user, quantity, per-user limit, order id, now (unix ms), claim TTL (ms).
-- Returns {kind, value}: 0 deducted and claimed (value: stock left), 1 sold
-- out, 2 over the buyer's limit, 3 not loaded, 4 another request with the
-- key is in flight, 5 the key names an order (value: its id). A refusal
-- claims nothing. A resent call (same order id) finds its own claim and
-- deducts nothing more.
local held = redis.call('GET', KEYS[4])
if held then
  if held == 'p:' .. ARGV[4] then return {0, redis.call('GET', KEYS[1]) or '0'} end
  if string.sub(held, 1, 1) == 'p' then return {4, ''} end
  return {5, held}
end
local left = redis.call('GET', KEYS[1])
if not left then return {3, ''} end
left = tonumber(left)
local quantity = tonumber(ARGV[2])
local units = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if units + quantity > tonumber(ARGV[3]) then return {2, ''} end
if left < quantity then return {1, ''} end
redis.call('HINCRBY', KEYS[2], ARGV[1], quantity)
redis.call('HSET', KEYS[3], ARGV[4], ARGV[1] .. ':' .. ARGV[2] .. ':' .. ARGV[5])
redis.call('SET', KEYS[4], 'p:' .. ARGV[4], 'PX', ARGV[6])
return {0, tostring(redis.call('DECRBY', KEYS[1], quantity))}
