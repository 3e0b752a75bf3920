package integration

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parseMetrics reads `nsiso audit --format prometheus` as node_exporter's
// textfile collector and Prometheus do.
func parseMetrics(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse metrics: %v\n%s", err, text)
	}
	return mfs
}

// seriesKey renders a label set in name order, leaving out empty values
// (to the format, an empty label is no label).
func seriesKey(labels map[string]string) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		if labels[k] != "" {
			kv = append(kv, k+"="+labels[k])
		}
	}
	return "{" + strings.Join(kv, ",") + "}"
}

// familyValues maps each sample of a family to its value.
func familyValues(mfs map[string]*dto.MetricFamily, name string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range mfs[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		out[seriesKey(labels)] = m.GetGauge().GetValue()
	}
	return out
}

// visible is a label value as the metrics write a string from a client:
// characters that are not printable (controls, separators, invisible
// format characters) and bytes that are not UTF-8 as Go escapes.
func visible(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		s = s[n:]
	}
	return b.String()
}

// modeClass is a metric's ipc_mode, pid_mode or shm for a JSON mode.
func modeClass(m string) string {
	if strings.HasPrefix(m, "container:") {
		return "container"
	}
	return m
}

// checkMetricsMatchJSON audits the node with args as JSON and as metrics
// and checks that the metrics say what the JSON says: the counts by mode,
// runtime and source, one series per host sharer with its pod, and the
// number of findings. It returns the JSON run.
func checkMetricsMatchJSON(t *testing.T, args ...string) auditResult {
	t.Helper()
	j := runAudit(t, nil, append(slices.Clone(args), "--format", "json")...)
	p := runAudit(t, nil, append(slices.Clone(args), "--format", "prometheus")...)
	if j.code != p.code || j.stderr != p.stderr {
		t.Errorf("JSON run: exit %d, stderr %q; metrics run: exit %d, stderr %q", j.code, j.stderr, p.code, p.stderr)
	}
	mfs := parseMetrics(t, p.stdout)
	recs := j.allRecords(t)

	counts := map[string]float64{}
	sharers := map[string]map[string]float64{
		"nsiso_audit_host_ipc_sharing": {}, "nsiso_audit_host_shm_sharing": {}, "nsiso_audit_host_pid_sharing": {},
	}
	for _, r := range recs {
		counts[seriesKey(map[string]string{"ipc_mode": modeClass(r.IPCMode), "pid_mode": modeClass(r.PIDMode),
			"shm": modeClass(r.ShmSource), "runtime": visible(r.Runtime), "source": r.Source})]++
		kind := func(sandbox bool, ns, name string) string {
			switch {
			case sandbox:
				return "sandbox"
			case ns != "" || name != "":
				return "container"
			}
			return ""
		}
		key := seriesKey(map[string]string{"namespace": r.Namespace, "id": r.ID, "pod_namespace": r.PodNamespace,
			"pod": r.PodName, "container": r.ContainerName, "kind": kind(r.Sandbox, r.PodNamespace, r.PodName),
			"claimed_pod_namespace": visible(r.ClaimedPodNamespace), "claimed_pod": visible(r.ClaimedPodName),
			"claimed_container": visible(r.ClaimedContainerName),
			"claimed_kind":      kind(r.ClaimedSandbox, r.ClaimedPodNamespace, r.ClaimedPodName),
			"runtime":           visible(r.Runtime), "source": r.Source})
		if r.IPCMode == "host" {
			sharers["nsiso_audit_host_ipc_sharing"][key] = 1
		}
		if r.ShmSource == "host" {
			sharers["nsiso_audit_host_shm_sharing"][key] = 1
		}
		if r.PIDMode == "host" {
			sharers["nsiso_audit_host_pid_sharing"][key] = 1
		}
	}
	want := map[string]map[string]float64{
		"nsiso_audit_success":    {"{}": 1},
		"nsiso_audit_findings":   {"{}": float64(strings.Count(j.stderr, "nsiso audit: "))},
		"nsiso_audit_containers": counts,
	}
	maps.Copy(want, sharers)
	for name, w := range want {
		if got := familyValues(mfs, name); !maps.Equal(got, w) {
			t.Errorf("%s:\n got %v\nwant %v (from the JSON)", name, got, w)
		}
	}
	for _, name := range []string{"nsiso_audit_last_run_timestamp_seconds", "nsiso_audit_duration_seconds"} {
		if v := familyValues(mfs, name)["{}"]; v <= 0 {
			t.Errorf("%s = %v, want a positive value", name, v)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", p.stdout)
	}
	return j
}

// checkOutputFile audits into a file with --output and checks that the
// file is the whole report, world-readable, with nothing left beside it.
func checkOutputFile(t *testing.T, wantCode int, args ...string) map[string]*dto.MetricFamily {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "nsiso-audit.prom")
	r := runAudit(t, nil, append(slices.Clone(args), "--format", "prometheus", "--output", path)...)
	if r.code != wantCode || r.stdout != "" {
		t.Errorf("--output: exit %d, stdout %q, stderr %q; want %d and nothing on stdout", r.code, r.stdout, r.stderr, wantCode)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("--output wrote no file: %v", err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("--output file mode %v, want 0644", fi.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("--output left more than the file: %v", entries)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseMetrics(t, string(data))
}
