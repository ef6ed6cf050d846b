package main

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gatehouse-dev/gatehouse/config"
)

// TestSummary renders the start summary of example configs, as text and as
// log records, against golden files.
func TestSummary(t *testing.T) {
	for _, tt := range []struct{ name, file string }{
		{"example", "../../examples/gatehouse.yaml"},
		{"risky", "testdata/summary/risky.yaml"},
		{"kubernetes", "../../deploy/kubernetes/configmap.yaml"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(filepath.Base(tt.file), "configmap") {
				data = configMapData(t, data)
			}
			cfg, err := config.Parse(tt.file, data)
			if err != nil {
				t.Fatal(err)
			}
			// A bound address replaces the configured one (port 0).
			bound := func(name string) net.Addr {
				if name == "internal" {
					return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 38080}
				}
				return nil
			}
			s := summarize(cfg, bound)

			var text bytes.Buffer
			s.writeText(&text)
			golden(t, filepath.Join("summary", tt.name+".txt.golden"), text.String())

			var logs bytes.Buffer
			s.log(slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{
				ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
					if a.Key == slog.TimeKey && len(groups) == 0 {
						return slog.Attr{}
					}
					return a
				},
			})))
			golden(t, filepath.Join("summary", tt.name+".log.golden"), logs.String())
		})
	}
}

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "[::1]:8080": true, "localhost:80": true, "127.9.9.9:1": true,
		"0.0.0.0:8080": false, ":8080": false, "[::]:8080": false, "10.0.0.1:80": false, "example.com:80": false, "nonsense": false,
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
