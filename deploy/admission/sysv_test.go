package admission

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apiserver/pkg/admission"
)

// sysctlPod is an nsiso pod with securityContext.sysctls, in order.
func sysctlPod(namespace string, kv ...string) *corev1.Pod {
	p := nsisoPod(namespace, nil, false)
	p.Spec.SecurityContext = &corev1.PodSecurityContext{}
	for i := 0; i+1 < len(kv); i += 2 {
		p.Spec.SecurityContext.Sysctls = append(p.Spec.SecurityContext.Sysctls, corev1.Sysctl{Name: kv[i], Value: kv[i+1]})
	}
	return p
}

// A pod's kernel.shm* sysctls are held to the namespace's System V limit,
// else its /dev/shm limit, as the node holds them to
// max_container_sysv_shm_size, else max_container_shm_size.
func TestSysVLimits(t *testing.T) {
	m := loadManifests(t)
	const cm = " in ConfigMap nsiso-system/nsiso-shm-limits"
	for _, tc := range []struct {
		name      string
		limits    map[string]string
		namespace string
		sysctls   []string
		refused   string
	}{
		{name: "the /dev/shm limit holds System V", limits: map[string]string{"max-shm-size": "1Gi"}, namespace: "team-a",
			sysctls: []string{"kernel.shmmax", "1073741825"},
			refused: `nsiso: spec.securityContext.sysctls[kernel.shmmax]="1073741825": a System V segment of 1073741825 bytes is over the limit of namespace "team-a", max-shm-size="1Gi"` + cm},
		{name: "at the limit", limits: map[string]string{"max-shm-size": "1Gi"}, namespace: "team-a",
			sysctls: []string{"kernel.shmmax", "1073741824", "kernel.shmall", "262144", "kernel.shmmni", "32768"}},
		{name: "shmall in pages", limits: map[string]string{"max-shm-size": "1Gi"}, namespace: "team-a",
			sysctls: []string{"kernel.shmall", "262145"},
			refused: `sysctls[kernel.shmall]="262145": 262145 pages of 4096 bytes of System V shared memory are over the limit of namespace "team-a"`},
		{name: "a namespace's System V limit above its /dev/shm limit", limits: map[string]string{"max-shm-size": "1Gi", "max-sysv-shm-size.oracle": "32Gi"}, namespace: "oracle",
			sysctls: []string{"kernel.shmmax", "34359738368", "kernel/shmall", "8388608"}},
		{name: "over it", limits: map[string]string{"max-shm-size": "1Gi", "max-sysv-shm-size.oracle": "32Gi"}, namespace: "oracle",
			sysctls: []string{"kernel/shmall", "8388609"},
			refused: `sysctls[kernel/shmall]="8388609": 8388609 pages of 4096 bytes of System V shared memory are over the System V limit of namespace "oracle", max-sysv-shm-size.oracle="32Gi"` + cm},
		{name: "the System V default", limits: map[string]string{"max-shm-size": "1Gi", "max-sysv-shm-size": "2Gi"}, namespace: "team-a",
			sysctls: []string{"kernel.shmmax", "2147483649"}, refused: `max-sysv-shm-size="2Gi"`},
		{name: "no limits: no check", limits: map[string]string{"max-shm-size.other": "1Gi"}, namespace: "team-a",
			sysctls: []string{"kernel.shmmax", "0x10"}},
		{name: "hex", limits: map[string]string{"max-shm-size": "1Gi"}, namespace: "team-a",
			sysctls: []string{"kernel.shmmax", "0x10"},
			refused: `sysctls[kernel.shmmax]="0x10": not a plain unsigned decimal number, which nsiso needs to hold it to the limit`},
		{name: "octal", limits: map[string]string{"max-shm-size": "1Gi"}, namespace: "team-a",
			sysctls: []string{"kernel.shmall", "010"}, refused: `sysctls[kernel.shmall]="010": not a plain`},
		{name: "past 2^64", limits: map[string]string{"max-shm-size": "1Gi"}, namespace: "team-a",
			sysctls: []string{"kernel.shmall", "18446744073709551616"}, refused: `sysctls[kernel.shmall]="18446744073709551616": not a plain`},
		{name: "2^64-1", limits: map[string]string{"max-shm-size": "1Gi"}, namespace: "team-a",
			sysctls: []string{"kernel.shmmax", "18446744073709551615"}, refused: `a System V segment of 18446744073709551615 bytes is over`},
		{name: "shmmni", limits: map[string]string{"max-shm-size": "1Gi"}, namespace: "team-a",
			sysctls: []string{"kernel.shmmni", "32769"}, refused: `sysctls[kernel.shmmni]="32769": more System V segments than the 32768`},
		{name: "the first in the node's order", limits: map[string]string{"max-shm-size": "1Gi"}, namespace: "team-a",
			sysctls: []string{"kernel/shmmax", "0x1", "kernel.shmmax", "99999999999", "kernel.shmall", "99999999999"},
			refused: `sysctls[kernel.shmall]="99999999999"`},
		{name: "other sysctls are not nsiso's", limits: map[string]string{"max-shm-size": "1Gi"}, namespace: "team-a",
			sysctls: []string{"kernel.shm_rmid_forced", "1", "kernel.msgmnb", "0x10", "net.ipv4.ip_forward", "1"}},
		{name: "a malformed System V limit", limits: map[string]string{"max-shm-size": "1Gi", "max-sysv-shm-size.team-a": "lots"}, namespace: "team-a",
			refused: `nsiso: ConfigMap nsiso-system/nsiso-shm-limits: max-sysv-shm-size.team-a="lots": `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newAPIServer(t, m.objects(t, tc.limits, false, tc.namespace)...)
			err := s.admit(t, admission.Create, sysctlPod(tc.namespace, tc.sysctls...), nil)
			switch {
			case tc.refused == "" && err != nil:
				t.Errorf("%s", describe(err))
			case tc.refused != "" && err == nil:
				t.Errorf("admitted; want a refusal saying %q", tc.refused)
			case tc.refused != "" && !strings.Contains(err.Error(), tc.refused):
				t.Errorf("the refusal must say %q:\n%v", tc.refused, err)
			}
		})
	}
}
