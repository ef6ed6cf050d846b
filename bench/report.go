package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// sample is one target under one load in one round.
type sample struct {
	Round       int     `json:"round"`
	Target      string  `json:"target"`
	Load        string  `json:"load"`
	Calls       int64   `json:"calls"` // successful calls (streams for stream loads, round trips for bidi)
	Errors      int64   `json:"errors"`
	FirstError  string  `json:"first_error,omitempty"`
	Seconds     float64 `json:"seconds"`
	CallsPerSec float64 `json:"calls_per_sec"`
	P50us       float64 `json:"p50_us"`
	P90us       float64 `json:"p90_us"`
	P99us       float64 `json:"p99_us"`
	// TargetCPUus is the CPU per call of the process the client talks to:
	// the proxy, or the backend for direct.
	TargetCPUus float64 `json:"target_cpu_us_per_call"`
	// ProxyCPUus is 0 for direct.
	ProxyCPUus   float64 `json:"proxy_cpu_us_per_call"`
	BackendCPUus float64 `json:"backend_cpu_us_per_call"`
	// TotalCPUus is proxy + backend: what serving a call cost the machine,
	// minus the load generator.
	TotalCPUus float64 `json:"total_cpu_us_per_call"`
	// LoadgenCPUus is the harness process (the load generator) per call.
	LoadgenCPUus float64 `json:"loadgen_cpu_us_per_call"`
	// OtherCPUs is how many CPUs everything else on the machine kept busy
	// during the run, on average: a noise gauge, ideally near 0.
	OtherCPUs         float64 `json:"other_cpus"`
	ProxyCPUTicks     int64   `json:"proxy_cpu_ticks"`
	BackendCPUTicks   int64   `json:"backend_cpu_ticks"`
	TargetPeakRSSKiB  int64   `json:"target_peak_rss_kib"`
	ProxyPeakRSSKiB   int64   `json:"proxy_peak_rss_kib"`
	BackendPeakRSSKiB int64   `json:"backend_peak_rss_kib"`
}

// spread is a median over rounds with its min and max.
type spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

func spreadOf(v []float64) spread {
	if len(v) == 0 {
		return spread{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return spread{Median: m, Min: s[0], Max: s[len(s)-1]}
}

func (s spread) String() string { return s.format("%.1f") }

func (s spread) format(f string) string {
	if s.Min == s.Max {
		return fmt.Sprintf(f, s.Median)
	}
	return fmt.Sprintf(f+" ("+f+"–"+f+")", s.Median, s.Min, s.Max)
}

// row summarises one target under one load over every round.
type row struct {
	Load           string  `json:"load"`
	Target         string  `json:"target"`
	Rounds         int     `json:"rounds"`
	CallsPerSec    spread  `json:"calls_per_sec"`
	P50us          spread  `json:"p50_us"`
	P90us          spread  `json:"p90_us"`
	P99us          spread  `json:"p99_us"`
	Errors         int64   `json:"errors"`
	TargetCPUus    spread  `json:"target_cpu_us_per_call"`
	BackendCPUus   spread  `json:"backend_cpu_us_per_call"`
	TotalCPUus     spread  `json:"total_cpu_us_per_call"`
	LoadgenCPUus   spread  `json:"loadgen_cpu_us_per_call"`
	OtherCPUs      spread  `json:"other_cpus"`
	TargetPeakMiB  float64 `json:"target_peak_rss_mib"`
	BackendPeakMiB float64 `json:"backend_peak_rss_mib"`
}

// ratio is one of the acceptance floors, computed per round.
type ratio struct {
	Name     string    `json:"name"`
	Floor    string    `json:"floor"`
	Value    spread    `json:"value"`
	PerRound []float64 `json:"per_round"`
	Pass     *bool     `json:"pass,omitempty"`
	Note     string    `json:"note,omitempty"`
}

type report struct {
	Date      string   `json:"date"`
	Host      string   `json:"host"`
	Gatehouse string   `json:"gatehouse"`
	Nginx     string   `json:"nginx,omitempty"`
	Rounds    int      `json:"rounds"`
	Duration  string   `json:"duration"`
	Warmup    string   `json:"warmup"`
	ClkTck    int64    `json:"clk_tck"`
	Loads     []load   `json:"loads"`
	Rows      []row    `json:"summary"`
	Ratios    []ratio  `json:"ratios"`
	Samples   []sample `json:"samples"`
}

func buildReport(f *flags, e *env, samples []sample) *report {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	r := &report{
		Date:      time.Now().UTC().Format(time.RFC3339),
		Host:      fmt.Sprintf("%d CPUs, %s/%s, Linux %s, %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, strings.TrimSpace(string(kernel)), runtime.Version()),
		Gatehouse: e.gatehouseVersion,
		Nginx:     e.nginxVersion,
		Rounds:    f.rounds,
		Duration:  f.duration.String(),
		Warmup:    f.warmup.String(),
		ClkTck:    e.clkTck,
		Loads:     f.loads,
		Samples:   samples,
	}
	for _, l := range f.loads {
		for _, t := range targetsFor(l, f.targets) {
			ss := pick(samples, l.Name, t)
			if len(ss) == 0 {
				continue
			}
			col := func(get func(sample) float64) spread {
				v := make([]float64, len(ss))
				for i, s := range ss {
					v[i] = get(s)
				}
				return spreadOf(v)
			}
			rw := row{Load: l.Name, Target: t, Rounds: len(ss),
				CallsPerSec:  col(func(s sample) float64 { return s.CallsPerSec }),
				P50us:        col(func(s sample) float64 { return s.P50us }),
				P90us:        col(func(s sample) float64 { return s.P90us }),
				P99us:        col(func(s sample) float64 { return s.P99us }),
				TargetCPUus:  col(func(s sample) float64 { return s.TargetCPUus }),
				BackendCPUus: col(func(s sample) float64 { return s.BackendCPUus }),
				TotalCPUus:   col(func(s sample) float64 { return s.TotalCPUus }),
				LoadgenCPUus: col(func(s sample) float64 { return s.LoadgenCPUus }),
				OtherCPUs:    col(func(s sample) float64 { return s.OtherCPUs }),
			}
			for _, s := range ss {
				rw.Errors += s.Errors
				rw.TargetPeakMiB = max(rw.TargetPeakMiB, float64(s.TargetPeakRSSKiB)/1024)
				rw.BackendPeakMiB = max(rw.BackendPeakMiB, float64(s.BackendPeakRSSKiB)/1024)
			}
			r.Rows = append(r.Rows, rw)
		}
	}
	r.Ratios = ratios(samples, f.rounds)
	return r
}

// pick returns the samples of one load and target, in round order.
func pick(samples []sample, loadName, target string) []sample {
	var out []sample
	for _, s := range samples {
		if s.Load == loadName && s.Target == target {
			out = append(out, s)
		}
	}
	return out
}

// perRound pairs the samples of two targets under one load round by round
// and applies f to each pair.
func perRound(samples []sample, rounds int, loadName, a, b string, f func(a, b sample) float64) []float64 {
	var v []float64
	for round := 1; round <= rounds; round++ {
		var sa, sb *sample
		for i := range samples {
			s := &samples[i]
			if s.Round != round || s.Load != loadName {
				continue
			}
			switch s.Target {
			case a:
				sa = s
			case b:
				sb = s
			}
		}
		if sa != nil && sb != nil {
			v = append(v, f(*sa, *sb))
		}
	}
	return v
}

func ratios(samples []sample, rounds int) []ratio {
	var out []ratio
	add := func(name, floor string, v []float64, limit float64, note string) {
		if len(v) == 0 {
			return
		}
		r := ratio{Name: name, Floor: floor, Value: spreadOf(v), PerRound: v, Note: note}
		if limit > 0 {
			pass := r.Value.Median <= limit
			r.Pass = &pass
		}
		out = append(out, r)
	}
	// Gateways not run (gatehouse-shared-http unless asked for) add no rows.
	gateways := []string{targetGatehouseGRPC, targetGatehouseShared, targetGatehouseSharedHTTP}
	// References: nginx, and grpc-floor (grpc-go alone) when it ran.
	refs := []string{targetNginx, targetGRPCFloor}
	withRefs := append(slices.Clone(gateways), refs...)

	// 1. Proxy CPU per unary call at 50 concurrent, Gatehouse ÷ nginx.
	for _, l := range []string{"unary-64B-c50", "unary-16KiB-c50"} {
		for _, g := range gateways {
			v := perRound(samples, rounds, l, g, targetNginx, func(a, b sample) float64 { return a.ProxyCPUus / b.ProxyCPUus })
			add(fmt.Sprintf("CPU/call %s ÷ nginx, %s", g, l), "≤ 1.5", v, 1.5, "")
		}
		v := perRound(samples, rounds, l, targetGRPCFloor, targetNginx, func(a, b sample) float64 { return a.ProxyCPUus / b.ProxyCPUus })
		add(fmt.Sprintf("CPU/call %s ÷ nginx, %s", targetGRPCFloor, l), "(reference)", v, 0, "")
	}
	// 2. Added median latency over direct at concurrency 1.
	for _, l := range []string{"unary-64B-c1", "unary-16KiB-c1"} {
		for _, t := range withRefs {
			v := perRound(samples, rounds, l, t, targetDirect, func(a, b sample) float64 { return a.P50us - b.P50us })
			add(fmt.Sprintf("added p50 µs over direct, %s, %s", t, l), "", v, 0, "")
		}
		for _, g := range gateways {
			// Per round: Gatehouse's added p50 minus nginx's (≤ 0 passes).
			var v []float64
			for round := 1; round <= rounds; round++ {
				var d, gs, ng *sample
				for i := range samples {
					s := &samples[i]
					if s.Round == round && s.Load == l {
						switch s.Target {
						case targetDirect:
							d = s
						case g:
							gs = s
						case targetNginx:
							ng = s
						}
					}
				}
				if d != nil && gs != nil && ng != nil {
					v = append(v, (gs.P50us-d.P50us)-(ng.P50us-d.P50us))
				}
			}
			if len(v) > 0 {
				r := ratio{Name: fmt.Sprintf("added p50 %s − added p50 nginx (µs), %s", g, l), Floor: "≤ 0", Value: spreadOf(v), PerRound: v}
				pass := r.Value.Median <= 0
				r.Pass = &pass
				out = append(out, r)
			}
		}
	}
	// 3. The 1,000-message stream's total time over direct.
	for _, t := range withRefs {
		v := perRound(samples, rounds, "stream-1000x64B", t, targetDirect, func(a, b sample) float64 { return a.P50us / b.P50us })
		limit := 1.3
		floor := "≤ 1.3"
		if slices.Contains(refs, t) {
			limit, floor = 0, "(reference)"
		}
		add(fmt.Sprintf("stream-1000 p50 time %s ÷ direct", t), floor, v, limit, "")
	}
	// Informational: bidi round trip over direct.
	for _, t := range withRefs {
		v := perRound(samples, rounds, "bidi-pingpong-64B", t, targetDirect, func(a, b sample) float64 { return a.P50us / b.P50us })
		add(fmt.Sprintf("bidi round-trip p50 %s ÷ direct", t), "(info)", v, 0, "")
	}
	return out
}

func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Gatehouse benchmark\n\n")
	fmt.Fprintf(&b, "- date: %s\n- host: %s\n- gatehouse: %s\n", r.Date, r.Host, r.Gatehouse)
	if r.Nginx != "" {
		fmt.Fprintf(&b, "- %s\n", r.Nginx)
	}
	fmt.Fprintf(&b, "- %d round(s), %s measured + %s warm-up per target and load; CLK_TCK %d\n", r.Rounds, r.Duration, r.Warmup, r.ClkTck)
	fmt.Fprintf(&b, "- cells: median over rounds, (min–max) when rounds differ; latency in µs; CPU in µs per call; RSS = peak (VmHWM) during the run\n\n")

	fmt.Fprintf(&b, "| load | target | calls/s | p50 µs | p90 µs | p99 µs | errors | target CPU µs/call | backend CPU µs/call | proxy+backend CPU µs/call | target peak RSS MiB | loadgen CPU µs/call | other CPUs busy |\n")
	fmt.Fprintf(&b, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, rw := range r.Rows {
		total := rw.TotalCPUus.String()
		if rw.Target == targetDirect {
			total = rw.BackendCPUus.String()
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %.1f | %s | %s |\n",
			rw.Load, rw.Target, rw.CallsPerSec.format("%.0f"), rw.P50us, rw.P90us, rw.P99us, rw.Errors,
			rw.TargetCPUus, rw.BackendCPUus, total, rw.TargetPeakMiB, rw.LoadgenCPUus, rw.OtherCPUs.format("%.2f"))
	}

	fmt.Fprintf(&b, "\n### Ratios against the floors\n\n")
	fmt.Fprintf(&b, "| ratio | floor | median (min–max over rounds) | verdict |\n|---|---|---:|---|\n")
	for _, q := range r.Ratios {
		verdict := ""
		if q.Pass != nil {
			verdict = "FAIL"
			if *q.Pass {
				verdict = "pass"
			}
		}
		f := "%.2f"
		if strings.Contains(q.Name, "µs") {
			f = "%.1f"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", q.Name, q.Floor, q.Value.format(f), verdict)
	}
	var errs []string
	for _, s := range r.Samples {
		if s.FirstError != "" {
			errs = append(errs, fmt.Sprintf("- round %d, %s, %s: %d errors, first: %s", s.Round, s.Load, s.Target, s.Errors, s.FirstError))
		}
	}
	if len(errs) > 0 {
		fmt.Fprintf(&b, "\n### Errors\n\n%s\n", strings.Join(errs, "\n"))
	}
	return b.String()
}
