package edge

import (
	"bufio"
	"io"
	"strings"
	"testing"
	"time"
)

func TestCORSOrigins(t *testing.T) {
	p, err := compileCORS(CORSPolicy{AllowedOrigins: []string{"https://app.example.com", "https://*.example.org", "http://localhost:8080"}})
	if err != nil {
		t.Fatal(err)
	}
	for origin, want := range map[string]bool{
		"https://app.example.com":          true,
		"HTTPS://App.Example.com":          true,
		"https://a.example.org":            true,
		"https://a.b.example.org":          true,
		"http://localhost:8080":            true,
		"https://example.org":              false,
		"https://.example.org":             false,
		"http://a.example.org":             false,
		"https://evil.com/.example.org":    false,
		"https://app.example.com.evil.net": false,
		"http://localhost:8081":            false,
		"null":                             false,
		"":                                 false,
	} {
		if got := p.allows(origin); got != want {
			t.Errorf("allows(%q) = %v, want %v", origin, got, want)
		}
	}
	if _, err := compileCORS(CORSPolicy{AllowedOrigins: []string{"*"}, AllowCredentials: true}); err == nil {
		t.Error(`"*" with credentials compiled`)
	}
	if _, err := compileCORS(CORSPolicy{AllowedOrigins: []string{"https://a.*.org"}}); err == nil {
		t.Error("a wildcard in the middle compiled")
	}
}

func TestParseGRPCTimeout(t *testing.T) {
	for in, want := range map[string]time.Duration{"1S": time.Second, "250m": 250 * time.Millisecond, "3H": 3 * time.Hour, "10n": 10} {
		if got, err := parseGRPCTimeout(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, in := range []string{"", "S", "1x", "-1S", "123456789S"} {
		if _, err := parseGRPCTimeout(in); err == nil {
			t.Errorf("%q parsed", in)
		}
	}
}

func TestBase64Reader(t *testing.T) {
	// Two segments, each padded on its own, as grpc-web-text clients send.
	in := "AAAAAAM=" + "gAAAAAE=" + "\r\n"
	b, err := io.ReadAll(&base64Reader{r: bufio.NewReader(strings.NewReader(in))})
	if err != nil || string(b) != "\x00\x00\x00\x00\x03\x80\x00\x00\x00\x01" {
		t.Fatalf("%q %v", b, err)
	}
	if _, err := io.ReadAll(&base64Reader{r: bufio.NewReader(strings.NewReader("AAA"))}); err == nil {
		t.Fatal("truncated input decoded")
	}
}

func TestNegotiateStream(t *testing.T) {
	for accept, want := range map[string]int{
		"":                     formatNDJSON,
		"*/*":                  formatNDJSON,
		"text/event-stream":    formatSSE,
		"application/json":     formatJSONArray,
		"application/x-ndjson": formatNDJSON,
		"application/json;q=0.5, text/event-stream": formatSSE,
		"text/event-stream;q=0.1, application/json": formatJSONArray,
	} {
		if got := negotiateStream(accept); got != want {
			t.Errorf("%q: %d, want %d", accept, got, want)
		}
	}
}
