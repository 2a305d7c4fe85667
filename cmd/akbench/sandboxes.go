package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	apiserver "github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// applyBatch is the most sandboxes one POST /v1/apply carries.
const applyBatch = 1000

// fleet declares n sandboxes the way a user would, in HCL, and loads them
// with the spec package, so that they carry every default a real
// declaration gets. Resources are the smallest the language allows, so
// that hundreds fit on one node of a real cluster.
func fleet(n int, prefix, driver, namespace string) ([]spec.Sandbox, error) {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "sandbox %q {\n  driver    = %q\n", fmt.Sprintf("%s-%05d", prefix, i), driver)
		switch driver {
		case spec.DriverDocker:
			b.WriteString("  image     = \"busybox:1.36\"\n  command   = [\"sleep\", \"infinity\"]\n")
		case spec.DriverRawExec:
			// raw_exec cannot isolate the network; the language wants it said.
			b.WriteString("  network   = \"host\"\n  command   = [\"/bin/sleep\", \"infinity\"]\n")
		default:
			b.WriteString("  command   = [\"/bin/sleep\", \"infinity\"]\n")
		}
		fmt.Fprintf(&b, "  vcpus     = %g\n  memory_mb = %d\n  labels    = { bench = \"akbench\" }\n}\n", spec.MinVCPUs, spec.MinMemoryMB)
	}
	res, diags := spec.LoadSources([]spec.SourceFile{{Name: "akbench.hcl", Src: []byte(b.String())}},
		spec.Options{DefaultNamespace: namespace, MaxSourceBytes: 64 << 20})
	if diags.HasErrors() {
		return nil, fmt.Errorf("declare the benchmark sandboxes: %s", diags.Error())
	}
	return res.Sandboxes, nil
}

// applyBodies encodes the sandboxes as POST /v1/apply bodies of at most
// applyBatch objects each. They are encoded before a scenario starts, so
// that the client's JSON work is not counted as the controller's.
func applyBodies(sbs []spec.Sandbox) ([][]byte, error) {
	var bodies [][]byte
	for start := 0; start < len(sbs); start += applyBatch {
		end := min(start+applyBatch, len(sbs))
		req := apiserver.ApplyRequest{ApplySet: "akbench", Objects: make([]apiserver.ApplyObject, 0, end-start)}
		for _, sb := range sbs[start:end] {
			req.Objects = append(req.Objects, apiserver.ApplyObject{Sandbox: sb, Source: sb.Source})
		}
		b, err := json.Marshal(req)
		if err != nil {
			return nil, fmt.Errorf("encode apply request: %w", err)
		}
		bodies = append(bodies, b)
	}
	return bodies, nil
}

// applyResult is what matters of an ApplyResponse here. Results are not
// decoded: the client's work is kept small.
type applyResult struct {
	Changed bool `json:"changed"`
}

// postApply sends the bodies to the API one after the other, as akctl
// apply does, and reports whether any of them changed the store.
func postApply(ctx context.Context, hc *http.Client, apiURL string, bodies [][]byte) (changed bool, err error) {
	for i, body := range bodies {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, apiURL+"/v1/apply", bytes.NewReader(body))
		if err != nil {
			return false, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return false, fmt.Errorf("apply batch %d: %w", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return false, fmt.Errorf("apply batch %d: read answer: %w", i, err)
		}
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("apply batch %d: status %s: %s", i, resp.Status, bytes.TrimSpace(b))
		}
		var res applyResult
		if err := json.Unmarshal(b, &res); err != nil {
			return false, fmt.Errorf("apply batch %d: decode answer: %w", i, err)
		}
		changed = changed || res.Changed
	}
	return changed, nil
}
