package admission

import (
	"io"
	"os"
	"testing"

	"k8s.io/klog/v2"
)

// TestMain silences the informers' and the plugin's logging: a failing
// test says what it needs to.
func TestMain(m *testing.M) {
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	os.Exit(m.Run())
}
