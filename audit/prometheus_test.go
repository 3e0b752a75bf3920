package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestEscapeLabelValue(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"team-x", "team-x"},
		{`a"b`, `a\"b`},
		{`C:\dir`, `C:\\dir`},
		// What is not printable becomes a visible Go escape first, whose
		// backslash the format then escapes.
		{"two\nlines", `two\\nlines`},
		{`\"` + "\n", `\\\"\\n`},
		{"tab\tgoes", `tab\\tgoes`},
		{"ünïcode ok", "ünïcode ok"},
		{"bad\xffbyte", `bad\\xffbyte`},
		{"\x1b]0;pwned\x07", `\\x1b]0;pwned\\a`},
		{"rlo\u202eadd\u2028ls\u0085nel\u00a0nbsp\x7fdel", `rlo\\u202eadd\\u2028ls\\u0085nel\\u00a0nbsp\\x7fdel`},
		{"", ""},
	} {
		if got := EscapeLabelValue(tc.in); got != tc.want {
			t.Errorf("EscapeLabelValue(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestModeClass(t *testing.T) {
	for in, want := range map[string]string{
		"host": "host", "private": "private", "unknown": "unknown", "own": "own", "none": "none",
		"container:abc": "container", "container:k8s.io/abc": "container",
	} {
		if got := ModeClass(in); got != want {
			t.Errorf("ModeClass(%q) = %q, want %q", in, got, want)
		}
	}
}

// parse reads metrics as Prometheus (and node_exporter's textfile
// collector) does, with the strict legacy name rules.
func parse(t *testing.T, text string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse metrics: %v\n%s", err, text)
	}
	return mfs
}

// series renders each sample of a family as "name{l=v,...} value" with the
// label values as parsed, so that a test compares what a reader sees.
func series(mf *dto.MetricFamily) []string {
	var out []string
	for _, m := range mf.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		out = append(out, canon(mf.GetName()+"{"+strings.Join(ls, ",")+"} "+
			strconv.FormatFloat(m.GetGauge().GetValue(), 'f', -1, 64)))
	}
	slices.Sort(out)
	return out
}

// canon sorts a rendering's labels by name and drops those with empty
// values, as the parser does (an empty value is the same as no label).
func canon(s string) string {
	open, closing := strings.IndexByte(s, '{'), strings.LastIndexByte(s, '}')
	var keep []string
	for _, kv := range strings.Split(s[open+1:closing], ",") {
		if kv != "" && !strings.HasSuffix(kv, "=") {
			keep = append(keep, kv)
		}
	}
	slices.Sort(keep)
	return s[:open+1] + strings.Join(keep, ",") + s[closing:]
}

func TestWritePrometheus(t *testing.T) {
	end := time.Unix(1767225600, 250e6)
	pod := func(r Record, ns, name, ctr string, sandbox bool) Record {
		r.PodNamespace, r.PodName, r.ContainerName, r.Sandbox = ns, name, ctr, sandbox
		return r
	}
	recs := []Record{
		{Namespace: "default", ID: "db", IPCMode: "private", PIDMode: "private", ShmSource: ShmOwn, Runtime: "io.containerd.runc.v2", Source: SourceKernel},
		{Namespace: "default", ID: "kid", IPCMode: "container:db", PIDMode: "private", ShmSource: ShmOwn, Runtime: "io.containerd.nsiso.v1", Source: SourceKernel},
		{Namespace: "default", ID: "kid2", IPCMode: "container:db", PIDMode: "private", ShmSource: ShmOwn, Runtime: "io.containerd.nsiso.v1", Source: SourceKernel},
		{Namespace: "default", ID: "tools", IPCMode: "private", PIDMode: "host", ShmSource: ShmOwn, Runtime: "io.containerd.nsiso.v1", Source: SourceKernel},
		pod(Record{Namespace: "k8s.io", ID: "sb", IPCMode: "host", PIDMode: "private", ShmSource: ShmHost, Runtime: "io.containerd.runc.v2", Source: SourceSpec},
			"team-x", "hostipc-pod", "", true),
		// Values a label or annotation may hold, which the format escapes.
		pod(Record{Namespace: "k8s.io", ID: "c", IPCMode: "private", PIDMode: "private", ShmSource: ShmHost, Runtime: "io.containerd.runc.v2", Source: SourceKernel},
			"team-x", `we"ird\pod`, "line\nbreak\xff", false),
		// A claim is no pod: pod_namespace stays empty.
		{Namespace: "evil", ID: "fake", IPCMode: "host", PIDMode: "private", ShmSource: ShmOwn, Runtime: "\x1b[2J", Source: SourceKernel,
			ClaimedPodNamespace: "team-y", ClaimedPodName: "web", ClaimedContainerName: "app\u202e"},
	}
	var b bytes.Buffer
	out := Outcome{Records: recs, Findings: Findings(recs, false), End: end, Duration: 1500 * time.Millisecond}
	if err := WritePrometheus(&b, out); err != nil {
		t.Fatal(err)
	}
	mfs := parse(t, b.String())
	want := map[string][]string{
		"nsiso_audit_success":  {"nsiso_audit_success{} 1"},
		"nsiso_audit_findings": {"nsiso_audit_findings{} 3"},
		"nsiso_audit_containers": {
			`nsiso_audit_containers{ipc_mode=host,pid_mode=private,shm=own,runtime=\x1b[2J,source=kernel} 1`,
			"nsiso_audit_containers{ipc_mode=container,pid_mode=private,shm=own,runtime=io.containerd.nsiso.v1,source=kernel} 2",
			"nsiso_audit_containers{ipc_mode=host,pid_mode=private,shm=host,runtime=io.containerd.runc.v2,source=spec} 1",
			"nsiso_audit_containers{ipc_mode=private,pid_mode=host,shm=own,runtime=io.containerd.nsiso.v1,source=kernel} 1",
			"nsiso_audit_containers{ipc_mode=private,pid_mode=private,shm=host,runtime=io.containerd.runc.v2,source=kernel} 1",
			"nsiso_audit_containers{ipc_mode=private,pid_mode=private,shm=own,runtime=io.containerd.runc.v2,source=kernel} 1",
		},
		"nsiso_audit_host_ipc_sharing": {
			"nsiso_audit_host_ipc_sharing{namespace=k8s.io,id=sb,pod_namespace=team-x,pod=hostipc-pod,container=,kind=sandbox,runtime=io.containerd.runc.v2,source=spec} 1",
			`nsiso_audit_host_ipc_sharing{namespace=evil,id=fake,claimed_pod_namespace=team-y,claimed_pod=web,claimed_container=app\u202e,claimed_kind=container,runtime=\x1b[2J,source=kernel} 1`,
		},
		"nsiso_audit_host_shm_sharing": {
			`nsiso_audit_host_shm_sharing{namespace=k8s.io,id=c,pod_namespace=team-x,pod=we"ird\pod,container=line\nbreak\xff,kind=container,runtime=io.containerd.runc.v2,source=kernel} 1`,
			"nsiso_audit_host_shm_sharing{namespace=k8s.io,id=sb,pod_namespace=team-x,pod=hostipc-pod,container=,kind=sandbox,runtime=io.containerd.runc.v2,source=spec} 1",
		},
		"nsiso_audit_host_pid_sharing": {
			"nsiso_audit_host_pid_sharing{namespace=default,id=tools,pod_namespace=,pod=,container=,kind=,runtime=io.containerd.nsiso.v1,source=kernel} 1",
		},
		"nsiso_audit_last_run_timestamp_seconds": {"nsiso_audit_last_run_timestamp_seconds{} 1767225600.25"},
		"nsiso_audit_duration_seconds":           {"nsiso_audit_duration_seconds{} 1.5"},
	}
	checkFamilies(t, mfs, want)
	// Equal runs write equal files: a textfile collector's readers diff.
	var again bytes.Buffer
	if err := WritePrometheus(&again, out); err != nil || again.String() != b.String() {
		t.Errorf("a second write differs (%v):\n%s\n%s", err, b.String(), again.String())
	}
}

// checkFamilies compares the parsed families with the wanted renderings,
// written in the writer's label order, as sets.
func checkFamilies(t *testing.T, mfs map[string]*dto.MetricFamily, want map[string][]string) {
	t.Helper()
	for name, mf := range mfs {
		if mf.GetType() != dto.MetricType_GAUGE {
			t.Errorf("%s is a %v, want a gauge", name, mf.GetType())
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no HELP", name)
		}
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected family %s: %q", name, series(mf))
		}
	}
	for name, w := range want {
		mf, ok := mfs[name]
		if !ok {
			t.Errorf("family %s missing", name)
			continue
		}
		var ws []string
		for _, x := range w {
			ws = append(ws, canon(x))
		}
		slices.Sort(ws)
		if got := series(mf); !slices.Equal(got, ws) {
			t.Errorf("%s:\n got %q\nwant %q", name, got, ws)
		}
	}
}

func TestWritePrometheusFailed(t *testing.T) {
	var b bytes.Buffer
	err := WritePrometheus(&b, Outcome{Err: errors.New("connect: no such file"), End: time.Unix(100, 0), Duration: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	checkFamilies(t, parse(t, b.String()), map[string][]string{
		"nsiso_audit_success":                    {"nsiso_audit_success{} 0"},
		"nsiso_audit_last_run_timestamp_seconds": {"nsiso_audit_last_run_timestamp_seconds{} 100"},
		"nsiso_audit_duration_seconds":           {"nsiso_audit_duration_seconds{} 2"},
	})
}

// No containers: success and zero findings, and no empty families.
func TestWritePrometheusEmpty(t *testing.T) {
	var b bytes.Buffer
	if err := WritePrometheus(&b, Outcome{End: time.Unix(5, 0)}); err != nil {
		t.Fatal(err)
	}
	checkFamilies(t, parse(t, b.String()), map[string][]string{
		"nsiso_audit_success":                    {"nsiso_audit_success{} 1"},
		"nsiso_audit_findings":                   {"nsiso_audit_findings{} 0"},
		"nsiso_audit_last_run_timestamp_seconds": {"nsiso_audit_last_run_timestamp_seconds{} 5"},
		"nsiso_audit_duration_seconds":           {"nsiso_audit_duration_seconds{} 0"},
	})
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nsiso-audit.prom")
	for _, content := range []string{"first\n", "second, longer than the first\n", ""} {
		if err := WriteFileAtomic(path, []byte(content)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Errorf("content %q, %v; want %q", got, err, content)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("mode %v, %v; want 0644", fi.Mode(), err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Errorf("files left in the directory: %v", entries)
		}
	}
	// A symlink at the path is replaced, its target left alone.
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.prom")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(link, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(target); string(got) != "keep" {
		t.Errorf("write went through the symlink: target holds %q", got)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink != 0 {
		t.Errorf("the symlink was not replaced: %v, %v", fi.Mode(), err)
	}
	// A failed write leaves no temporary file behind.
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "x.prom"), []byte("x")); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}
