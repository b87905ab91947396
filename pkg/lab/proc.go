package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// markerEnv is set on every process the lab starts, with the state folder
// as value: Down kills a recorded pid only if it still carries the marker,
// so a reused pid never hits someone else's process.
const markerEnv = "IRONLB_LAB"

// Start launches a long-running lab process in the background, in network
// namespace ns (root namespace when empty), detached from the caller, with
// its output in logs/NAME.log and its pid in pids/NAME.pid.
func (c Config) Start(name, ns string, argv ...string) error {
	if err := os.MkdirAll(c.path("logs"), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(c.path("pids"), 0o755); err != nil {
		return err
	}
	if c.Running(name) {
		return fmt.Errorf("%s is already running", name)
	}
	log, err := os.OpenFile(c.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer func() { _ = log.Close() }()
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), markerEnv+"="+c.Dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	_, _ = fmt.Fprintf(log, "--- %s start: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	pid := cmd.Process.Pid
	// Reap it if it dies while we are still around; the pid file is the
	// record for later commands.
	go func() { _ = cmd.Wait() }()
	return os.WriteFile(c.path("pids", name+".pid"), []byte(strconv.Itoa(pid)), 0o644)
}

// pid returns the recorded pid of a lab process, if it is alive and ours.
func (c Config) pid(name string) (int, bool) {
	b, err := os.ReadFile(c.path("pids", name+".pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	return pid, c.ours(pid)
}

// Pid returns the pid of a running lab process (ip netns exec replaces
// itself with the program, so it is the program's).
func (c Config) Pid(name string) (int, bool) { return c.pid(name) }

// ours tells whether pid is alive, not a zombie, and carries our marker.
func (c Config) ours(pid int) bool {
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return false
	}
	if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return false
		}
	}
	return bytes.Contains(env, []byte(markerEnv+"="+c.Dir+"\x00"))
}

// Running tells whether a lab process is alive.
func (c Config) Running(name string) bool {
	_, ok := c.pid(name)
	return ok
}

// Stop ends a lab process: SIGTERM, then SIGKILL after grace.
func (c Config) Stop(name string, grace time.Duration) error {
	pid, ok := c.pid(name)
	_ = os.Remove(c.path("pids", name+".pid"))
	if !ok {
		return nil
	}
	return terminate(pid, grace)
}

// Kill ends a lab process with SIGKILL at once, as a crash would, and
// waits until it is gone.
func (c Config) Kill(name string) error {
	pid, ok := c.pid(name)
	if !ok {
		return fmt.Errorf("%s is not running", name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s: %w", name, err)
	}
	_ = os.Remove(c.path("pids", name+".pid"))
	return waitGone(pid, 5*time.Second)
}

// stopAll stops every recorded lab process.
func (c Config) stopAll(grace time.Duration) error {
	files, _ := filepath.Glob(c.path("pids", "*.pid"))
	var errs []error
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".pid")
		if err := c.Stop(name, grace); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func terminate(pid int, grace time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return nil // already gone
	}
	if waitGone(pid, grace) == nil {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return waitGone(pid, 5*time.Second)
}

func killPid(pid int) { _ = terminate(pid, 2*time.Second) }

// waitGone polls until the process no longer exists or is a zombie.
func waitGone(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil
		}
		if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("process %d still running after %s", pid, limit)
}

// killMarked kills every process that carries this lab's marker, recorded
// or not (containerd's shims, which outlive a killed containerd).
func (c Config) killMarked() {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, p := range procs {
		pid, err := strconv.Atoi(filepath.Base(p))
		if err != nil || pid == os.Getpid() || pid <= 1 {
			continue
		}
		if c.ours(pid) {
			pids = append(pids, pid)
		}
	}
	killAll(pids, 2*time.Second)
}

// killAll sends SIGTERM to every pid (SIGKILL at once when grace is 0),
// then SIGKILL to those still there after grace, and waits for them.
func killAll(pids []int, grace time.Duration) {
	sig := syscall.SIGTERM
	if grace == 0 {
		sig = syscall.SIGKILL
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
	for _, pid := range pids {
		if waitGone(pid, grace) != nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			_ = waitGone(pid, 5*time.Second)
		}
	}
}
