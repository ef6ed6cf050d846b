package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse-dev/gatehouse/audit"
)

// TestAuditVerify runs `gatehouse audit verify` on a good file and on
// copies with one byte changed, one line removed and two lines swapped.
func TestAuditVerify(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "audit.jsonl")
	s, err := audit.Open(good, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := s.Write(&audit.Record{Time: time.Unix(int64(i), 0).UTC(), Method: "/a.B/C", Outcome: audit.Outcome{Code: "OK"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(good)
	lines := strings.SplitAfter(string(data), "\n")[:4]
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	changed := bytes.Clone(data)
	changed[bytes.Index(changed, []byte(`"/a.B/C"`))+2] = 'x'
	tests := []struct {
		name   string
		file   string
		code   int
		stdout string
	}{
		{"intact", good, 0, "ok: 4 records, last seq 4"},
		{"one byte changed", write("byte", changed), 1, "line 1: record altered"},
		{"one line removed", write("removed", []byte(lines[0]+lines[2]+lines[3])), 1, "line 2: record removed: seq 2 is missing before seq 3"},
		{"two lines swapped", write("swapped", []byte(lines[0]+lines[2]+lines[1]+lines[3])), 1, "line 2: record reordered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run([]string{"audit", "verify", tt.file}, &stdout, &stderr); code != tt.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tt.code, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.stdout) {
				t.Errorf("stdout %q, want it to contain %q", stdout.String(), tt.stdout)
			}
		})
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"audit"}, &stdout, &stderr); code != 2 {
		t.Errorf("bare audit: exit %d, want 2", code)
	}
}
