package config

import (
	"path/filepath"

	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
)

// checkTelemetry checks the telemetry and audit sections against each other
// and against the routes.
func (c checker) checkTelemetry(cfg *configv1.Config) {
	if ep := cfg.GetTelemetry().GetTracing().GetOtlp().GetEndpoint(); ep != "" {
		p := path{}.field("telemetry").field("tracing").field("otlp").field("endpoint")
		c.endpoint(p, ep)
	}
	a := cfg.GetAudit()
	if a == nil {
		return
	}
	ap := path{}.field("audit")
	al := cfg.GetTelemetry().GetAccessLog()
	if f := al.GetFile(); !al.GetDisabled() && f != "" && f != "-" && a.GetFile() != "" &&
		filepath.Clean(f) == filepath.Clean(a.GetFile()) {
		c.errorf(ap.field("file"), "the audit file must not be the access log file %q", f)
	}
	if a.GetFsyncInterval() != nil && a.GetFsync() != "INTERVAL" {
		c.errorf(ap.field("fsync_interval"), "only meaningful with fsync: INTERVAL")
	}
	routes := map[string]bool{}
	for _, r := range cfg.GetRoutes() {
		routes[r.GetName()] = true
	}
	seen := map[string]int{}
	for i, cp := range a.GetCapture() {
		p := ap.field("capture").index(i)
		if r := cp.GetRoute(); r != "" {
			if !routes[r] {
				c.errorf(p.field("route"), "unknown route %q", r)
			}
			if j, dup := seen[r]; dup {
				c.errorf(p.field("route"), "route %q is captured twice, also capture[%d]", r, j)
			} else {
				seen[r] = i
			}
		}
		for j, f := range cp.GetFields() {
			if !fieldPath(f) {
				c.errorf(p.field("fields").index(j), "want a field path such as \"customer.email\", got %q", f)
			}
		}
	}
	for i, f := range a.GetRedact() {
		if !fieldPath(f) {
			c.errorf(ap.field("redact").index(i), "want a field path such as \"customer.email\", got %q", f)
		}
	}
}

// fieldPath reports whether s is a dot-separated list of proto field names.
func fieldPath(s string) bool {
	if s == "" {
		return false
	}
	start := true
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '.':
			if start {
				return false
			}
			start = true
			continue
		case ch == '_' || 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z':
		case '0' <= ch && ch <= '9':
			if start {
				return false
			}
		default:
			return false
		}
		start = false
	}
	return !start
}
