package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// With -debug-log, containerd runs shims in debug mode and their log lines
// reach the daemon's log. Two of nsiso's lines bracket its work on a
// Create: runc.v2's task service logs "starting signal loop" when the shim
// comes up, and nsiso logs "nsiso: spec rewritten" at the end of prepare.
// The time between them is an upper bound of prepare in the real shim: it
// also holds the rest of the shim's start-up and the Create request's
// arrival.
var (
	logTime      = regexp.MustCompile(`^time="([^"]+)"`)
	logLoop      = regexp.MustCompile(`msg="starting signal loop" .*path=(\S+) .*runtime=` + regexp.QuoteMeta(nsisoRuntime))
	logRewritten = regexp.MustCompile(`msg="nsiso: spec rewritten" id=(\S+)`)
)

// prepareInSitu reads a daemon log and returns, per nsiso container id,
// the milliseconds from the shim's start-up line to its "spec rewritten"
// line.
func prepareInSitu(path string) (map[string]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("debug log: %w", err)
	}
	defer f.Close()
	started := map[string]time.Time{}
	out := map[string]float64{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		m := logTime.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		if m := logLoop.FindStringSubmatch(line); m != nil {
			started[filepath.Base(m[1])] = t
		} else if m := logRewritten.FindStringSubmatch(line); m != nil {
			if s, ok := started[m[1]]; ok {
				out[m[1]] = ms(t.Sub(s))
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("debug log %s: %w", path, err)
	}
	return out, nil
}

// attachPrepareInSitu adds the in-situ prepare times of a paired
// benchmark's timed nsiso containers to its result.
func attachPrepareInSitu(p *pairedResult, times map[string]float64) {
	if p == nil {
		return
	}
	prefix := p.Name + "-ns-"
	var xs []float64
	for id, d := range times {
		var i int
		if n, err := fmt.Sscanf(strings.TrimPrefix(id, prefix), "%d", &i); err == nil && n == 1 && strings.HasPrefix(id, prefix) && i >= p.Warmups {
			xs = append(xs, d)
		}
	}
	if len(xs) > 0 {
		s := summarize(xs)
		p.PrepareInSituMs = &s
	}
}
