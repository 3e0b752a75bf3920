package audit

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Outcome is one audit as the metrics describe it.
type Outcome struct {
	// Records are the containers; nil when the audit failed.
	Records []Record
	// Findings are the containers that break the audited rules.
	Findings []Finding
	// Err is why the audit could not be completed; nil when it was.
	Err error
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
// format (version 0.0.4), for node_exporter's textfile collector:
//
//	nsiso_audit_success                     1 when the audit completed
//	nsiso_audit_findings                    containers that break the rules
//	nsiso_audit_containers{ipc_mode,pid_mode,shm,runtime,source}
//	nsiso_audit_host_ipc_sharing{namespace,id,pod_namespace,pod,container,kind,
//	    claimed_pod_namespace,claimed_pod,claimed_container,claimed_kind,runtime,source} 1
//	nsiso_audit_host_shm_sharing{…}         the same, for the host's /dev/shm
//	nsiso_audit_host_pid_sharing{…}         the same, for the host's PID namespace
//	nsiso_audit_last_run_timestamp_seconds  when it finished
//	nsiso_audit_duration_seconds            how long it took
//
// A failed run writes only success (0), the time and the duration, so
// that monitoring sees the failure instead of the last good file. Samples
// carry no timestamps: the textfile collector refuses them.
func WritePrometheus(w io.Writer, run Outcome) error {
	var b strings.Builder
	success := 1.0
	if run.Err != nil {
		success = 0
	}
	family(&b, "nsiso_audit_success", "1 when the audit completed, 0 when it could not be (see the command's stderr).",
		sample{value: success})
	if run.Err == nil {
		family(&b, "nsiso_audit_findings", "Containers that share the host's IPC namespace or /dev/shm (CIS Docker Benchmark 5.16), or with --pid its PID namespace (5.15).",
			sample{value: float64(len(run.Findings))})
		family(&b, "nsiso_audit_containers", "Containers by IPC mode, PID mode and /dev/shm (host, private, container, none, unknown), runtime, and source of the facts (kernel: a live task; spec: what starting it would do).",
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
			family(&b, m.name, m.help, ss...)
		}
	}
	family(&b, "nsiso_audit_last_run_timestamp_seconds", "When the audit finished, in seconds since the Unix epoch.",
		sample{value: float64(run.End.UnixMilli()) / 1e3})
	family(&b, "nsiso_audit_duration_seconds", "How long the audit took.",
		sample{value: run.Duration.Seconds()})
	_, err := io.WriteString(w, b.String())
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

// family writes one gauge family: HELP, TYPE and its samples sorted by
// their labels, so that equal runs write equal files. A family without
// samples is left out.
func family(b *strings.Builder, name, help string, samples ...sample) {
	if len(samples) == 0 {
		return
	}
	slices.SortFunc(samples, func(x, y sample) int {
		for i := range min(len(x.labels), len(y.labels)) {
			if c := cmp.Compare(x.labels[i].value, y.labels[i].value); c != 0 {
				return c
			}
		}
		return cmp.Compare(len(x.labels), len(y.labels))
	})
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s gauge\n", name, escapeHelp(help), name)
	for _, s := range samples {
		b.WriteString(name)
		if len(s.labels) > 0 {
			b.WriteByte('{')
			for i, l := range s.labels {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(b, `%s="%s"`, l.name, EscapeLabelValue(l.value))
			}
			b.WriteByte('}')
		}
		b.WriteByte(' ')
		b.WriteString(strconv.FormatFloat(s.value, 'f', -1, 64))
		b.WriteByte('\n')
	}
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

// escapeHelp escapes a HELP text: backslash and line feed.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(strings.ToValidUTF8(s, "\uFFFD"))
}
