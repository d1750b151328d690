package testenv

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Where a benchmark's CPU went, read from /proc (Linux only): a benchmark on a shared machine cannot trust
// its wall clock alone, but the CPU time each service spent on it is its own.

// CPUGroup names a process whose CPU time is counted, with its children's when Tree is set (a Postgres
// server: the postmaster and its backends, live or exited).
type CPUGroup struct {
	Name    string
	Tree    bool
	Matches func(p Proc) bool
}

// Proc is a process as /proc shows it.
type Proc struct {
	PID, PPID int
	Cmdline   string
	// cpu is user + system time; reaped is what its exited children used (cutime + cstime).
	cpu, reaped time.Duration
}

// clockTick is USER_HZ, 100 on every Linux this runs on.
const clockTick = 10 * time.Millisecond

func readProcs() map[int]Proc {
	procs := map[int]Proc{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(dir))
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			continue
		}
		// After the parenthesised command name: state ppid … utime(14) stime(15) cutime(16) cstime(17).
		i := strings.LastIndexByte(string(stat), ')')
		f := strings.Fields(string(stat)[i+2:])
		if len(f) < 15 {
			continue
		}
		ticks := func(s string) time.Duration { n, _ := strconv.ParseInt(s, 10, 64); return time.Duration(n) * clockTick }
		ppid, _ := strconv.Atoi(f[1])
		raw, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
		procs[pid] = Proc{PID: pid, PPID: ppid, Cmdline: strings.ReplaceAll(string(raw), "\x00", " "),
			cpu: ticks(f[11]) + ticks(f[12]), reaped: ticks(f[13]) + ticks(f[14])}
	}
	return procs
}

// CPUSample is the CPU time of each group, and of the whole machine.
type CPUSample struct {
	at      time.Time
	byGroup map[string]time.Duration
	machine time.Duration
}

// SampleCPU reads the CPU time of each group now.
func SampleCPU(groups []CPUGroup) CPUSample {
	s := CPUSample{at: time.Now(), byGroup: map[string]time.Duration{}}
	procs := readProcs()
	for _, g := range groups {
		for _, p := range procs {
			if !g.Matches(p) {
				continue
			}
			s.byGroup[g.Name] += p.cpu
			if g.Tree {
				s.byGroup[g.Name] += p.reaped
				for _, c := range procs {
					if c.PPID == p.PID {
						s.byGroup[g.Name] += c.cpu
					}
				}
			}
		}
	}
	if stat, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(stat), "\n")
		for i, v := range strings.Fields(line)[1:] {
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			n, _ := strconv.ParseInt(v, 10, 64)
			s.machine += time.Duration(n) * clockTick
		}
	}
	return s
}

// CPUReport says how much CPU each group used between two samples, in seconds, and what the rest of the
// machine used.
func CPUReport(groups []CPUGroup, before, after CPUSample) string {
	wall := after.at.Sub(before.at).Seconds()
	var parts []string
	var ours time.Duration
	for _, g := range groups {
		d := after.byGroup[g.Name] - before.byGroup[g.Name]
		ours += d
		parts = append(parts, fmt.Sprintf("%s %.1f s", g.Name, d.Seconds()))
	}
	m := after.machine - before.machine
	parts = append(parts, fmt.Sprintf("all of these %.1f s (%.2f cores)", ours.Seconds(), ours.Seconds()/wall),
		fmt.Sprintf("anything else %.1f s (%.2f cores)", (m-ours).Seconds(), (m-ours).Seconds()/wall))
	return strings.Join(parts, ", ")
}

// PostgresServer matches the postmaster listening on the port of databaseURL (use it with Tree).
func PostgresServer(databaseURL string) func(Proc) bool {
	u, err := url.Parse(databaseURL)
	if err != nil || u.Port() == "" {
		return func(Proc) bool { return false }
	}
	port := regexp.MustCompile(`(^|\s)-p\s+` + regexp.QuoteMeta(u.Port()) + `(\s|$)`)
	return func(p Proc) bool {
		return !strings.HasPrefix(p.Cmdline, "postgres:") && strings.Contains(p.Cmdline, "postgres") && port.MatchString(p.Cmdline)
	}
}

// ElasticsearchNode matches the Elasticsearch process serving HTTP on the port of esURL: its configuration
// folder (ES_PATH_CONF in its environment) says the port.
func ElasticsearchNode(esURL string) func(Proc) bool {
	u, err := url.Parse(esURL)
	if err != nil || u.Port() == "" {
		return func(Proc) bool { return false }
	}
	want := regexp.MustCompile(`(?m)^http\.port:\s*` + regexp.QuoteMeta(u.Port()) + `\s*$`)
	return func(p Proc) bool {
		if !strings.Contains(p.Cmdline, "org.elasticsearch.bootstrap.Elasticsearch") {
			return false
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.PID))
		if err != nil {
			return false
		}
		for _, kv := range strings.Split(string(env), "\x00") {
			if dir, ok := strings.CutPrefix(kv, "ES_PATH_CONF="); ok {
				conf, err := os.ReadFile(filepath.Join(dir, "elasticsearch.yml"))
				return err == nil && want.Match(conf)
			}
		}
		return false
	}
}

// Process matches one process by its id.
func Process(pid int) func(Proc) bool { return func(p Proc) bool { return p.PID == pid } }

// PID is the process id of the running Kratos (0 when stopped).
func (k *Kratos) PID() int {
	if k.cmd == nil || k.cmd.Process == nil {
		return 0
	}
	return k.cmd.Process.Pid
}
