package shim

import (
	"bytes"
	"context"
	"testing"

	"github.com/containerd/containerd/api/types/runc/options"
	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"
)

// containerd asks a runtime for its info (runc's features) with the
// handler's options; runc.v2's manager reads only runc's options type, so
// nsiso's must arrive translated.
func TestInfoTranslatesOptions(t *testing.T) {
	a, err := typeurl.MarshalAnyToProto(&runtimeoptions.Options{ConfigBody: []byte("binary_name = \"true\"\n")})
	if err != nil {
		t.Fatal(err)
	}
	data, err := proto.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	info, err := NewManager().Info(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != RuntimeName {
		t.Errorf("name %q", info.Name)
	}
	v, err := typeurl.UnmarshalAny(info.Options)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := v.(*options.Options); !ok || o.BinaryName != "true" {
		t.Fatalf("options %T %+v, want runc options naming binary \"true\"", v, v)
	}
}
