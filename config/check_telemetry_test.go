package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/config"
)

const telemetryBase = `
listeners: [{name: edge, address: "127.0.0.1:8080"}]
backends: [{name: b, endpoints: ["127.0.0.1:9001"]}]
routes: [{name: r, match: {service: "*"}, backend: b}]
`

func TestCheckTelemetry(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"bad collector endpoint", `telemetry: {tracing: {otlp: {endpoint: "collector"}}}`, "test.yaml: telemetry.tracing.otlp.endpoint: want host:port"},
		{"unknown capture route", `audit: {file: a.jsonl, capture: [{route: nope, fields: [id]}]}`, `test.yaml: audit.capture[0].route: unknown route "nope"`},
		{"duplicate capture route", `audit: {file: a.jsonl, capture: [{route: r, fields: [id]}, {route: r, fields: [x]}]}`, `audit.capture[1].route: route "r" is captured twice`},
		{"bad field path", `audit: {file: a.jsonl, capture: [{route: r, fields: ["customer..email"]}]}`, `audit.capture[0].fields[0]: want a field path`},
		{"bad redact path", `audit: {file: a.jsonl, redact: ["1x"]}`, `audit.redact[0]: want a field path`},
		{"interval without INTERVAL", `audit: {file: a.jsonl, fsync_interval: 2s}`, `audit.fsync_interval: only meaningful with fsync: INTERVAL`},
		{"audit file is the access log", "telemetry: {access_log: {file: ./x.log}}\naudit: {file: x.log}", `audit.file: the audit file must not be the access log file`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse("test.yaml", []byte(telemetryBase+tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

func TestTelemetryDefaults(t *testing.T) {
	cfg, err := config.Parse("test.yaml", []byte(telemetryBase+`
telemetry: {tracing: {otlp: {endpoint: "127.0.0.1:4317"}}, access_log: {sample_successes: 0.25}}
audit: {file: a.jsonl, fsync: INTERVAL, capture: [{route: r, fields: [id, customer.email]}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := config.Telemetry(cfg)
	if s.TracingEndpoint != "127.0.0.1:4317" || s.OTLPProtocol != "GRPC" || !s.OTLPInsecure || s.SamplingRatio != 1 ||
		s.ServiceName != "gatehouse" || s.QueueSize != 2048 || s.SampleSuccesses != 0.25 || s.AccessLogFile != "-" ||
		!s.AccessLog || !s.Metrics || s.AccessLogMaxSizeMB != 100 || s.AccessLogMaxBackups != 5 {
		t.Errorf("telemetry = %+v", s)
	}
	a := config.Audit(cfg)
	if a.File != "a.jsonl" || a.Fsync != "INTERVAL" || a.FsyncInterval != time.Second || a.OnSinkFailure != "FAIL_CLOSED" ||
		len(a.Capture["r"]) != 2 {
		t.Errorf("audit = %+v", a)
	}
	if off := config.Audit(nil); off.File != "" {
		t.Errorf("audit without a section = %+v", off)
	}
	remote, _ := config.Parse("test.yaml", []byte(telemetryBase+`telemetry: {tracing: {otlp: {endpoint: "otel.example.com:4317"}}}`))
	if config.Telemetry(remote).OTLPInsecure {
		t.Error("a remote collector defaults to insecure")
	}
}
