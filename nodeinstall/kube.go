package nodeinstall

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ServiceAccountDir is where Kubernetes mounts a pod's service account
// token and the cluster's CA.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// kubeNode patches one label of one node through the API server, from
// inside a pod: the in-cluster address from the environment and the pod's
// service account. A full client library would add far more code than a
// single merge patch needs.
type kubeNode struct {
	name   string
	server string // https://host:port
	saDir  string
}

func newKubeNode(name string) (*kubeNode, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, fmt.Errorf("--kube-node %s: not in a pod (KUBERNETES_SERVICE_HOST/PORT unset)", name)
	}
	return &kubeNode{name: name, server: "https://" + net.JoinHostPort(host, port), saDir: ServiceAccountDir}, nil
}

// setLabel sets key=value on the node, or removes key when value is nil.
func (k *kubeNode) setLabel(ctx context.Context, key string, value *string) error {
	token, err := os.ReadFile(filepath.Join(k.saDir, "token"))
	if err != nil {
		return fmt.Errorf("service account token: %w", err)
	}
	ca, err := os.ReadFile(filepath.Join(k.saDir, "ca.crt"))
	if err != nil {
		return fmt.Errorf("service account CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return fmt.Errorf("service account CA %s holds no certificate", filepath.Join(k.saDir, "ca.crt"))
	}
	// A JSON merge patch: null deletes the key, and a label that is
	// already absent or already set is no error, so both are idempotent.
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]*string{key: value}}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, k.server+"/api/v1/nodes/"+url.PathEscape(k.name), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/merge-patch+json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("patch node %s: %w", k.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("patch node %s: %s: %s", k.name, resp.Status, apiMessage(msg))
	}
	return nil
}

// apiMessage is the message of a Kubernetes Status body, else the body.
func apiMessage(body []byte) string {
	var st struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &st) == nil && st.Message != "" {
		return st.Message
	}
	return strings.TrimSpace(string(body))
}
