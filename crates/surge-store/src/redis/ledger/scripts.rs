//! The ledger's Lua scripts: each is one atomic step on the Redis that
//! owns the sale's slot. `try_deduct*.lua` are files of their own (long
//! enough to want Lua tooling); the short ones are here.

/// The check-and-deduct (see the file): stock left after the deduction, or
/// -1 sold out, -2 over the buyer's limit, -3 not loaded.
pub(super) const TRY_DEDUCT: &str = include_str!("try_deduct.lua");

/// The same for a keyed request, claiming its key (see the file).
pub(super) const TRY_DEDUCT_CLAIMING: &str = include_str!("try_deduct_claiming.lua");

/// KEYS: stock, buyers, reservations, staged buyers, returned orders. ARGV:
/// only-if-absent (0/1), stock left, the number of returned orders, those
/// orders, then (user, units) pairs. The buyers are the staged hash (filled
/// in chunks before, see [`RedisLedger::load_counters`]) plus the pairs;
/// the returned orders are those whose give-back the loaded counts already
/// hold. Returns 1 when loaded, 0 when left as it was.
pub(super) const LOAD: &str = r"
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[4])
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[5])
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('RENAME', KEYS[4], KEYS[2])
  redis.call('PERSIST', KEYS[2])
end
local returned = tonumber(ARGV[3])
for i = 4, 3 + returned do
  redis.call('SADD', KEYS[5], ARGV[i])
end
for i = 4 + returned, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
";

/// Gives a buyer's units back to a loaded sale (KEYS: stock, buyers; ARGV:
/// user, quantity); a buyer's units never go below zero. Returns the stock
/// left after, or -1 when not loaded. The body of [`RESTORE`] and the tail
/// of [`RELEASE`].
macro_rules! give_back {
    () => {
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local left = redis.call('INCRBY', KEYS[1], ARGV[2])
local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local quantity = tonumber(ARGV[2])
if held <= quantity then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HINCRBY', KEYS[2], ARGV[1], -quantity)
end
return left
"
    };
}

/// KEYS: stock, buyers, returned orders. ARGV: user, quantity, order. Only
/// a loaded sale is restored, and an order's units only once (the cluster
/// client resends a command whose reply was lost, and a timed-out give-back
/// may still run after its retry). Returns the stock left after, -1 when
/// not loaded, -2 when the order's units were back already.
pub(super) const RESTORE: &str = concat!(
    r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('SADD', KEYS[3], ARGV[3]) == 0 then return -2 end
",
    give_back!()
);

/// KEYS: stock, buyers, reservations. ARGV: user, quantity, order, now.
/// Gives the stock back only while the reservation is open, and leaves a
/// tombstone (`x:<ms>`) so that a later settle knows the order's units were
/// returned, and a retried settle that it already ran. Twice is once.
/// Returns the stock left after, or -1 when nothing was given back.
pub(super) const RELEASE: &str = concat!(
    r"
local open = redis.call('HGET', KEYS[3], ARGV[3])
if not open or string.sub(open, 1, 2) == 'x:' then return -1 end
redis.call('HSET', KEYS[3], ARGV[3], 'x:' .. ARGV[4])
",
    give_back!()
);

/// KEYS: stock, buyers, reservations. ARGV: (order, user, quantity)
/// triples. Closes each open reservation; one released before (a
/// tombstone) is deducted again, since its order exists, but never below
/// zero: what is missing means the units were sold twice, which the order
/// store's bounds catch and the reconciliation repairs. One already closed
/// (a retried settle) is left alone. Returns {deducted again, units short}.
pub(super) const SETTLE: &str = r"
local again, short = 0, 0
for i = 1, #ARGV, 3 do
  local state = redis.call('HGET', KEYS[3], ARGV[i])
  if state then
    redis.call('HDEL', KEYS[3], ARGV[i])
    if string.sub(state, 1, 2) == 'x:' and redis.call('EXISTS', KEYS[1]) == 1 then
      local want = tonumber(ARGV[i + 2])
      local left = tonumber(redis.call('GET', KEYS[1]))
      local take = math.min(want, math.max(left, 0))
      if take > 0 then redis.call('DECRBY', KEYS[1], take) end
      redis.call('HINCRBY', KEYS[2], ARGV[i + 1], want)
      again = again + 1
      short = short + (want - take)
    end
  end
end
return {again, short}
";

/// KEYS: stock, reservations, returned orders. ARGV: orders whose
/// give-back the store owes. One instant of the sale: false when not
/// loaded, else {stock left, the reservations (order, state, ...), for each
/// owed order 1 if its units are back}.
pub(super) const SNAPSHOT: &str = r"
local left = redis.call('GET', KEYS[1])
if not left then return false end
local back = {}
for i = 1, #ARGV do
  back[i] = redis.call('SISMEMBER', KEYS[3], ARGV[i])
end
return {left, redis.call('HGETALL', KEYS[2]), back}
";

/// KEYS: stock. ARGV: the stock left as last seen, the move. Moves the
/// stock only if nothing changed it since. Returns the stock left after,
/// or false.
pub(super) const ADJUST: &str = r"
local left = redis.call('GET', KEYS[1])
if not left or left ~= ARGV[1] then return false end
return redis.call('INCRBY', KEYS[1], ARGV[2])
";
