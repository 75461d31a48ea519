"""The Lua scripts behind RedisBudgets: every read-modify-write of a budget is one of these.

Layout (keys under REDIS_KEY_PREFIX):
- `budget:d:<YYYY-MM-DD>` and `budget:m:<YYYY-MM>`: one hash per period with `s:<budget>`
  (spent) and `r:<budget>` (held by calls in flight) in whole billionths of a dollar, `seed`
  (an id, set once when the period was seeded from the ledger) and `cut` (ledger rows written
  before this time, in ms, are in the seed), `a:<budget>` (the highest alert level announced)
  and `w:<replica>` (the last settle of that replica applied: settles are idempotent).
  Expires a few days after the period ends.
- `budget:res`: reservation id -> what it holds (hash keys, amount, budgets), and
  `budget:lease`: reservation id by expiry (ms). Expired reservations are released by the
  scripts themselves (`sweep`), so a killed replica's holds end with their lease.
- `b:<replica>:<budget>` in a period hash: that replica's **outage reserve** on the budget,
  part of `r:` (held) like a call in flight, so no other replica can spend it. It is the
  only money a replica may spend while it cannot reach Redis; the replica itself may spend
  it through Redis too (RESERVE draws on it when nothing else is left), so a budget can
  still be spent to its last cent. STANDBY resizes it; its record in `budget:res` is
  `sb:<replica>` (kind `sb`), released by the sweep when its lease ends.

Amounts travel as decimal strings and are handed to HINCRBY as such: Lua prints a number of
15 digits or more in exponent form, which HINCRBY would refuse.
"""

from __future__ import annotations

# KEYS: 1 day hash, 2 month hash, 3 reservations, 4 leases; ARGV[1]: now (ms).
_SWEEP = """
local function sweep(now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 200)
  for _, id in ipairs(expired) do
    local raw = redis.call('HGET', KEYS[3], id)
    if raw then
      local rec = cjson.decode(raw)
      for _, line in ipairs(rec.l) do
        local key = rec.k[line[1]]
        if key == KEYS[1] or key == KEYS[2] then
          local amount = rec.a
          if rec.sb then
            local field = 'b:' .. rec.sb .. ':' .. line[2]
            amount = redis.call('HGET', key, field) or '0'
            redis.call('HDEL', key, field)
          end
          if amount ~= '0' then  -- Redis reads '-0' as no integer
            redis.call('HINCRBY', key, 'r:' .. line[2], '-' .. amount)
          end
        end
      end
      redis.call('HDEL', KEYS[3], id)
    end
    redis.call('ZREM', KEYS[4], id)
  end
end
"""

# ARGV: now, id, amount, expiry (ms), n, then n x (period 1|2, budget, limit), replica.
# Returns {status, line index, day seed, month seed, spent, held and what the call took from
# this replica's outage reserve, for each line...} with status ok (held against every line),
# spent (a line is truly spent: the first monthly one, else the first daily one), held (only
# calls in flight and other replicas' reserves are in the way), unseeded. A call that fits
# only with this replica's own reserve takes what it needs from it. What it took, not what is
# left: answers on several connections come back in any order, amounts taken add up in any.
# A reservation Redis holds already (HOLD put it there after the answer was lost and the
# script ran late) is not held twice.
RESERVE = (
    _SWEEP
    + """
local now = tonumber(ARGV[1])
sweep(now)
local amount = tonumber(ARGV[3])
local n = tonumber(ARGV[5])
local lines, need = {}, {false, false}
for i = 1, n do
  local b = 5 + (i - 1) * 3
  local period = tonumber(ARGV[b + 1])
  lines[i] = {period, ARGV[b + 2], tonumber(ARGV[b + 3])}
  need[period] = true
end
local seeds = {}
for period = 1, 2 do
  seeds[period] = redis.call('HGET', KEYS[period], 'seed') or ''
  if need[period] and seeds[period] == '' then return {'unseeded', period, '', ''} end
end
local own_prefix = 'b:' .. ARGV[6 + 3 * n] .. ':'
local view, owns, spent_at, held_at = {}, {}, 0, 0
for i, line in ipairs(lines) do
  local key = KEYS[line[1]]
  local v = redis.call('HMGET', key, 's:' .. line[2], 'r:' .. line[2], own_prefix .. line[2])
  local s, r, own = tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0')
  view[#view + 1] = s
  view[#view + 1] = r
  view[#view + 1] = 0
  owns[i] = own
  if s + amount > line[3] then
    if spent_at == 0 or (line[1] == 2 and lines[spent_at][1] == 1) then spent_at = i end
  elseif held_at == 0 and s + r - own + amount > line[3] then
    held_at = i
  end
end
local status, at = 'ok', 0
if spent_at > 0 then
  status, at = 'spent', spent_at
elseif held_at > 0 then
  status, at = 'held', held_at
elseif redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 then
  local record = {}
  for i, line in ipairs(lines) do
    local key = KEYS[line[1]]
    local r = redis.call('HINCRBY', key, 'r:' .. line[2], ARGV[3])
    local over = view[3 * i - 2] + r - line[3]
    if over > 0 then  -- fits only with this replica's reserve: take that much of it
      if over > owns[i] then over = owns[i] end
      local minus = string.format('%d', -over)
      redis.call('HINCRBY', key, own_prefix .. line[2], minus)
      r = redis.call('HINCRBY', key, 'r:' .. line[2], minus)
      view[3 * i] = over
    end
    view[3 * i - 1] = r
    record[i] = {line[1], line[2]}
  end
  local held = cjson.encode({k = {KEYS[1], KEYS[2]}, a = ARGV[3], l = record})
  redis.call('HSET', KEYS[3], ARGV[2], held)
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
end
local out = {status, at, seeds[1], seeds[2]}
for _, v in ipairs(view) do out[#out + 1] = v end
return out
"""
)

# ARGV: now. Releases expired reservations, returns both period hashes whole.
VIEW = (
    _SWEEP
    + """
sweep(tonumber(ARGV[1]))
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""
)

# KEYS: 1 day hash, 2 month hash, 3 reservations, 4 leases. ARGV: now, replica, expiry (ms),
# share (a decimal string: the part of what is left the replicas keep in reserve), live
# replicas, the smallest useful reserve (one call's worst case), n, then n x (period 1|2,
# budget, limit, floor). Sizes this replica's outage reserve on each budget: share x (limit
# - spent - what others hold) / replicas, never more than is free (a reserve only grows into
# money nobody holds), and none when that would not pay for one call (it would only be in
# the others' way); renews its lease. A period not seeded yet gets no reserve. It never
# shrinks below `floor`, what the replica counts on when it sends the script: should the
# answer come late or never, with an outage begun meanwhile, the replica may spend that much
# and no other replica can have it. The replica counts on the new size once it has the
# answer, and the next call shrinks the reserve to it. Returns, per line, {spent, held,
# reserve kept, new size}.
STANDBY = (
    _SWEEP
    + """
local now = tonumber(ARGV[1])
sweep(now)
local replica, share, replicas = ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5])
local smallest = tonumber(ARGV[6])
local prefix = 'b:' .. replica .. ':'
local out, record = {}, {}
for i = 1, tonumber(ARGV[7]) do
  local b = 7 + (i - 1) * 4
  local period, name, limit = tonumber(ARGV[b + 1]), ARGV[b + 2], tonumber(ARGV[b + 3])
  local floor = tonumber(ARGV[b + 4])
  local key = KEYS[period]
  local v = redis.call('HMGET', key, 'seed', 's:' .. name, 'r:' .. name, prefix .. name)
  local s, r, own = tonumber(v[2] or '0'), tonumber(v[3] or '0'), tonumber(v[4] or '0')
  local target = 0
  if v[1] then
    local free = limit - s - r
    target = math.floor(share * math.max(0, limit - s - (r - own)) / replicas)
    if target > own + math.max(0, free) then target = own + math.max(0, free) end
    if target < smallest then target = 0 end
    local keep = math.max(target, math.min(own, floor))
    if keep ~= own then
      r = redis.call('HINCRBY', key, 'r:' .. name, string.format('%d', keep - own))
      if keep > 0 then
        redis.call('HSET', key, prefix .. name, string.format('%d', keep))
      else
        redis.call('HDEL', key, prefix .. name)
      end
      own = keep
    end
    record[#record + 1] = {period, name}
  end
  out[#out + 1] = {s, r, own, target}
end
local id = 'sb:' .. replica
local rec = {k = {KEYS[1], KEYS[2]}, a = '0', sb = replica, l = record}
redis.call('HSET', KEYS[3], id, cjson.encode(rec))
redis.call('ZADD', KEYS[4], ARGV[3], id)
return out
"""
)

# KEYS: 1 period hash. ARGV: seed id, cut (ms), ttl (ms), n, then n x (budget, spent).
# Seeds the period once: a second seeder (another replica that read the ledger too) finds the
# seed there and changes nothing. Returns {1 if seeded now else 0, seed id, cut}.
SEED = """
local current = redis.call('HMGET', KEYS[1], 'seed', 'cut')
if current[1] then return {0, current[1], current[2]} end
redis.call('HSET', KEYS[1], 'seed', ARGV[1], 'cut', ARGV[2])
for i = 1, tonumber(ARGV[4]) do
  redis.call('HINCRBY', KEYS[1], 's:' .. ARGV[3 + 2 * i], ARGV[4 + 2 * i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, ARGV[1], ARGV[2]}
"""

# KEYS: 1 day hash, 2 month hash, 3 reservations, 4 leases. ARGV: n, then per reservation:
# id, amount, expiry, lines, lines x (period 1|2, budget). Holds again, without a limit
# check, reservations of calls still in flight that Redis does not know (it came back empty,
# or they were made from the local share while it was away). Returns how many it held.
HOLD = """
local p, held = 2, 0
for _ = 1, tonumber(ARGV[1]) do
  local id, amount, expiry, nl = ARGV[p], ARGV[p + 1], ARGV[p + 2], tonumber(ARGV[p + 3])
  p = p + 4
  local lines = {}
  for j = 1, nl do
    lines[j] = {tonumber(ARGV[p]), ARGV[p + 1]}
    p = p + 2
  end
  if redis.call('HEXISTS', KEYS[3], id) == 0 then
    for _, line in ipairs(lines) do
      redis.call('HINCRBY', KEYS[line[1]], 'r:' .. line[2], amount)
    end
    redis.call('HSET', KEYS[3], id, cjson.encode({k = {KEYS[1], KEYS[2]}, a = amount, l = lines}))
    redis.call('ZADD', KEYS[4], expiry, id)
    held = held + 1
  end
end
return held
"""

# KEYS: 1 reservations, 2 leases, 3.. period hashes. ARGV: now, replica, hashes, then per
# hash (must be seeded 1|0, the seed the replica knows or ''), then ops, then per op: seq,
# time (ms), reservation id, held amount, actual cost, lines, lines x (hash, budget, limit).
# A replica's settles, in order: each releases its reservation (if Redis still holds it)
# and adds its cost to each budget once (seq above the replica's mark in that hash) unless
# the period was seeded from a ledger that already holds it (time before the hash's cut).
# Returns {'ok', seeds, alerts (hash, budget, level, spent)..., view (hash, budget, spent,
# held)...}, or {'unseeded', hash} (nothing applied: seed it first), or {'reseeded', hash,
# seed} (the hash is not the one the replica applied to: Redis lost it; resend from the start).
APPLY = """
local replica = ARGV[2]
local nh = tonumber(ARGV[3])
local p = 4
local seed, cut, mark, seeds = {}, {}, {}, {}
for h = 1, nh do
  local key = KEYS[h + 2]
  local must, expect = ARGV[p], ARGV[p + 1]
  p = p + 2
  local info = redis.call('HMGET', key, 'seed', 'cut', 'w:' .. replica)
  if info[1] then
    if expect ~= '' and expect ~= info[1] then return {'reseeded', h, info[1]} end
    seed[h], cut[h], mark[h] = true, tonumber(info[2]), tonumber(info[3] or '0')
  elseif expect ~= '' then
    return {'reseeded', h, ''}
  elseif must == '1' then
    return {'unseeded', h}
  else
    seed[h] = false
  end
  seeds[h] = info[1] or ''
end
local top, alerts, touched, seen = {}, {}, {}, {}
for _ = 1, tonumber(ARGV[p]) do
  local seq, t, id = tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2]), ARGV[p + 3]
  local held, actual, nl = ARGV[p + 4], ARGV[p + 5], tonumber(ARGV[p + 6])
  p = p + 6
  local released = redis.call('HDEL', KEYS[1], id) == 1
  if released then redis.call('ZREM', KEYS[2], id) end
  for _ = 1, nl do
    local h, name, limit = tonumber(ARGV[p + 1]), ARGV[p + 2], tonumber(ARGV[p + 3])
    p = p + 3
    if seed[h] then
      local key = KEYS[h + 2]
      if released then redis.call('HINCRBY', key, 'r:' .. name, '-' .. held) end
      if seq > mark[h] and t >= cut[h] then
        if actual ~= '0' then
          local s = redis.call('HINCRBY', key, 's:' .. name, actual)
          if limit > 0 then
            local before = tonumber(redis.call('HGET', key, 'a:' .. name) or '0')
            local reached = before
            for _, level in ipairs({80, 90, 100}) do
              if level > before and s * 100 >= level * limit then
                alerts[#alerts + 1] = {h, name, level, s}
                reached = level
              end
            end
            if reached > before then redis.call('HSET', key, 'a:' .. name, reached) end
          end
        end
        top[h] = seq
      end
      local id2 = h .. ':' .. name
      if not seen[id2] then
        seen[id2] = true
        touched[#touched + 1] = {h, name}
      end
    end
  end
end
for h = 1, nh do
  if top[h] then redis.call('HSET', KEYS[h + 2], 'w:' .. replica, top[h]) end
end
local view = {}
for _, line in ipairs(touched) do
  local key = KEYS[line[1] + 2]
  local v = redis.call('HMGET', key, 's:' .. line[2], 'r:' .. line[2])
  view[#view + 1] = {line[1], line[2], tonumber(v[1] or '0'), tonumber(v[2] or '0')}
end
return {'ok', seeds, alerts, view}
"""
