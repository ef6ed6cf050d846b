package config

import (
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/quota"
	"github.com/gatehouse-dev/gatehouse/tlsconfig"
)

// checkQuota checks what the quota fields' own rules cannot: policy names
// are unique, each policy is a rate or a quota, the routes it names exist,
// its CEL compiles, and the Redis password is not written in the file.
func (c checker) checkQuota(cfg *configv1.Config) {
	q := cfg.GetQuota()
	if q == nil {
		return
	}
	p := path{}.field("quota")
	routes := map[string]bool{}
	for _, r := range cfg.GetRoutes() {
		routes[r.GetName()] = true
	}
	if r := q.GetStore().GetRedis(); r != nil {
		c.redisStore(p.field("store").field("redis"), r)
	} else if q.GetReplicas() > 1 {
		c.errorf(p.field("replicas"), "only meaningful with store.redis (in memory, each replica counts alone)")
	}
	names := map[string]int{}
	for i, pol := range q.GetPolicies() {
		pp := p.field("policies").index(i)
		c.unique(pp.field("name"), "policy", pol.GetName(), names, i, "quota.policies")
		switch {
		case pol.GetRate() != nil && pol.GetQuota() != nil:
			c.errorf(pp.field("quota"), "give one of rate or quota, not both")
		case pol.GetRate() == nil && pol.GetQuota() == nil:
			c.errorf(pp.field("rate"), "required (or give quota)")
		case pol.GetRate() != nil && pol.GetRate().GetPer() == nil:
			c.errorf(pp.field("rate").field("per"), `required: the period, e.g. "1s", "1m" or "1h"`)
		case pol.GetQuota() != nil && pol.GetQuota().GetPer() == "":
			c.errorf(pp.field("quota").field("per"), `required: "DAY" or "MONTH"`)
		}
		if pol.GetRate() != nil && pol.GetRate().GetRequests() == 0 {
			c.errorf(pp.field("rate").field("requests"), "required: at least 1")
		}
		if pol.GetQuota() != nil && pol.GetQuota().GetRequests() == 0 {
			c.errorf(pp.field("quota").field("requests"), "required: at least 1")
		}
		seen := map[string]bool{}
		for j, r := range pol.GetRoutes() {
			switch {
			case seen[r]:
				c.errorf(pp.field("routes").index(j), "route %q is listed twice", r)
			case !routes[r]:
				c.errorf(pp.field("routes").index(j), "unknown route %q", r)
			}
			seen[r] = true
		}
		if k := pol.GetKey(); k != "" {
			if err := quota.CheckKey(k); err != nil {
				c.errorf(pp.field("key"), "%v", err)
			}
		}
		if w := pol.GetWhen(); w != "" {
			if err := quota.CheckWhen(w); err != nil {
				c.errorf(pp.field("when"), "%v", err)
			}
		}
	}
}

// redisStore checks the Redis connection settings.
func (c checker) redisStore(p path, r *configv1.RedisStore) {
	for i, a := range r.GetAddresses() {
		c.hostPort(p.field("addresses").index(i), a, false)
	}
	if pw := r.GetPassword(); pw != "" {
		switch {
		case r.GetPasswordFile() != "":
			c.errorf(p.field("password"), "give password or password_file, not both")
		case !tlsconfig.IsEnvRef(pw):
			c.errorf(p.field("password"), `write the password as "${ENV_VAR}" or put it in password_file: secrets are never inline`)
		}
	}
	if r.GetDb() != 0 && r.GetMasterName() == "" && len(r.GetAddresses()) > 1 {
		c.errorf(p.field("db"), "a Cluster (several addresses without master_name) has only database 0")
	}
}
