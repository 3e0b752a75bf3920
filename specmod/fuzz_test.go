package specmod

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseSize checks that any accepted size is positive and that its
// canonical form reads back to the same number of bytes.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"256Mi", "1g", "1.5G", "4096", "0", "-1", "1e3", "NaN", "99999999999999999999Ti", ".5k"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n <= 0 || n > maxSize {
			t.Fatalf("ParseSize(%q) = %d out of range", s, n)
		}
		back, err := ParseSize(FormatSize(n))
		if err != nil || back != n {
			t.Fatalf("round trip of %q: %d -> %q -> %d, %v", s, n, FormatSize(n), back, err)
		}
	})
}

// FuzzParseRequest checks that annotation parsing never panics, that every
// rejection is an *Error naming an nsiso key, and that accepted requests
// obey the rules (a size only with private IPC).
func FuzzParseRequest(f *testing.F) {
	f.Add("private", "256Mi", "share-parent", "p", "")
	f.Add("share-parent", "1g", "", "", "")
	f.Add("", "", "private", "", "nsiso/bogus")
	f.Add("host", "0", "x", "c", "")
	f.Fuzz(func(t *testing.T, ipc, size, pid, parent, extra string) {
		ann := map[string]string{}
		for k, v := range map[string]string{AnnotationIPCMode: ipc, AnnotationShmSize: size, AnnotationPIDMode: pid, AnnotationParent: parent} {
			if v != "" {
				ann[k] = v
			}
		}
		if extra != "" {
			ann[extra] = "v"
		}
		r, err := ParseRequest("c", ann)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || !strings.HasPrefix(pe.Key, AnnotationPrefix) || pe.Container != "c" {
				t.Fatalf("rejection %v is not a well-formed *Error", err)
			}
			return
		}
		if r.ShmSize != 0 && r.IPC != ModePrivate {
			t.Fatalf("accepted size %d with ipc mode %q", r.ShmSize, r.IPC)
		}
		if r.Parent == "c" {
			t.Fatal("accepted a container as its own parent")
		}
		s := baseSpec()
		s.Annotations = ann
		par := Parent{ID: r.Parent, IPCPath: pinIPC, PIDPath: pinPID, ShmPath: pinShm}
		if err := Rewrite(s, Input{ID: "c", Request: r, Policy: strict, Parent: par, Host: fakeHost{}}); err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Rewrite error %v is not an *Error", err)
			}
		}
	})
}
