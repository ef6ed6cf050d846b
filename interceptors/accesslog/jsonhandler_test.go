package accesslog_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	pkg "github.com/gatehouse-dev/gatehouse/interceptors/accesslog"
)

// slogLine is what slog.NewJSONHandler writes for r.
func slogLine(t testing.TB, r slog.Record) string {
	t.Helper()
	var b bytes.Buffer
	if err := slog.NewJSONHandler(&b, nil).Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func fastLine(t testing.TB, r slog.Record) string {
	t.Helper()
	var b bytes.Buffer
	if err := pkg.NewJSONHandler(&b).Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestJSONHandlerMatchesSlog checks that JSONHandler writes, byte for byte,
// what slog's JSON handler writes, for the values that need care (escapes,
// invalid UTF-8, floats on both sides of the exponent thresholds) and for
// the kinds it hands to slog.
func TestJSONHandlerMatchesSlog(t *testing.T) {
	when := time.Date(2026, 11, 27, 14, 6, 11, 123456789, time.UTC)
	tests := []struct {
		name  string
		time  time.Time
		level slog.Level
		msg   string
		attrs []slog.Attr
	}{
		{name: "access line", time: when, level: slog.LevelInfo, msg: "grpc call", attrs: []slog.Attr{
			slog.String("grpc.method", "/grpc.testing.TestService/UnaryCall"),
			slog.String("route", "test"),
			slog.String("grpc.code", "OK"),
			slog.Int("http_status", 200),
			slog.Float64("duration_ms", 0.412345),
			slog.Float64("upstream_duration_ms", 0),
			slog.Int64("bytes_received", 69),
			slog.Int64("bytes_sent", 0),
			slog.String("peer", "127.0.0.1:50312"),
			slog.String("user_agent", "grpc-go/1.85.0"),
		}},
		{name: "escapes", time: when, level: slog.LevelWarn, msg: "quote \" backslash \\ nl \n cr \r tab \t", attrs: []slog.Attr{
			slog.String("ctl", "\x00\x01\x1f\x7f"),
			slog.String("html", "<a href='x'>&amp;</a>"),
			slog.String("utf8", "é 日本 🎉"),
			slog.String("invalid", "a\xffb\xc3"),
			slog.String("separators", "x\u2028y\u2029z"),
			slog.String("key \"quoted\"\n", "v"),
			slog.String("empty", ""),
		}},
		{name: "floats", time: when, level: slog.LevelError, msg: "", attrs: []slog.Attr{
			slog.Float64("zero", 0),
			slog.Float64("negzero", math.Copysign(0, -1)),
			slog.Float64("small", 1e-6),
			slog.Float64("smaller", 9.99e-7),
			slog.Float64("tiny", 1e-7),
			slog.Float64("tinier", 1.5e-10),
			slog.Float64("denormal", 5e-324),
			slog.Float64("big", 1e20),
			slog.Float64("bigger", 1e21),
			slog.Float64("huge", 1.7976931348623157e308),
			slog.Float64("neg", -123.456),
			slog.Float64("third", 1.0/3),
		}},
		{name: "other fast kinds", time: when.In(time.FixedZone("X", -7*3600)), level: slog.Level(2), msg: "m", attrs: []slog.Attr{
			slog.Int64("min", math.MinInt64),
			slog.Uint64("max", math.MaxUint64),
			slog.Bool("t", true),
			slog.Bool("f", false),
			slog.Duration("d", 1500*time.Millisecond),
		}},
		{name: "whole second, no time", level: slog.LevelInfo, msg: "m", attrs: []slog.Attr{slog.String("a", "b")}},
		{name: "slow: error value", time: when, level: slog.LevelInfo, msg: "m", attrs: []slog.Attr{slog.Any("err", errors.New("boom \"x\""))}},
		{name: "slow: group", time: when, level: slog.LevelInfo, msg: "m", attrs: []slog.Attr{slog.Group("g", slog.String("a", "b"))}},
		{name: "slow: time value", time: when, level: slog.LevelInfo, msg: "m", attrs: []slog.Attr{slog.Time("at", when)}},
		{name: "slow: NaN", time: when, level: slog.LevelInfo, msg: "m", attrs: []slog.Attr{slog.Float64("nan", math.NaN())}},
		{name: "slow: empty key", time: when, level: slog.LevelInfo, msg: "m", attrs: []slog.Attr{slog.String("", "v"), slog.Attr{}}},
		{name: "slow: year 10000", time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), level: slog.LevelInfo, msg: "m"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := slog.NewRecord(tt.time, tt.level, tt.msg, 0)
			r.AddAttrs(tt.attrs...)
			want, got := slogLine(t, r), fastLine(t, r)
			if got != want {
				t.Errorf("line differs from slog's\n got: %s\nwant: %s", got, want)
			}
		})
	}
}

// FuzzJSONHandlerMatchesSlog compares JSONHandler with slog's JSON handler
// on arbitrary strings, floats and integers.
func FuzzJSONHandlerMatchesSlog(f *testing.F) {
	f.Add("grpc call", "/pkg.S/M", 0.25, int64(42), int64(1764252371123456789))
	f.Add("\x00\"\\\u2028\xff", "é<>&", 1e-7, int64(-1), int64(0))
	f.Add("", "", 1e21, int64(math.MaxInt64), int64(-62135596800000000))
	f.Fuzz(func(t *testing.T, msg, s string, fl float64, n, ns int64) {
		r := slog.NewRecord(time.Unix(0, ns).UTC(), slog.LevelInfo, msg, 0)
		r.AddAttrs(slog.String("s", s), slog.String(s, msg), slog.Float64("f", fl), slog.Int64("n", n))
		if want, got := slogLine(t, r), fastLine(t, r); got != want {
			t.Errorf("line differs from slog's\n got: %q\nwant: %q", got, want)
		}
	})
}

// TestJSONHandlerLevelsAndDerived checks the level threshold, and that
// WithAttrs and WithGroup handlers write through the same writer.
func TestJSONHandlerLevelsAndDerived(t *testing.T) {
	var b bytes.Buffer
	h := pkg.NewJSONHandler(&b)
	ctx := context.Background()
	if h.Enabled(ctx, slog.LevelDebug) || !h.Enabled(ctx, slog.LevelInfo) {
		t.Error("Enabled: want Info and above only")
	}
	l := slog.New(h).With("svc", "gw").WithGroup("g")
	l.Info("hello", "k", 1)
	if got := b.String(); !strings.Contains(got, `"msg":"hello","svc":"gw","g":{"k":1}}`) {
		t.Errorf("derived handler wrote %q", got)
	}
}

// TestJSONHandlerConcurrentLines checks that lines written at once from
// many goroutines, through the fast and the slow path, never interleave.
func TestJSONHandlerConcurrentLines(t *testing.T) {
	var b bytes.Buffer
	h := pkg.NewJSONHandler(&b)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				r := slog.NewRecord(time.Now(), slog.LevelInfo, "m", 0)
				if (g+i)%2 == 0 {
					r.AddAttrs(slog.String("pad", strings.Repeat("x", 300)))
				} else {
					r.AddAttrs(slog.Any("err", errors.New(strings.Repeat("y", 300))))
				}
				_ = h.Handle(context.Background(), r)
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 1600 {
		t.Fatalf("%d lines, want 1600", len(lines))
	}
	for _, ln := range lines {
		if !strings.HasPrefix(ln, `{"time":`) || !strings.HasSuffix(ln, `"}`) || strings.Count(ln, `{"time":`) != 1 {
			t.Fatalf("torn line %q", ln)
		}
	}
}
