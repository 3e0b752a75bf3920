package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nsiso/nsiso/testenv"
)

// Environment knobs of the start-up measurement (defaults: 3 rounds of 30).
const (
	startupRoundsEnv = "NSISO_E2E_STARTUP_ROUNDS"
	startupPodsEnv   = "NSISO_E2E_STARTUP_PODS"
)

// burst is one burst of pods of one RuntimeClass: each pod's time from
// `kubectl apply` to the first watch event that shows it Running.
type burst struct {
	Class     string    `json:"class"`
	Round     int       `json:"round"`
	LatencyMs []float64 `json:"latency_ms"`
}

// testStartup measures pod start-up as Kubernetes users see it: a burst
// of pods applied at once, created → Running, on the nsiso RuntimeClass
// and on the runc one, paired round by round in alternating order. It
// reports; it asserts nothing about time.
func testStartup(t *testing.T) {
	ctx := context.Background()
	rounds, pods := envInt(startupRoundsEnv, 3), envInt(startupPodsEnv, 30)
	// The first bursts on a fresh node run faster than any after them
	// (measured: 0.66 of the next): one untimed burst per class first.
	for _, class := range []string{"nsiso", "runc"} {
		if _, err := runBurst(ctx, t, class, -1, pods); err != nil {
			t.Fatal(err)
		}
	}
	var all []burst
	for r := 0; r < rounds; r++ {
		order := []string{"nsiso", "runc"}
		if r%2 == 1 {
			order = []string{"runc", "nsiso"}
		}
		for _, class := range order {
			b, err := runBurst(ctx, t, class, r, pods)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, b)
		}
	}
	report(t, all, rounds)
}

func runBurst(ctx context.Context, t *testing.T, class string, round, n int) (burst, error) {
	id := fmt.Sprintf("%s-%d", class, round)
	if round < 0 {
		id = class + "-warmup"
	}
	sel := "burst=" + id
	var items []any
	for i := 0; i < n; i++ {
		p := podSpec{name: fmt.Sprintf("%s-%02d", id, i), runtimeClass: class, labels: map[string]string{"burst": id}}
		var m any
		_ = json.Unmarshal([]byte(p.manifest()), &m)
		items = append(items, m)
	}
	list, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})

	// The watch starts first, so no transition is missed.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch := exec.CommandContext(wctx, filepath.Join(cluster.bin, "kubectl"), "--kubeconfig="+cluster.Kubeconfig,
		"get", "pods", "-l", sel, "-w", "-o", `jsonpath={.metadata.name} {.status.phase}{"\n"}`)
	stdout, err := watch.StdoutPipe()
	if err != nil {
		return burst{}, err
	}
	if err := watch.Start(); err != nil {
		return burst{}, err
	}
	defer func() { _ = watch.Wait() }()
	time.Sleep(500 * time.Millisecond) // the watch is established
	start := time.Now()
	if _, err := cluster.KubectlIn(ctx, string(list), "apply", "-f", "-"); err != nil {
		return burst{}, err
	}
	running := map[string]float64{}
	sc := bufio.NewScanner(stdout)
	deadline := time.AfterFunc(5*time.Minute, cancel)
	defer deadline.Stop()
	for len(running) < n && sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[1] == "Running" {
			if _, seen := running[f[0]]; !seen {
				running[f[0]] = float64(time.Since(start).Microseconds()) / 1000
			}
		}
	}
	cancel()
	if len(running) < n {
		return burst{}, fmt.Errorf("burst %s: %d of %d pods Running", id, len(running), n)
	}
	b := burst{Class: class, Round: round}
	for _, ms := range running {
		b.LatencyMs = append(b.LatencyMs, ms)
	}
	sort.Float64s(b.LatencyMs)
	deletePods(ctx, t, "default", sel)
	return b, nil
}

// report logs a table per round and the paired ratios, and writes the
// samples to _output/e2e-startup.json.
func report(t *testing.T, all []burst, rounds int) {
	byKey := map[string]burst{}
	for _, b := range all {
		byKey[fmt.Sprintf("%s-%d", b.Class, b.Round)] = b
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "pod start-up, created → Running, burst of %d pods\n", len(all[0].LatencyMs))
	fmt.Fprintf(&sb, "%-6s %-6s %10s %10s %10s\n", "round", "class", "median ms", "p90 ms", "last ms")
	var medRatios, lastRatios []float64
	for r := 0; r < rounds; r++ {
		for _, class := range []string{"nsiso", "runc"} {
			b := byKey[fmt.Sprintf("%s-%d", class, r)]
			fmt.Fprintf(&sb, "%-6d %-6s %10.0f %10.0f %10.0f\n", r, class, quantile(b.LatencyMs, 0.5), quantile(b.LatencyMs, 0.9), quantile(b.LatencyMs, 1))
		}
		n, c := byKey[fmt.Sprintf("nsiso-%d", r)], byKey[fmt.Sprintf("runc-%d", r)]
		medRatios = append(medRatios, quantile(n.LatencyMs, 0.5)/quantile(c.LatencyMs, 0.5))
		lastRatios = append(lastRatios, quantile(n.LatencyMs, 1)/quantile(c.LatencyMs, 1))
	}
	sort.Float64s(medRatios)
	sort.Float64s(lastRatios)
	fmt.Fprintf(&sb, "nsiso/runc per round: median %v, last %v\n", fmtRatios(medRatios), fmtRatios(lastRatios))
	for _, r := range []struct {
		name   string
		ratios []float64
	}{{"median pod", medRatios}, {"last pod", lastRatios}} {
		lo, hi, conf := medianCI(r.ratios)
		fmt.Fprintf(&sb, "nsiso/runc, %s: median of rounds %.3f, %.1f%% CI [%.3f, %.3f]\n", r.name, quantile(r.ratios, 0.5), conf*100, lo, hi)
	}
	t.Log(sb.String())
	if root, err := testenv.RepoRoot(); err == nil {
		b, _ := json.MarshalIndent(all, "", " ")
		_ = os.WriteFile(filepath.Join(root, "_output", "e2e-startup.json"), b, 0o644)
	}
}

func fmtRatios(r []float64) string {
	s := make([]string, len(r))
	for i, v := range r {
		s[i] = strconv.FormatFloat(v, 'f', 3, 64)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// medianCI is the distribution-free confidence interval of the median of
// sorted samples (the sign test's order statistics): the narrowest
// [x(k), x(n+1-k)] whose coverage is at least 95 %, or the whole range
// when there are too few samples for that.
func medianCI(sorted []float64) (lo, hi, coverage float64) {
	n := len(sorted)
	if n == 0 {
		return 0, 0, 0
	}
	// below[k] = P(Binomial(n, 1/2) < k)
	tail := func(k int) float64 {
		p, c := 0.0, 1.0
		for i := 0; i < k; i++ {
			p += c
			c = c * float64(n-i) / float64(i+1)
		}
		return p / math.Pow(2, float64(n))
	}
	k := 1
	for k+1 <= n/2 && 1-2*tail(k+1) >= 0.95 {
		k++
	}
	return sorted[k-1], sorted[n-k], 1 - 2*tail(k)
}

// quantile of sorted samples, nearest rank.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
