package quota

import (
	"context"
	"crypto/tls"
	"fmt"
	"strconv"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// RedisConfig says how to reach a Redis deployment.
type RedisConfig struct {
	// Addresses are host:port: one is a single node, several a Cluster,
	// and with MasterName they are Sentinels.
	Addresses []string
	// MasterName is the Sentinel master name.
	MasterName string
	// Username and Password are the ACL credentials (also the Sentinels').
	Username, Password string
	// DB is the database number (single node and Sentinel).
	DB int
	// TLS, when not nil, connects with TLS.
	TLS *tls.Config
	// Timeout bounds dialing, each read and write, and waiting for a pooled
	// connection; the Limiter also bounds each whole call with it.
	Timeout time.Duration
}

// NewRedisClient returns go-redis's universal client for c: it honours
// context deadlines, retries at most once, and dials, reads and writes
// within c.Timeout, so that a Redis that hangs costs a call no more than
// the timeout.
func NewRedisClient(c RedisConfig) redis.UniversalClient {
	t := c.Timeout
	if t <= 0 {
		t = DefaultTimeout
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                    c.Addresses,
		MasterName:               c.MasterName,
		Username:                 c.Username,
		Password:                 c.Password,
		SentinelUsername:         c.Username,
		SentinelPassword:         c.Password,
		DB:                       c.DB,
		TLSConfig:                c.TLS,
		ClientName:               "gatehouse",
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		MaxRetries:               1,
		DialTimeout:              t,
		ReadTimeout:              t,
		WriteTimeout:             t,
		PoolTimeout:              t,
		ContextTimeoutEnabled:    true,
	})
}

// KeyPrefix starts every key a Redis store writes.
const KeyPrefix = "gatehouse:"

// Redis is the Store that replicas share. GCRA runs on the Redis server
// with the server's clock (redis_rate's script); calendar quotas run in a
// script of their own that also reads the server's clock, so replicas whose
// clocks differ still agree on windows and rates. Each key is one Redis key,
// so a Cluster spreads them over its shards.
//
// Redis does not bound its own calls: the Limiter wraps each in the
// configured timeout.
type Redis struct {
	client  redis.UniversalClient
	limiter *redis_rate.Limiter
	now     func() time.Time // nil: the server's clock
}

var _ Store = (*Redis)(nil)

// NewRedis returns a store on client, which it does not own: the caller
// closes it.
func NewRedis(client redis.UniversalClient) *Redis {
	return &Redis{client: client, limiter: redis_rate.NewLimiter(client)}
}

// withCalendarClock makes calendar quotas use now instead of the server's
// clock: for tests of window boundaries only.
func (r *Redis) withCalendarClock(now func() time.Time) *Redis {
	c := *r
	c.now = now
	return &c
}

// AllowRate implements Store.
func (r *Redis) AllowRate(ctx context.Context, key string, rate Rate) (Result, error) {
	res, err := r.limiter.Allow(ctx, KeyPrefix+key, redis_rate.Limit{
		Rate:   int(rate.Requests),
		Period: rate.Per,
		Burst:  int(rate.capacity()),
	})
	if err != nil {
		return Result{}, err
	}
	out := Result{Allowed: res.Allowed > 0, Remaining: int64(res.Remaining), ResetAfter: max(res.ResetAfter, 0)}
	if !out.Allowed {
		out.RetryAfter = max(res.RetryAfter, 0)
	}
	return out, nil
}

// calendarScript counts a call against a calendar quota. KEYS[1] is a hash
// {w: window start (unix seconds), c: count}; ARGV: limit, "DAY" or
// "MONTH", and now in unix seconds ("" for the server's clock). It answers
// {allowed (0|1), remaining, seconds until the window ends}. A count left
// from an earlier window is discarded, and the key expires a minute after
// its window ends (EXPIRE relative to the script's now, the same instant as
// EXPIREAT on the server's clock). One key per quota keeps it
// Cluster-safe.
var calendarScript = redis.NewScript(`
redis.replicate_commands()
local now
if ARGV[3] ~= "" then
  now = tonumber(ARGV[3])
else
  local t = redis.call("TIME")
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local days = math.floor(now / 86400)
local start, stop
if ARGV[2] == "DAY" then
  start = days * 86400
  stop = start + 86400
else
  -- civil_from_days (H. Hinnant): the UTC date of day number "days".
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if mp >= 10 then m = mp - 9 end
  if m <= 2 then y = y + 1 end
  local len = 31
  if m == 4 or m == 6 or m == 9 or m == 11 then
    len = 30
  elseif m == 2 then
    len = 28
    if y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0) then len = 29 end
  end
  start = (days - (d - 1)) * 86400
  stop = start + len * 86400
end
local limit = tonumber(ARGV[1])
local cur = redis.call("HMGET", KEYS[1], "w", "c")
local count = 0
if cur[1] and tonumber(cur[1]) == start then
  count = tonumber(cur[2]) or 0
end
if count + 1 > limit then
  return {0, limit - count, tostring(stop - now)}
end
count = count + 1
redis.call("HSET", KEYS[1], "w", string.format("%d", start), "c", string.format("%d", count))
redis.call("EXPIRE", KEYS[1], string.format("%d", math.ceil(stop - now) + 60))
return {1, limit - count, tostring(stop - now)}
`)

// AllowCalendar implements Store.
func (r *Redis) AllowCalendar(ctx context.Context, key string, c Calendar) (Result, error) {
	now := ""
	if r.now != nil {
		now = strconv.FormatFloat(float64(r.now().UnixNano())/1e9, 'f', 6, 64)
	}
	v, err := calendarScript.Run(ctx, r.client, []string{KeyPrefix + "cal:" + key},
		strconv.FormatUint(c.Requests, 10), c.Per.String(), now).Slice()
	if err != nil {
		return Result{}, err
	}
	if len(v) != 3 {
		return Result{}, fmt.Errorf("quota: calendar script answered %v", v)
	}
	allowed, _ := v[0].(int64)
	remaining, _ := v[1].(int64)
	s, _ := v[2].(string)
	secs, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return Result{}, fmt.Errorf("quota: calendar script answered %v: %w", v, err)
	}
	reset := time.Duration(secs * float64(time.Second))
	out := Result{Allowed: allowed == 1, Remaining: remaining, ResetAfter: reset}
	if !out.Allowed {
		out.RetryAfter = reset
	}
	return out, nil
}
