"""The Lua scripts the Redis store runs; each is atomic on the server.

Keys are built by the store (``aimsec:<model>:...`` with hashed client ids). Fingerprint
index entries are packed little-endian ``<I4I4I4I2I2``: hash, serial, time (whole
seconds), and the low 16 bits of the client tag and of the content tag: 16 bytes each.
Serials count modulo 2^32, as the entries hold them, and an entry is alive while fewer
than ``capacity`` serials have been stored after it (counted modulo 2^32), so the index
keeps working past 2^32 stored fingerprints.
Short tags only blur two rare cases: a near-duplicate taken for an exact repeat of the
same content (1 in 65,536 pairs) and a match attributed to the same client.
"""

from .ratelimit import REDIS_ACQUIRE_SCRIPT

#: Seconds as Redis' EXPIRE / SET EX take them: whole, at least 1, and at most about 68
#: years (a valid policy may say 1e300 s, which Redis refuses as out of range; a key
#: that outlives its use is harmless, as each entry carries its own time); and
#: ``capped``: the end of a lock or suspicion stored at ``key``, at most ``longest``
#: seconds from ``now`` (one set by a clock since set back is shortened, and stored so).
_SECONDS = """
local function seconds(x)
  return math.min(math.max(1, math.ceil(x)), 2147483647)
end
local function capped(key, ends, now, longest)
  if ends - now > longest then
    ends = now + longest
    redis.call('SET', key, string.format('%.17g', ends), 'KEEPTTL')
  end
  return ends
end
"""

#: Refused calls and suspicions buffered since the last round trip.
#: KEYS: per failure (failures sorted set, lock), then per suspicion (suspect key).
#: ARGV: nfailures, then per failure (token, now, max, window, lockout); then per
#: suspicion (until, ttl seconds).
#: A failure is a member named by its token (unique per failure), scored by its time:
#: sent twice (a round trip whose reply was lost is sent again with the next one) it
#: counts once; one from before the lockout in force began (it was counted into that
#: lockout) counts no more: the lock holds its end as 17 digits (exact; tostring's 14
#: could round below the end, and the failure that began the lockout counted again),
#: compared as ``now + lockout`` (rounded as when the lock was set). A client is locked
#: out when its last ``max`` failures lie within ``window`` seconds of the newest.
#: Failures stamped after ``now`` (by a clock since set back) count as ``now``: kept as
#: they were, one stayed the newest and no later ones were ever within the window of it.
APPLY = _SECONDS + """
local nf = tonumber(ARGV[1])
local a = 2
for i = 1, nf do
  local fkey, lkey = KEYS[2 * i - 1], KEYS[2 * i]
  local token, now, max = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local window, lockout = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  a = a + 5
  local locked = tonumber(redis.call('GET', lkey) or '0')
  if not (locked > 0 and now + lockout <= locked) then
    for _, ahead in ipairs(redis.call('ZRANGEBYSCORE', fkey, '(' .. ARGV[a - 4], '+inf')) do
      redis.call('ZADD', fkey, now, ahead)
    end
    redis.call('ZADD', fkey, now, token)
    redis.call('ZREMRANGEBYRANK', fkey, 0, -max - 1)
    redis.call('EXPIRE', fkey, seconds(window))
    if redis.call('ZCARD', fkey) >= max then
      local oldest = redis.call('ZRANGE', fkey, 0, 0, 'WITHSCORES')
      local newest = redis.call('ZRANGE', fkey, -1, -1, 'WITHSCORES')
      if tonumber(oldest[2]) >= tonumber(newest[2]) - window then
        redis.call('SET', lkey, string.format('%.17g', now + lockout), 'EX', seconds(lockout))
        redis.call('DEL', fkey)
      end
    end
  end
end
local k = 2 * nf + 1
while a <= #ARGV do
  redis.call('SET', KEYS[k], ARGV[a], 'EX', seconds(tonumber(ARGV[a + 1])))
  k = k + 1
  a = a + 2
end
return nf
"""

#: Lockout and minimum interval, and the fingerprint secret. KEYS: lock, last, secret.
#: ARGV: now, interval, check lock (0/1), the caller's secret, the lockout's duration.
#: Times after ``now`` were stamped by a clock since set back (as in the memory store): a
#: lock ending later than a lockout from now ends a lockout from now, and the last call
#: counts as made ``now``, so neither outlasts its setting.
#: Returns {"locked", seconds, secret} / {"interval", seconds, secret} / {"ok", "", secret}
#: where secret is "" when the caller's is the stored one, else the stored one (the key
#: was flushed or evicted and another replica wrote its own first); a missing secret is
#: written back, so replicas never fingerprint with different secrets for long.
ADMIT = _SECONDS + """
local secret = redis.call('GET', KEYS[3])
if not secret then
  redis.call('SET', KEYS[3], ARGV[4])
  secret = ARGV[4]
end
if secret == ARGV[4] then secret = '' end
local now = tonumber(ARGV[1])
if ARGV[3] == '1' then
  local locked = tonumber(redis.call('GET', KEYS[1]) or '0')
  if locked > now then
    locked = capped(KEYS[1], locked, now, tonumber(ARGV[5]))
    return {'locked', tostring(locked - now), secret}
  end
end
local interval = tonumber(ARGV[2])
if interval > 0 then
  local last = tonumber(redis.call('GET', KEYS[2]) or '-1e300')
  if last > now then
    last = now
    redis.call('SET', KEYS[2], ARGV[1], 'EX', seconds(interval + 1))
  end
  if now - last < interval then
    return {'interval', tostring(last + interval - now), secret}
  end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', seconds(interval + 1))
end
return {'ok', '', secret}
"""

#: Repeats, standing suspicion, and the fingerprint index (match, then store, sample by
#: sample). KEYS: repeat, suspect, serial, then one bucket key per hash of every sample.
#: ARGV: now, repeat window (0: no repeat counting), ttl, capacity, ways, client tag,
#: the suspicion's longest duration (session_timeout: one set by a clock since set back
#: ends that long from now), nsamples, then per sample: content tag, k, k hashes.
#: Returns {repeats, suspect (string seconds or ""), best1, same1, best2, same2, ...}.
OBSERVE = _SECONDS + """
local now = tonumber(ARGV[1])
local rwindow = tonumber(ARGV[2])
local ttl, capacity, ways = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local client, n = tonumber(ARGV[6]), tonumber(ARGV[8])
local out = {0, ''}
if rwindow > 0 then
  out[1] = redis.call('INCR', KEYS[1]) - 1
  if out[1] == 0 then redis.call('EXPIRE', KEYS[1], seconds(rwindow)) end
end
local suspect = tonumber(redis.call('GET', KEYS[2]) or '0')
if suspect > now then
  suspect = capped(KEYS[2], suspect, now, tonumber(ARGV[7]))
  out[2] = tostring(suspect - now)
end
if n == 0 then return out end
local serials = 4294967296
local serial = tonumber(redis.call('GET', KEYS[3]) or '0') % serials
local since = math.floor(now - ttl)
local a, k = 9, 4
for s = 1, n do
  local content, m = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local counts, owners, best, bestserial = {}, {}, 0, nil
  for j = 0, m - 1 do
    local h = tonumber(ARGV[a + j])
    local entries = redis.call('LRANGE', KEYS[k + j], 0, ways - 1)
    for _, e in ipairs(entries) do
      local eh, es, et, ec, ecv = struct.unpack('<I4I4I4I2I2', e)
      if eh == h and et >= since and (serial - es) % serials < capacity and ecv ~= content then
        local c = (counts[es] or 0) + 1
        counts[es] = c
        owners[es] = ec
        if c > best then best, bestserial = c, es end
      end
    end
  end
  out[#out + 1] = best
  out[#out + 1] = (bestserial ~= nil and owners[bestserial] == client) and 1 or 0
  serial = (serial + 1) % serials
  local stamp = math.floor(now)
  for j = 0, m - 1 do
    local entry = struct.pack('<I4I4I4I2I2', tonumber(ARGV[a + j]), serial, stamp, client, content)
    redis.call('LPUSH', KEYS[k + j], entry)
    redis.call('LTRIM', KEYS[k + j], 0, ways - 1)
    redis.call('EXPIRE', KEYS[k + j], seconds(ttl))
  end
  a = a + m
  k = k + m
end
redis.call('SET', KEYS[3], serial)
return out
"""

#: The quota: ``limits``' own moving-window script (KEYS[1]: the client's window, newest
#: call first; ARGV: now, limit, expiry, amount; true when admitted) after two steps of
#: its own. KEYS[2]: the client's lock; ARGV[5]: check it (0/1). A call the lockout
#: refuses is not counted (returns -1, as in the memory store): counted, a client calling
#: on through its lockout found its quota full of those calls when it ended, was refused,
#: and so was locked out again at once. Calls stamped after ``now`` (by a clock since set
#: back) count as made ``now``, so the window never outlasts its minute.
ACQUIRE = """
if ARGV[5] == '1' and tonumber(redis.call('GET', KEYS[2]) or '0') > tonumber(ARGV[1]) then
  return -1
end
do
  local i, now = 0, tonumber(ARGV[1])
  local call = redis.call('LINDEX', KEYS[1], 0)
  while call and tonumber(call) > now do
    redis.call('LSET', KEYS[1], i, ARGV[1])
    i = i + 1
    call = redis.call('LINDEX', KEYS[1], i)
  end
end
""" + (REDIS_ACQUIRE_SCRIPT.decode() if isinstance(REDIS_ACQUIRE_SCRIPT, bytes)
       else REDIS_ACQUIRE_SCRIPT)
