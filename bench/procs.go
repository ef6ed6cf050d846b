package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a process the harness started and measures.
type proc struct {
	name string
	cmd  *exec.Cmd
	// withChildren counts the process's children too (nginx: master and
	// worker).
	withChildren bool
	exited       chan struct{}
	waitErr      error
}

func startProc(name string, cmd *exec.Cmd, withChildren bool) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, withChildren: withChildren, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// alive returns an error if the process has exited.
func (p *proc) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s (pid %d) exited: %v", p.name, p.pid(), p.waitErr)
	default:
		return nil
	}
}

// stop sends SIGTERM, waits up to 5s, then SIGKILLs. Only this process,
// by its pid.
func (p *proc) stop() {
	if p == nil || p.alive() != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// pids returns the process and, when withChildren, its direct children.
func (p *proc) pids() []int {
	ids := []int{p.pid()}
	if !p.withChildren {
		return ids
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.pid(), p.pid()))
	if err != nil {
		return ids
	}
	for _, f := range strings.Fields(string(b)) {
		if id, err := strconv.Atoi(f); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// cpuTicks returns utime+stime of the process (and children, see pids), in
// clock ticks.
func (p *proc) cpuTicks() (int64, error) {
	var sum int64
	for _, id := range p.pids() {
		t, err := readCPUTicks(id)
		if err != nil {
			return 0, err
		}
		sum += t
	}
	return sum, nil
}

// resetPeakRSS resets VmHWM to the current RSS (clear_refs value 5, Linux
// 4.0+), so that the peak read after a run is that run's. It returns false
// if the kernel refused.
func (p *proc) resetPeakRSS() bool {
	ok := true
	for _, id := range p.pids() {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", id), []byte("5"), 0); err != nil {
			ok = false
		}
	}
	return ok
}

// peakRSSKiB returns the sum of VmHWM over the process (and children).
func (p *proc) peakRSSKiB() (int64, error) {
	var sum int64
	for _, id := range p.pids() {
		v, err := readVmHWM(id)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// readCPUTicks parses utime (field 14) and stime (field 15) of
// /proc/PID/stat. Fields are counted after the command name, which may hold
// spaces and parentheses, so parsing starts after the last ')'.
func readCPUTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatTicks(b)
}

func parseStatTicks(b []byte) (int64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return u + s, nil
}

func readVmHWM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			v = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB"))
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// clockTicks returns `getconf CLK_TCK`.
func clockTicks() (int64, error) {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 0, fmt.Errorf("getconf CLK_TCK: %w", err)
	}
	return strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
}

// freePort returns a loopback address with a port that was free a moment
// ago.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitDial waits until addr accepts TCP connections, p exits or timeout.
func waitDial(p *proc, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if aerr := p.alive(); aerr != nil {
			return aerr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s not accepting after %s: %w", p.name, addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// machineBusyTicks returns the busy time of all CPUs (every /proc/stat "cpu"
// column except idle and iowait), in clock ticks.
func machineBusyTicks() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, errors.New("malformed /proc/stat")
	}
	var sum int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest time is already in user
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return sum, nil
}
