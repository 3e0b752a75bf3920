package audit

import (
	"bytes"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// Outcome is one audit as the metrics describe it.
type Outcome struct {
	// Records are the containers; nil when the audit failed.
	Records []Record
	// Findings are the containers that break the audited rules.
	Findings []Finding
	// Err is why the audit could not be completed; nil when it was.
	Err error
	// Usage is the shared memory of each IPC namespace; nil when it was
	// not read.
	Usage []ShmUsage
	// End is when the audit finished, Duration how long it took.
	End      time.Time
	Duration time.Duration
}

// ModeClass folds a mode or /dev/shm source into a small set for a metric
// label: "container:<id>" becomes "container", so that series do not grow
// with the number of containers.
func ModeClass(mode string) string {
	if strings.HasPrefix(mode, "container:") {
		return "container"
	}
	return mode
}

// WritePrometheus writes the run as metrics in Prometheus' text exposition
// format (version 0.0.4, through expfmt), for node_exporter's textfile
// collector:
//
//	nsiso_audit_success                     1 when the audit completed
//	nsiso_audit_findings                    containers that break the rules
//	nsiso_audit_containers{ipc_mode,pid_mode,shm,runtime,source}
//	nsiso_audit_host_ipc_sharing{namespace,id,pod_namespace,pod,container,kind,
//	    claimed_pod_namespace,claimed_pod,claimed_container,claimed_kind,runtime,source} 1
//	nsiso_audit_host_shm_sharing{…}         the same, for the host's /dev/shm
//	nsiso_audit_host_pid_sharing{…}         the same, for the host's PID namespace
//	nsiso_audit_shm_*, nsiso_audit_sysv_shm_*{…}
//	                                        shared memory of each IPC namespace (see usageFamilies)
//	nsiso_audit_last_run_timestamp_seconds  when it finished
//	nsiso_audit_duration_seconds            how long it took
//
// A failed run writes only success (0), the time and the duration, so
// that monitoring sees the failure instead of the last good file. Samples
// carry no timestamps: the textfile collector refuses them.
func WritePrometheus(w io.Writer, run Outcome) error {
	var fams []*dto.MetricFamily
	add := func(name, help string, samples ...sample) {
		if mf := family(name, help, samples); mf != nil {
			fams = append(fams, mf)
		}
	}
	success := 1.0
	if run.Err != nil {
		success = 0
	}
	add("nsiso_audit_success", "1 when the audit completed, 0 when it could not be (see the command's stderr).",
		sample{value: success})
	if run.Err == nil {
		add("nsiso_audit_findings", "Containers that share the host's IPC namespace or /dev/shm (CIS Docker Benchmark 5.16), or with --pid its PID namespace (5.15).",
			sample{value: float64(len(run.Findings))})
		add("nsiso_audit_containers", "Containers by IPC mode, PID mode and /dev/shm (host, private, container, none, unknown), runtime, and source of the facts (kernel: a live task; spec: what starting it would do).",
			countContainers(run.Records)...)
		for _, m := range []struct {
			name, help string
			shares     func(Record) bool
		}{
			{"nsiso_audit_host_ipc_sharing", "1 for each container in the host's IPC namespace (CIS Docker Benchmark 5.16).",
				func(r Record) bool { return r.IPCMode == ModeHost }},
			{"nsiso_audit_host_shm_sharing", "1 for each container whose /dev/shm is the host's (CIS Docker Benchmark 5.16).",
				func(r Record) bool { return r.ShmSource == ShmHost }},
			{"nsiso_audit_host_pid_sharing", "1 for each container in the host's PID namespace (CIS Docker Benchmark 5.15).",
				func(r Record) bool { return r.PIDMode == ModeHost }},
		} {
			var ss []sample
			for _, r := range run.Records {
				if m.shares(r) {
					ss = append(ss, sample{labels: containerLabels(r), value: 1})
				}
			}
			add(m.name, m.help, ss...)
		}
		for _, u := range usageFamilies(run.Usage) {
			add(u.name, u.help, u.samples...)
		}
	}
	add("nsiso_audit_last_run_timestamp_seconds", "When the audit finished, in seconds since the Unix epoch.",
		sample{value: float64(run.End.UnixMilli()) / 1e3})
	add("nsiso_audit_duration_seconds", "How long the audit took.",
		sample{value: run.Duration.Seconds()})
	var b bytes.Buffer
	for _, mf := range fams {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			return fmt.Errorf("write metric %s: %w", mf.GetName(), err)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// label is one name="value" pair; a sample's labels are written in order.
type label struct{ name, value string }

type sample struct {
	labels []label
	value  float64
}

// containerLabels name a container in a series: its pod when CRI made it
// for one, else the pod its labels claim under claimed_*, which an alert
// on pod_namespace never matches.
func containerLabels(r Record) []label {
	return []label{
		{"namespace", r.Namespace}, {"id", r.ID},
		{"pod_namespace", r.PodNamespace}, {"pod", r.PodName}, {"container", r.ContainerName}, {"kind", r.Pod().Kind},
		{"claimed_pod_namespace", r.ClaimedPodNamespace}, {"claimed_pod", r.ClaimedPodName},
		{"claimed_container", r.ClaimedContainerName}, {"claimed_kind", r.Claim().Kind},
		{"runtime", r.Runtime}, {"source", r.Source},
	}
}

func countContainers(recs []Record) []sample {
	counts := map[[5]string]int{}
	for _, r := range recs {
		counts[[5]string{ModeClass(r.IPCMode), ModeClass(r.PIDMode), ModeClass(r.ShmSource), r.Runtime, r.Source}]++
	}
	out := make([]sample, 0, len(counts))
	for k, n := range counts {
		out = append(out, sample{labels: []label{
			{"ipc_mode", k[0]}, {"pid_mode", k[1]}, {"shm", k[2]}, {"runtime", k[3]}, {"source", k[4]},
		}, value: float64(n)})
	}
	return out
}

// family builds one gauge family with its samples sorted by their labels,
// so that equal runs write equal files; nil without samples, which expfmt
// refuses and a reader does not need. Label values are made visible
// (EscapeLabelValue's first step); expfmt escapes the rest.
func family(name, help string, samples []sample) *dto.MetricFamily {
	if len(samples) == 0 {
		return nil
	}
	samples = slices.Clone(samples)
	slices.SortFunc(samples, func(x, y sample) int {
		for i := range min(len(x.labels), len(y.labels)) {
			if c := cmp.Compare(x.labels[i].value, y.labels[i].value); c != 0 {
				return c
			}
		}
		return cmp.Compare(len(x.labels), len(y.labels))
	})
	mf := &dto.MetricFamily{
		Name: proto.String(name),
		Help: proto.String(strings.ToValidUTF8(help, "\uFFFD")),
		Type: dto.MetricType_GAUGE.Enum(),
	}
	for _, s := range samples {
		m := &dto.Metric{Gauge: &dto.Gauge{Value: proto.Float64(s.value)}}
		for _, l := range s.labels {
			m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(l.name), Value: proto.String(visible(l.value))})
		}
		mf.Metric = append(mf.Metric, m)
	}
	return mf
}

// EscapeLabelValue escapes a label value for the text format: backslash,
// double quote and line feed, the only characters it escapes. Before that,
// characters that are not printable (controls, separators, invisible
// format characters such as bidi overrides) and bytes that are not UTF-8,
// which a client may put in a name, are written as Go escapes (\x1b,
// \u202e, \xff): a parser refuses a whole file for invalid UTF-8, and an
// alert's text or a terminal would act on a control character. The JSON
// report has the exact strings.
func EscapeLabelValue(v string) string {
	return labelEscaper.Replace(visible(v))
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
