package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/gatehouse-dev/gatehouse/audit"
	"github.com/gatehouse-dev/gatehouse/config"
	configv1 "github.com/gatehouse-dev/gatehouse/gen/gatehouse/config/v1"
	"github.com/gatehouse-dev/gatehouse/interceptors/accesslog"
	"github.com/gatehouse-dev/gatehouse/telemetry"
)

// auditCommand runs `gatehouse audit verify FILE`.
func auditCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 || args[0] != "verify" {
		fmt.Fprintln(stderr, "usage: gatehouse audit verify FILE")
		return 2
	}
	f, err := os.Open(args[1])
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer f.Close()
	sum, err := audit.Verify(f)
	if err != nil {
		var verr *audit.VerifyError
		if errors.As(err, &verr) {
			fmt.Fprintf(stdout, "%s: FAILED: %v\n", args[1], verr)
		} else {
			fmt.Fprintf(stderr, "%s: %v\n", args[1], err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok: %d records, last seq %d, head %s\n", args[1], sum.Records, sum.LastSeq, sum.Head)
	return 0
}

// accessLogFile returns the access logger writing to the configured file
// (rotated), or access unchanged when the access log goes to stdout or is
// off. The returned func closes the file.
func accessLogFile(cfg *configv1.Config, access *slog.Logger) (*slog.Logger, func(), error) {
	s := config.Telemetry(cfg)
	if access == nil || s.AccessLogFile == "-" {
		return access, func() {}, nil
	}
	w, err := telemetry.LogFile(s.AccessLogFile, s.AccessLogMaxSizeMB, s.AccessLogMaxBackups, nil)
	if err != nil {
		return nil, nil, err
	}
	buf := telemetry.NewLogBuffer(w, telemetry.AccessLogFlush)
	return slog.New(accesslog.NewJSONHandler(buf)), func() { _ = buf.Close(); _ = w.Close() }, nil
}
