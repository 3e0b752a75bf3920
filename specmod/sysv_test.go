package specmod

import (
	"errors"
	"maps"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// limits is the sysctls nsiso writes for a namespace with the given
// kernel.shmmax (bytes) and kernel.shmall (pages), and the default shmmni.
func limits(shmmax, shmall string) map[string]string {
	return map[string]string{SysctlShmMax: shmmax, SysctlShmAll: shmall, SysctlShmMni: "4096"}
}

// with is limits plus the client's own sysctls.
func with(m map[string]string, kv ...string) map[string]string {
	m = maps.Clone(m)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func withSysctl(kv ...string) func(*specs.Spec) {
	return func(s *specs.Spec) {
		if s.Linux.Sysctl == nil {
			s.Linux.Sysctl = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			s.Linux.Sysctl[kv[i]] = kv[i+1]
		}
	}
}

func TestSysV(t *testing.T) {
	tight := Policy{DisallowHostIPC: true, DisallowHostPID: true, MaxShmSize: 64 << 20}
	oracle := Policy{DisallowHostIPC: true, DisallowHostPID: true, DefaultShmSize: 256 << 20, MaxShmSize: 1 << 30, MaxSysvShmSize: 16 << 30}
	sysvOnly := Policy{DisallowHostIPC: true, DisallowHostPID: true, MaxSysvShmSize: 64 << 20}
	smallSysv := Policy{DisallowHostIPC: true, DisallowHostPID: true, DefaultShmSize: 256 << 20, MaxShmSize: 1 << 30, MaxSysvShmSize: 16 << 20}
	bigPages := tight
	bigPages.PageSize = 16384
	private := map[string]string{AnnotationIPCMode: "private"}
	for _, tc := range []struct {
		name   string
		policy Policy
		ann    map[string]string
		parent Parent
		edit   func(*specs.Spec)
		// want is the final linux.sysctl; nil for none.
		want map[string]string
		// key names the refusal, with value.
		key, value, reason string
	}{
		{name: "no cap: nothing", policy: strict, want: nil},
		{name: "no cap: the client's sysctls are runc's business", policy: strict,
			edit: withSysctl(SysctlShmMax, "0x10"), want: map[string]string{SysctlShmMax: "0x10"}},
		{name: "unset mode, cap only: the cap", policy: tight, want: limits("67108864", "16384")},
		{name: "private, cap only: the cap", policy: tight, ann: private, want: limits("67108864", "16384")},
		{name: "default size is the budget", policy: sized, want: limits("268435456", "65536")},
		{name: "nsiso/shm-size is the budget", policy: sized, ann: map[string]string{AnnotationIPCMode: "private", AnnotationShmSize: "100Mi"},
			want: limits("104857600", "25600")},
		{name: "a SysV cap alone", policy: sysvOnly, want: limits("67108864", "16384")},
		{name: "a SysV cap under the default size", policy: smallSysv, want: limits("16777216", "4096")},
		{name: "a SysV cap over /dev/shm's: the budget stays /dev/shm's", policy: oracle, want: limits("268435456", "65536")},
		{name: "16K pages", policy: bigPages, want: limits("67108864", "4096")},
		{name: "nested private child: its own namespace", policy: tight, ann: map[string]string{AnnotationIPCMode: "private", AnnotationParent: "p"}, parent: parent,
			want: limits("67108864", "16384")},

		// The client asks.
		{name: "shmmax within the cap is kept, shmall follows the budget", policy: tight, edit: withSysctl(SysctlShmMax, "16777216"),
			want: limits("16777216", "16384")},
		{name: "shmmax above the budget raises shmall to hold it", policy: oracle, edit: withSysctl(SysctlShmMax, "8589934592"),
			want: limits("8589934592", "2097152")},
		{name: "shmmax of odd bytes: shmall rounds up", policy: oracle, edit: withSysctl(SysctlShmMax, "536870913"),
			want: limits("536870913", "131073")},
		{name: "shmmax at the cap", policy: oracle, edit: withSysctl(SysctlShmMax, "17179869184"),
			want: limits("17179869184", "4194304")},
		{name: "shmall within the cap is kept, shmmax follows it", policy: oracle, edit: withSysctl(SysctlShmAll, "1048576"),
			want: limits("4294967296", "1048576")},
		{name: "both kept", policy: tight, edit: withSysctl(SysctlShmMax, "1048576", SysctlShmAll, "256"),
			want: limits("1048576", "256")},
		{name: "lower is kept: no SysV at all", policy: tight, edit: withSysctl(SysctlShmMax, "0", SysctlShmAll, "0"),
			want: limits("0", "0")},
		{name: "shmmni within", policy: tight, edit: withSysctl(SysctlShmMni, "32768"),
			want: with(limits("67108864", "16384"), SysctlShmMni, "32768")},
		{name: "critest's shm_rmid_forced and other IPC sysctls are kept", policy: tight,
			edit: withSysctl("kernel.shm_rmid_forced", "1", "kernel.msgmnb", "65536", "fs.mqueue.msg_max", "20", "net.ipv4.ip_forward", "1"),
			want: with(limits("67108864", "16384"), "kernel.shm_rmid_forced", "1", "kernel.msgmnb", "65536", "fs.mqueue.msg_max", "20", "net.ipv4.ip_forward", "1")},
		{name: "slash spelling is the same sysctl, kept as written", policy: tight, edit: withSysctl("kernel/shmmax", "1024"),
			want: map[string]string{"kernel/shmmax": "1024", SysctlShmAll: "16384", SysctlShmMni: "4096"}},

		// Over the cap.
		{name: "shmmax over the cap", policy: tight, edit: withSysctl(SysctlShmMax, "1610612736"),
			key: "linux.sysctl.kernel.shmmax", value: "1610612736", reason: "a System V segment of 1536Mi is over max_container_shm_size=64Mi"},
		{name: "shmmax over the SysV cap names it", policy: oracle, edit: withSysctl(SysctlShmMax, "17179869185"),
			key: "linux.sysctl.kernel.shmmax", value: "17179869185", reason: "a System V segment of 17179869185 is over max_container_sysv_shm_size=16Gi"},
		{name: "shmmax of 2^64-1", policy: tight, edit: withSysctl(SysctlShmMax, "18446744073709551615"),
			key: "linux.sysctl.kernel.shmmax", value: "18446744073709551615", reason: "a System V segment of 18446744073709551615 is over max_container_shm_size=64Mi"},
		{name: "shmall over the cap", policy: tight, edit: withSysctl(SysctlShmAll, "16385"),
			key: "linux.sysctl.kernel.shmall", value: "16385", reason: "16385 pages of 4096 bytes of System V shared memory are over max_container_shm_size=64Mi"},
		{name: "shmall over the cap in 16K pages", policy: bigPages, edit: withSysctl(SysctlShmAll, "4097"),
			key: "linux.sysctl.kernel.shmall", value: "4097", reason: "4097 pages of 16384 bytes"},
		{name: "slash spelling over the cap", policy: tight, edit: withSysctl("kernel/shmall", "18446744073709551615"),
			key: "linux.sysctl.kernel/shmall", value: "18446744073709551615", reason: "over max_container_shm_size=64Mi"},
		{name: "shmmni over IPCMNI", policy: tight, edit: withSysctl(SysctlShmMni, "32769"),
			key: "linux.sysctl.kernel.shmmni", value: "32769", reason: "more System V segments than the 32768 (the kernel's IPCMNI)"},
		{name: "both spellings of one sysctl", policy: tight, edit: withSysctl("kernel/shmmax", "1024", SysctlShmMax, "2048"),
			key: "linux.sysctl.kernel/shmmax", value: "1024", reason: "names the same sysctl as linux.sysctl.kernel.shmmax, and runc writes the two in no set order"},
		{name: "a pod sandbox asks for more", policy: tight,
			ann:  map[string]string{AnnotationCRIContainerType: criTypeSandbox},
			edit: withSysctl(SysctlShmMax, "67108865"),
			key:  "linux.sysctl.kernel.shmmax", value: "67108865", reason: "is over max_container_shm_size=64Mi"},

		// A joiner writes into its owner's namespace.
		{name: "client path: any IPC sysctl is refused", policy: tight,
			edit: edits(setNS(specs.IPCNamespace, otherIPC), withSysctl("kernel.shm_rmid_forced", "1", "net.ipv4.ip_forward", "1")),
			key:  "linux.sysctl.kernel.shm_rmid_forced", value: "1",
			reason: `would be written into the IPC namespace this container joins (linux.namespaces.ipc.path="/proc/4242/ns/ipc"), whose limits are its owner's`},
		{name: "client path: no sysctls added, others kept", policy: tight,
			edit: edits(setNS(specs.IPCNamespace, otherIPC), withSysctl("net.ipv4.ip_forward", "1")),
			want: map[string]string{"net.ipv4.ip_forward": "1"}},
		{name: "share-parent child raises its parent's shmall", policy: tight, ann: map[string]string{AnnotationIPCMode: "share-parent", AnnotationParent: "p"}, parent: parent,
			edit: withSysctl("kernel/shmall", "1"),
			key:  "linux.sysctl.kernel/shmall", value: "1", reason: `(nsiso/ipc-mode="share-parent"), whose limits are its owner's`},
		{name: "unset-mode child joins its parent: fs.mqueue too", policy: tight, ann: map[string]string{AnnotationParent: "p"}, parent: parent,
			edit: withSysctl("fs.mqueue.msg_max", "1"),
			key:  "linux.sysctl.fs.mqueue.msg_max", value: "1", reason: `(nsiso/parent="p")`},
		{name: "a pod's container joins its sandbox", policy: tight,
			ann:    map[string]string{AnnotationCRIContainerType: criTypeContainer, AnnotationCRISandboxID: "sb", AnnotationCRIContainerName: "app"},
			parent: Parent{ID: "sb", IPCPath: pinIPC, PIDPath: pinPID, ShmPath: pinShm},
			edit:   edits(setNS(specs.IPCNamespace, otherIPC), setShm(shmBind("/run/sb/shm"))),
			want:   nil},

		// The runtime's namespace: the host rule's, and runc refuses IPC sysctls there.
		{name: "no ipc entry: left to runc", policy: Policy{MaxShmSize: 64 << 20},
			edit: edits(dropNS(specs.IPCNamespace), withSysctl(SysctlShmMax, "1")),
			want: map[string]string{SysctlShmMax: "1"}},

		// Values nsiso cannot read as the kernel would.
		{name: "hex", policy: tight, edit: withSysctl(SysctlShmMax, "0x10"), key: "linux.sysctl.kernel.shmmax", value: "0x10", reason: "not a plain unsigned decimal number"},
		{name: "octal", policy: tight, edit: withSysctl(SysctlShmAll, "010"), key: "linux.sysctl.kernel.shmall", value: "010", reason: "not a plain unsigned decimal number"},
		{name: "leading blank", policy: tight, edit: withSysctl(SysctlShmMax, " 1"), key: "linux.sysctl.kernel.shmmax", value: " 1", reason: "not a plain"},
		{name: "two numbers", policy: tight, edit: withSysctl(SysctlShmMax, "1 99999999999"), key: "linux.sysctl.kernel.shmmax", value: "1 99999999999", reason: "not a plain"},
		{name: "newline", policy: tight, edit: withSysctl(SysctlShmMax, "1\n"), key: "linux.sysctl.kernel.shmmax", value: "1\n", reason: "not a plain"},
		{name: "sign", policy: tight, edit: withSysctl(SysctlShmMax, "+1"), key: "linux.sysctl.kernel.shmmax", value: "+1", reason: "not a plain"},
		{name: "negative", policy: tight, edit: withSysctl(SysctlShmMni, "-1"), key: "linux.sysctl.kernel.shmmni", value: "-1", reason: "not a plain"},
		{name: "empty", policy: tight, edit: withSysctl(SysctlShmAll, ""), key: "linux.sysctl.kernel.shmall", value: "", reason: "not a plain"},
		{name: "past 2^64", policy: tight, edit: withSysctl(SysctlShmAll, "18446744073709551616"), key: "linux.sysctl.kernel.shmall", value: "18446744073709551616", reason: "not a plain"},
		{name: "a unit", policy: tight, edit: withSysctl(SysctlShmMax, "1Gi"), key: "linux.sysctl.kernel.shmmax", value: "1Gi", reason: "not a plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSpec()
			if tc.edit != nil {
				tc.edit(s)
			}
			req, err := ParseRequest("c", tc.ann)
			if err != nil {
				t.Fatal(err)
			}
			in := Input{ID: "c", Request: req, Policy: tc.policy, Parent: tc.parent, Host: fakeHost{}, Bundle: testBundle, OwnShmDir: testOwnShm}
			_, err = Rewrite(s, in)
			if tc.key != "" {
				var pe *Error
				if !errors.As(err, &pe) {
					t.Fatalf("got %v (sysctl %v), want a refusal naming %s", err, s.Linux.Sysctl, tc.key)
				}
				if pe.Key != tc.key || pe.Value != tc.value || !strings.Contains(pe.Reason, tc.reason) {
					t.Fatalf("got %v\nwant %s=%q: …%s", err, tc.key, tc.value, tc.reason)
				}
				if strings.Contains(err.Error(), "\n") && !strings.Contains(tc.value, "\n") {
					t.Errorf("more than one line: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(s.Linux.Sysctl, tc.want) || (s.Linux.Sysctl == nil) != (tc.want == nil) {
				t.Errorf("linux.sysctl = %v, want %v", s.Linux.Sysctl, tc.want)
			}
		})
	}
}

func TestSysctlName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel.shmmax":                    "kernel.shmmax",
		"kernel/shmmax":                    "kernel.shmmax",
		"net/ipv4/conf/eno2.100/rp_filter": "net.ipv4.conf.eno2/100.rp_filter",
		"net.ipv4.conf.eno2/100.rp_filter": "net.ipv4.conf.eno2/100.rp_filter",
		"kernel//shmmax":                   "kernel..shmmax",
		"shmmax":                           "shmmax",
		"":                                 "",
	} {
		if got := sysctlName(in); got != want {
			t.Errorf("sysctlName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseSysctlUint(t *testing.T) {
	for in, want := range map[string]uint64{"0": 0, "1": 1, "4096": 4096, "18446744073709551615": 1<<64 - 1} {
		if got, ok := parseSysctlUint(in); !ok || got != want {
			t.Errorf("parseSysctlUint(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "00", "01", "0x1", "1e3", "1.0", " 1", "1 ", "-0", "+1", "18446744073709551616", "٣"} {
		if got, ok := parseSysctlUint(in); ok {
			t.Errorf("parseSysctlUint(%q) = %d, want refusal", in, got)
		}
	}
}
