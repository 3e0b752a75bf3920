package podcases

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		name, doc, wantErr string
	}{
		{name: "a row", doc: `{"cases": [{"name": "x", "admission": "", "node": ""}]}`},
		{name: "a field no reader checks", doc: `{"cases": [{"name": "x", "nodee": "k"}]}`, wantErr: `unknown field "nodee"`},
		{name: "no cases", doc: `{"cases": []}`, wantErr: "no cases"},
		{name: "not JSON", doc: `{`, wantErr: "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "cases.json")
			if err := os.WriteFile(p, []byte(tc.doc), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Load: %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	if got := (Case{}).PodNamespace(); got != "default" {
		t.Errorf("PodNamespace() = %q", got)
	}
	if got := (Case{Namespace: "ml"}).PodNamespace(); got != "ml" {
		t.Errorf("PodNamespace() = %q", got)
	}
	if got := (Case{}).ContainerNames(); !slices.Equal(got, []string{"app"}) {
		t.Errorf("ContainerNames() = %q", got)
	}
	if got := (Case{Containers: []string{"b", "a"}}).ContainerNames(); !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("ContainerNames() = %q", got)
	}
}
