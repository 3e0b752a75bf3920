package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// reportResult is a result with every section of the report filled in,
// warnings and failures included.
func reportResult() *result {
	paired := func(name string) *pairedResult {
		return &pairedResult{
			Name: name, What: "what " + name, Stages: []string{"create", "start"}, Warmups: 3,
			Sides: []runtimeSamples{
				{Runtime: "nsiso", TotalMs: summary{N: 5, Median: 101.25, P95: 120.5, Min: 99}, Stages: map[string]summary{"create": {Median: 40.1}, "start": {Median: 20.2}}},
				{Runtime: "runc.v2", TotalMs: summary{N: 5, Median: 100, P95: 118, Min: 98.5}, Stages: map[string]summary{"create": {Median: 39}}},
			},
			Compare: []comparison{{A: "nsiso", B: "runc.v2", Ratio: summary{Median: 1.0125}, RatioCI: [2]float64{0.99, 1.03},
				Ratios: []float64{0.98, 1, 1.01, 1.02, 1.05}, DiffMs: summary{Median: 1.25}, DiffMsCI: [2]float64{-0.5, 2.5}}},
		}
	}
	phases := func(d float64) map[string]summary {
		return map[string]summary{"shim start: package init": {N: 3, Median: 1.5 + d}, "Create: nsiso's part": {N: 3, Median: 0.25}, "@ client done": {N: 3, Median: 50 + d}}
	}
	return &result{
		Host: hostFacts{Date: "2024-01-02T03:04:05Z", Kernel: "6.1.0", CPUs: 2, CPUModel: "Some CPU", Cgroup: "v1", StateFS: "ext4", RuncRootFS: "tmpfs",
			LoadAvg: [2]string{"0.10 0.20 0.30", "1.00 0.50 0.40"}, OtherDaemons: [2]int{1, 0}, Snapshotter: "overlayfs",
			Containerd: "v2.1.0", Runc: "runc version 1.3.0", Repo: "abc123+changes"},
		Shims: []shimBinary{
			{Runtime: "nsiso", Path: "/tmp/a/nsiso", BuiltAt: "/repo/_output/bin/nsiso", SHA256: "0123456789abcdef0123", Version: "v1", ContainerdLib: "v2.1.0", GoVersion: "go1.24", CGOEnabled: "0", Trimpath: true},
			{Runtime: "runc.v2", Path: "/tmp/a/stock", SHA256: "fedcba9876543210fedc", Version: "v2", ContainerdLib: "v2.1.0", GoVersion: "go1.23", CGOEnabled: "1"},
		},
		Unfair: []string{"Go version", "CGO_ENABLED"},
		Startup: &startupResult{N: 200,
			Sides: []startupSide{
				{Runtime: "nsiso", SizeBytes: 12 << 20, WallMs: summary{Median: 3.5, P95: 4.25}, CPUMs: summary{Median: 2.75}, MaxRSSMiB: summary{Median: 9.5},
					MinorFaults: summary{Median: 812}, InitMs: summary{Median: 0.4}, InitAllocs: summary{Median: 1500}, Packages: 120,
					TopInits: []initCost{{Package: "runtime", Ms: 0.1}, {Package: "net", Ms: 0.05}}},
				{Runtime: "runc.v2", SizeBytes: 11 << 20, WallMs: summary{Median: 3.25, P95: 4}, Packages: 110},
			},
			Compare: []comparison{{A: "nsiso", B: "runc.v2", Ratio: summary{Median: 1.077}, RatioCI: [2]float64{1.01, 1.1}}},
			Only:    []initOnly{{A: "nsiso", B: "runc.v2", Packages: []string{"a", "b"}}, {A: "runc.v2", B: "runc.v2-lib", Packages: []string{"c"}}},
		},
		Ctr: []*pairedResult{paired("ctr unset"), paired("ctr private")},
		Trace: &traceResult{
			Missing: map[string][]string{"nsiso": {"gc"}, "runc.v2": {"nsiso.Create"}},
			Modes: []traceMode{{Mode: "unset", N: 3, Phases: map[string]map[string]summary{
				"nsiso": phases(1), "runc.v2": phases(0), "runc.v2-lib": {"shim start: package init": {N: 3, Median: 1.4}},
			}}},
			Profile: &profileResult{Perf: "perf 6.1", Seconds: 42, Containers: 20, Binaries: []profileBinary{
				{Runtime: "nsiso", Processes: 60, UserSample: 300, KernSample: 200,
					Top: []profileSym{{Name: "runtime.scanobject", Samples: 20}}, TopKernel: []profileSym{{Name: "clear_page", Samples: 9}},
					Packages: []profileSym{{Name: "runtime", Samples: 150}, {Name: "encoding/json", Samples: 50}}},
			}},
		},
		Lifecycle: paired("lifecycle"),
		Child:     paired("child"),
		CRI:       []*pairedResult{paired("cri")},
		Node: &nodeResult{Pods: 110, PrivatePods: 22, FillSeconds: 95.4, Empty: paired("node empty"), Full: paired("node full"), Drift: 1.0123,
			MountsEmpty: 40, MountsFull: 500, NsisoMounts: 22, Shims: 110, ShimRSSMiB: 1320.5, ShimPssMiB: 480.25},
		Concurrency: &concurrencyResult{Containers: 100, Warmup: true, WarmupFailures: 1,
			Rounds: []roundResult{{Runtime: "nsiso", Round: 0}, {Runtime: "runc.v2", Round: 1, Failures: 1, FirstFailure: "boom"}},
			Sides: []concurrencySide{
				{Runtime: "nsiso", WallMs: summary{N: 3, Median: 5000, Min: 4900, Max: 5100}, Throughput: summary{Median: 20}, CPUMs: summary{Median: 30}},
				{Runtime: "runc.v2", WallMs: summary{N: 3, Median: 4900}, Throughput: summary{Median: 20.4}, CPUMs: summary{Median: 29}, Failures: 1},
				{Runtime: "runc.v2-lib", WallMs: summary{N: 3, Median: 4950}, Throughput: summary{Median: 20.2}, CPUMs: summary{Median: 29.5}},
			},
			Ratios: []float64{0.98, 0.99, 1}, LibRatios: []float64{0.99, 1, 1.01}},
		Memory: &memoryResult{PerRuntime: 10, SettleMs: 2000, DiffMiB: -1.25, LibDiffMiB: 0.5, Sides: []memorySide{
			{Runtime: "nsiso", RSSMiB: summary{Median: 12, Min: 11.5, Max: 12.5}, PssMiB: summary{Median: 4.5}},
		}},
		Micro: []microResult{{Package: "github.com/nsiso/nsiso/specmod", Name: "BenchmarkApply", NsPerOp: 1234, BytesPerOp: 512, AllocsPerOp: 7}},
		Targets: []target{
			{Name: "ctr ratio", Value: 1.0125, Op: "<=", Limit: 1.05, Pass: true},
			{Name: "memory", Value: 1.5, Op: "<=", Limit: 1, Unit: "MiB", Note: "few samples"},
			{Name: "ci", Value: 0.99, Op: "..", Limit: 1.03, Pass: true},
		},
		Error: "cri: boom",
	}
}

// TestPrintReport compares the report of a full result, and of one whose
// trace could not run, with the golden files in testdata (go test -update
// rewrites them).
func TestPrintReport(t *testing.T) {
	full := reportResult()
	skipped := &result{
		Fair:    true,
		Trace:   &traceResult{Skipped: "no tracefs", Profile: &profileResult{Skipped: "no perf"}},
		Targets: []target{{Name: "startup", Value: 250, Op: ">=", Limit: 100, Unit: "ms", Pass: true}},
	}
	for _, c := range []struct {
		name string
		r    *result
	}{{"report-full", full}, {"report-skipped", skipped}} {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			printReport(&b, c.r)
			golden := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("report differs from %s:\n%s", golden, b.String())
			}
		})
	}
}
