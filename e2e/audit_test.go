package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nsiso/nsiso/testenv"
)

// testAudit runs `nsiso audit --pid --shm --format prometheus` on the node
// as docs/audit.md tells operators to (from cron or a systemd timer, for
// node_exporter's textfile collector) while an nsiso pod with a 1Gi
// /dev/shm and a runc pod run, and reads the gauges back.
func testAudit(t *testing.T) {
	ctx := context.Background()
	lbl := map[string]string{"e2e": "audit"}
	pods := []podSpec{
		{name: "audit-nsiso", runtimeClass: "nsiso", labels: lbl, annotations: map[string]string{"nsiso/shm-size": "1Gi"}},
		{name: "audit-runc", runtimeClass: "runc", labels: lbl},
	}
	for _, p := range pods {
		apply(ctx, t, p.manifest())
	}
	defer deletePods(ctx, t, "default", "e2e=audit")
	for _, p := range pods {
		if why, err := waitOutcome(ctx, "default", p.name, 120*time.Second); err != nil || why != "" {
			t.Fatalf("pod %s does not run: %v %s", p.name, err, why)
		}
	}
	// 8 MiB in use on the nsiso pod's /dev/shm.
	execIn(ctx, t, "default", "audit-nsiso", "app", "dd if=/dev/zero of=/dev/shm/blob bs=1M count=8 2>/dev/null")

	shimDir, err := testenv.FindShimDir()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(shimDir, "nsiso"), "audit", "--address", cluster.Ctd.Address(),
		"--pid", "--shm", "--format", "prometheus")
	out, err := cmd.Output()
	// Exit 1 is "findings": the installer pod shares the host's PID
	// namespace, as it must.
	if err != nil && cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("nsiso audit: %v\n%s", err, out)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(out)))
	if err != nil {
		t.Fatalf("the audit's output does not parse as Prometheus text: %v\n%s", err, out)
	}
	if got := gauge(families["nsiso_audit_success"], nil); got != 1 {
		t.Fatalf("nsiso_audit_success = %v\n%s", got, out)
	}
	owner := map[string]string{"pod_namespace": "default", "pod": "audit-nsiso", "kind": "sandbox"}
	if got := gauge(families["nsiso_audit_shm_size_bytes"], owner); got != 1<<30 {
		t.Errorf("nsiso_audit_shm_size_bytes of the nsiso pod = %v, want 1Gi\n%s", got, out)
	}
	if got := gauge(families["nsiso_audit_shm_used_bytes"], owner); got != 8<<20 {
		t.Errorf("nsiso_audit_shm_used_bytes of the nsiso pod = %v, want 8Mi", got)
	}
	runc := map[string]string{"pod_namespace": "default", "pod": "audit-runc", "kind": "sandbox"}
	if got := gauge(families["nsiso_audit_shm_size_bytes"], runc); got != nodeDefaultShm {
		t.Errorf("nsiso_audit_shm_size_bytes of the runc pod = %v, want containerd's 64Mi", got)
	}
	pidSharing := gauge(families["nsiso_audit_host_pid_sharing"], map[string]string{"pod_namespace": "nsiso-system", "kind": "sandbox"})
	if pidSharing != 1 {
		t.Errorf("the installer pod (hostPID) is not reported as sharing the host's PID namespace\n%s", out)
	}
}

// gauge returns the value of the one series of f whose labels include
// want; -1 when there is none, -2 when several match.
func gauge(f *dto.MetricFamily, want map[string]string) float64 {
	if f == nil {
		return -1
	}
	found, v := 0, -1.0
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for k, w := range want {
			if labels[k] != w {
				ok = false
			}
		}
		if ok {
			found++
			v = m.GetGauge().GetValue()
		}
	}
	if found > 1 {
		return -2
	}
	return v
}
