package telemetry

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"gopkg.in/natefinch/lumberjack.v2"
)

// LogFile is where the access log goes: "-" or "" for stdout (which Close
// leaves open), else a file, rotated when it reaches maxSizeMB megabytes,
// keeping maxBackups rotated files beside it.
//
// The file is opened once here, so that a path that cannot be written is
// an error at startup rather than a silent loss later.
func LogFile(path string, maxSizeMB, maxBackups int, stdout io.Writer) (io.WriteCloser, error) {
	if path == "" || path == "-" {
		return nopCloser{stdout}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("access log: %w", err)
	}
	_ = f.Close()
	return &lumberjack.Logger{
		Filename:   filepath.Clean(path),
		MaxSize:    maxSizeMB,
		MaxBackups: maxBackups,
	}, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }
