package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Throttle confines the host's daemon to pct percent of one CPU, as a busy
// service, a throttled cgroup or a starved VM would, until undo is called
// (or the lab closes). It uses the cpu controller of cgroup v1 where the
// machine mounts it, else cgroup v2.
func (h *Host) Throttle(pct int) (undo func(), err error) {
	pid := h.PID()
	if pid == 0 {
		return nil, fmt.Errorf("%s: daemon not running", h.Name)
	}
	const period = 100000 // µs
	quota := strconv.Itoa(period * pct / 100)
	name := "arpshare-" + h.lab.Suffix + "-" + h.Name
	var dir, home string
	var limits [][2]string
	if _, err := os.Stat("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"); err == nil {
		root := "/sys/fs/cgroup/cpu"
		dir, home = filepath.Join(root, name), filepath.Join(root, cgroupOf(pid, "cpu"))
		limits = [][2]string{{"cpu.cfs_period_us", strconv.Itoa(period)}, {"cpu.cfs_quota_us", quota}}
	} else {
		root := "/sys/fs/cgroup"
		if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("+cpu"), 0); err != nil {
			return nil, fmt.Errorf("enable the cpu controller: %w", err)
		}
		dir, home = filepath.Join(root, name), filepath.Join(root, cgroupOf(pid, ""))
		limits = [][2]string{{"cpu.max", quota + " " + strconv.Itoa(period)}}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make cgroup: %w", err)
	}
	h.throttled = dir
	undo = func() {
		os.WriteFile(filepath.Join(home, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		os.Remove(dir)
	}
	h.lab.onClose(undo)
	for _, l := range limits {
		if err := os.WriteFile(filepath.Join(dir, l[0]), []byte(l[1]), 0); err != nil {
			undo()
			return nil, fmt.Errorf("cgroup %s: %w", l[0], err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		undo()
		return nil, fmt.Errorf("move daemon into cgroup: %w", err)
	}
	return undo, nil
}

// cgroupOf returns the cgroup path of pid under the v1 controller (or, with
// controller "", under cgroup v2), "/" when it cannot tell.
func cgroupOf(pid int, controller string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if (controller == "" && parts[0] == "0") || (controller != "" && strings.Contains(","+parts[1]+",", ","+controller+",")) {
			return parts[2]
		}
	}
	return "/"
}

// ThrottleStats returns what the kernel says of the throttling so far.
func (h *Host) ThrottleStats() string {
	b, _ := os.ReadFile(filepath.Join(h.throttled, "cpu.stat"))
	return strings.Join(strings.Fields(string(b)), " ")
}
