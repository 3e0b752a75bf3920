package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/nsiso/nsiso/specmod"
)

// Exit statuses of the audit command.
const (
	// ExitCompliant: no container shares what the rules forbid.
	ExitCompliant = 0
	// ExitNonCompliant: at least one container does (see Findings).
	ExitNonCompliant = 1
	// ExitError: the audit could not be completed.
	ExitError = 2
)

// ShmText is the ShmSize column of a record. A spec tells whose /dev/shm a
// container would see but not how big it would be (a runtime may resize
// it), so a record from a spec shows only "host", "none" or "-".
func ShmText(r Record) string {
	switch {
	case r.ShmSource == ShmHost:
		return "host"
	case r.ShmSource == ShmNone:
		return "none"
	case r.Source == SourceSpec:
		return "-"
	case r.ShmSource == ShmUnknown:
		// A live container whose /dev/shm is a symlink, not followed.
		return "unknown"
	case r.ShmSize <= 0:
		return "none"
	}
	return specmod.FormatSize(r.ShmSize)
}

// Line renders a record as one line of the text report, in the CIS
// benchmark's "<id>: IpcMode=<mode>" style, with the Kubernetes pod and
// container when CRI made it for one, the pod its labels and annotations
// claim when CRI did not ("ClaimedPod=… ClaimedContainer=…"), and
// "(from spec)" when the modes are what the spec of a container without a
// live task asks for. Every value a client chose is written by Quote, so a
// record is one line whatever its names hold.
func Line(r Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s: IpcMode=%s PidMode=%s ShmSize=%s Runtime=%s",
		Quote(r.Namespace), Quote(r.ID), Quote(r.IPCMode), Quote(r.PIDMode), ShmText(r), Quote(r.Runtime))
	if p := r.Pod(); !p.IsZero() {
		fmt.Fprintf(&b, " Pod=%s", p)
		if c := p.ContainerText(); c != "" {
			fmt.Fprintf(&b, " Container=%s", c)
		}
	}
	if p := r.Claim(); !p.IsZero() {
		fmt.Fprintf(&b, " ClaimedPod=%s", p)
		if c := p.ContainerText(); c != "" {
			fmt.Fprintf(&b, " ClaimedContainer=%s", c)
		}
	}
	if r.Source == SourceSpec {
		b.WriteString(" (from spec)")
	}
	return b.String()
}

// WriteText writes one Line per record.
func WriteText(w io.Writer, recs []Record) error {
	var b strings.Builder
	for _, r := range recs {
		b.WriteString(Line(r))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the records as one indented JSON array; no records is
// an empty array, never null, so that consumers need no special case.
// Strings are exact (a byte that is not UTF-8 becomes U+FFFD, as
// encoding/json writes it), and every character that is not printable is
// a \u escape, so that the document is safe on a terminal too.
func WriteJSON(w io.Writer, recs []Record) error {
	if recs == nil {
		recs = []Record{}
	}
	return writeJSONValue(w, recs)
}

// writeJSONValue writes v as indented JSON made safe for a terminal
// (jsonSafe), with a final newline.
func writeJSONValue(w io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(jsonSafe(data), '\n'))
	return err
}

// Finding is a container that breaks a rule.
type Finding struct {
	Namespace, ID string
	// Pod is the container's Kubernetes pod, if CRI made it for one.
	Pod Pod
	// Claim is the pod its labels and annotations claim otherwise.
	Claim Pod
	// FromSpec is set for a container without a live task, whose spec asks
	// for what it would share.
	FromSpec bool
	// HostIPC and HostShm break CIS 5.16, HostPID CIS 5.15.
	HostIPC, HostShm, HostPID bool
}

// String names the container (and its pod) and what it shares, for one
// line on stderr.
func (f Finding) String() string {
	var parts []string
	switch {
	case f.HostIPC && f.HostShm:
		parts = append(parts, "the host's IPC namespace and /dev/shm (CIS Docker Benchmark 5.16)")
	case f.HostIPC:
		parts = append(parts, "the host's IPC namespace (CIS Docker Benchmark 5.16)")
	case f.HostShm:
		parts = append(parts, "the host's /dev/shm (CIS Docker Benchmark 5.16)")
	}
	if f.HostPID {
		parts = append(parts, "the host's PID namespace (CIS Docker Benchmark 5.15)")
	}
	who := who(f.Namespace, f.ID, f.Pod, f.Claim)
	shares := strings.Join(parts, " and ")
	if f.FromSpec {
		return fmt.Sprintf("%s has no running task; its spec shares %s", who, shares)
	}
	return fmt.Sprintf("%s shares %s", who, shares)
}

// who names a container for a line on stderr: "<namespace>/<id>", with
// "(pod <ns>/<name>, container <name>)" when CRI made it for a pod, or
// "(claimed pod …)" when only its labels and annotations say so.
func who(namespace, id string, pod, claim Pod) string {
	s := Quote(namespace) + "/" + Quote(id)
	p, what := pod, "pod "
	if p.IsZero() {
		p, what = claim, "claimed pod "
	}
	if p.IsZero() {
		return s
	}
	s += " (" + what + p.String()
	switch c := p.ContainerText(); {
	case p.Kind == KindSandbox:
		s += ", sandbox"
	case c != "":
		s += ", container " + c
	}
	return s + ")"
}

// NotCounted is the note on stderr for a container that claims a pod in
// the Kubernetes namespace a report is filtered to (--pod-namespace)
// without CRI having made it: it is left out of that report.
func NotCounted(r Record) string {
	return who(r.Namespace, r.ID, Pod{}, r.Claim()) + " is not counted: containerd's CRI plugin did not make it"
}

// Findings lists the records that share the host's IPC namespace or
// /dev/shm, and with checkPID also those that share its PID namespace, in
// the records' order. A container without a live task counts by what its
// spec asks for: starting it would share the same.
func Findings(recs []Record, checkPID bool) []Finding {
	var out []Finding
	for _, r := range recs {
		f := Finding{
			Namespace: r.Namespace,
			ID:        r.ID,
			Pod:       r.Pod(),
			Claim:     r.Claim(),
			FromSpec:  r.Source == SourceSpec,
			HostIPC:   r.IPCMode == ModeHost,
			HostShm:   r.ShmSource == ShmHost,
			HostPID:   checkPID && r.PIDMode == ModeHost,
		}
		if f.HostIPC || f.HostShm || f.HostPID {
			out = append(out, f)
		}
	}
	return out
}

// ExitStatus is ExitNonCompliant when there are findings, else
// ExitCompliant.
func ExitStatus(findings []Finding) int {
	if len(findings) > 0 {
		return ExitNonCompliant
	}
	return ExitCompliant
}
