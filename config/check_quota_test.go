package config_test

import (
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/config"
)

const quotaBase = `
listeners: [{ name: edge, address: "127.0.0.1:0" }]
backends: [{ name: orders, endpoints: ["127.0.0.1:9001"] }]
routes:
  - name: orders
    match: { service: "shop.orders.v1.Orders" }
    backend: orders
quota:
  store:
    redis: { addresses: ["127.0.0.1:6379"], timeout: "50ms", password: "${REDIS_PASSWORD}" }
  replicas: 3
  policies:
    - name: per-user
      key: "principal.subject"
      rate: { requests: 100, per: "1s", burst: 20 }
      routes: ["orders"]
      on_store_failure: FAIL_OPEN
    - name: free-plan-daily
      key: "principal.api_key"
      quota: { requests: 10000, per: DAY }
      when: 'principal.labels["plan"] == "free"'
      shadow: true
`

// TestQuotaIssueExample: the configuration shape of issue 7 loads as
// written.
func TestQuotaIssueExample(t *testing.T) {
	cfg, err := config.Parse("gatehouse.yaml", []byte(quotaBase))
	if err != nil {
		t.Fatal(err)
	}
	q := cfg.GetQuota()
	if q.GetReplicas() != 3 || len(q.GetPolicies()) != 2 || q.GetPolicies()[1].GetQuota().GetPer() != "DAY" {
		t.Errorf("quota = %v", q)
	}
}

func TestQuotaChecks(t *testing.T) {
	for _, tt := range []struct{ name, from, to, want string }{
		{"duplicate name", `name: free-plan-daily`, `name: per-user`, `quota.policies[1].name: duplicate policy name "per-user", also quota.policies[0]`},
		{"unknown route", `routes: ["orders"]`, `routes: ["order"]`, `quota.policies[0].routes[0]: unknown route "order"`},
		{"route twice", `routes: ["orders"]`, `routes: ["orders", "orders"]`, `quota.policies[0].routes[1]: route "orders" is listed twice`},
		{"both", `quota: { requests: 10000, per: DAY }`, `quota: { requests: 10000, per: DAY }
      rate: { requests: 1, per: "1s" }`, `quota.policies[1].quota: give one of rate or quota, not both`},
		{"neither", `      quota: { requests: 10000, per: DAY }
`, ``, `quota.policies[1].rate: required (or give quota)`},
		{"rate without per", `rate: { requests: 100, per: "1s", burst: 20 }`, `rate: { requests: 100 }`, `quota.policies[0].rate.per: required`},
		{"key does not compile", `key: "principal.subject"`, `key: "principal.subject +"`, `quota.policies[0].key: ERROR`},
		{"key not a string", `key: "principal.subject"`, `key: "route == 'x'"`, `quota.policies[0].key: the expression is of type bool, want string`},
		{"unknown variable", `key: "principal.subject"`, `key: "user.id"`, `quota.policies[0].key: ERROR`},
		{"when not a bool", `when: 'principal.labels["plan"] == "free"'`, `when: 'route'`, `quota.policies[1].when: the expression is of type string, want bool`},
		{"inline password", `password: "${REDIS_PASSWORD}"`, `password: "hunter2"`, `quota.store.redis.password: write the password as "${ENV_VAR}" or put it in password_file`},
		{"password twice", `password: "${REDIS_PASSWORD}"`, `password: "${REDIS_PASSWORD}", password_file: "/run/secrets/redis"`, `quota.store.redis.password: give password or password_file, not both`},
		{"bad address", `addresses: ["127.0.0.1:6379"]`, `addresses: ["redis"]`, `quota.store.redis.addresses[0]`},
		{"cluster db", `addresses: ["127.0.0.1:6379"]`, `addresses: ["127.0.0.1:7000", "127.0.0.1:7001"], db: 2`, `quota.store.redis.db: a Cluster`},
		{"replicas without redis", `  store:
    redis: { addresses: ["127.0.0.1:6379"], timeout: "50ms", password: "${REDIS_PASSWORD}" }
`, ``, `quota.replicas: only meaningful with store.redis`},
		{"bad failure mode", `on_store_failure: FAIL_OPEN`, `on_store_failure: OPEN`, `quota.policies[0].on_store_failure`},
		{"bad window", `per: DAY`, `per: WEEK`, `quota.policies[1].quota.per`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.Replace(quotaBase, tt.from, tt.to, 1)
			if src == quotaBase {
				t.Fatalf("%q not found in the base config", tt.from)
			}
			_, err := config.Parse("gatehouse.yaml", []byte(src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}
