package replica_test

import (
	"fmt"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/replica"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// text is n bytes of UTF-8 text, different for each seed, with
// multi-byte characters so that chunk boundaries fall inside some.
func text(seed string, n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%s %07d: déjà vu, 日本語, ∑ — the quick brown fox\n", seed, i)
	}
	s := b.String()[:n]
	for !strings.HasSuffix(s, "\n") && len(s) > 0 && s[len(s)-1] >= 0x80 {
		s = s[:len(s)-1] // do not end inside a character
	}
	return s + strings.Repeat("\n", n-len(s))
}

// withFiles is a sandbox holding one file of each size.
func withFiles(name string, sizes ...int) spec.Sandbox {
	sb := sandbox(name, "img:1")
	for i, n := range sizes {
		sb.Spec.Files = append(sb.Spec.Files, spec.File{Path: fmt.Sprintf("/data/%s-%d.txt", name, i), Content: text(fmt.Sprint(name, i), n), Mode: "0644"})
	}
	return sb
}

// widest is a valid sandbox with every size the language allows at its
// largest: 2 MiB of files, 64 KiB of environment, 64 labels, a command
// of 256 long arguments, and the longest namespace and name.
func widest() spec.Sandbox {
	sb := withFiles(strings.Repeat("w", spec.MaxNameLength), spec.MaxFileBytes, spec.MaxFileBytes-(10<<10), 10<<10)
	sb.Namespace = strings.Repeat("n", 128)
	sb.Spec.Profile = "moderate"
	sb.Spec.Env = map[string]string{}
	for i := 0; ; i++ {
		k := fmt.Sprintf("VAR_%04d", i)
		v := text(k, 1000)
		if envBytes(sb.Spec.Env)+len(k)+len(v) > spec.MaxEnvBytes {
			break
		}
		sb.Spec.Env[k] = v
	}
	sb.Labels = map[string]string{}
	for i := range spec.MaxLabels {
		sb.Labels[fmt.Sprintf("label-%02d", i)] = strings.Repeat("v", 63)
	}
	sb.Spec.Command = []string{"/bin/agent"}
	for i := range spec.MaxCommandArgs - 1 {
		sb.Spec.Command = append(sb.Spec.Command, text(fmt.Sprint("arg", i), 4096))
	}
	return sb
}

func envBytes(env map[string]string) int {
	n := 0
	for k, v := range env {
		n += len(k) + len(v)
	}
	return n
}

// Item 2: the copy holds every declaration the language allows, whole,
// under the default prefix and under the longest one.
func TestEveryValidDeclarationReplicatesWhole(t *testing.T) {
	files := withFiles("files", spec.MaxFileBytes, spec.MaxTotalFileBytes-spec.MaxFileBytes)
	files.Spec.Profile, files.Spec.Command = "moderate", []string{"sleep", "infinity"}
	tests := []struct {
		name   string
		prefix string
		sb     spec.Sandbox
	}{
		{"2 MiB of files", "agentkernel", files},
		{"every field at its widest, the longest prefix", "team/" + strings.Repeat("p", 46), widest()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sb := tt.sb
				sb.Canonicalize()
				if err := sb.Validate(); err != nil {
					t.Fatalf("the test's sandbox: %v", err)
				}
				e := newEnv(t)
				opt := instOpt{cfg: func(c *replica.Config) { c.Prefix = tt.prefix }}
				a := e.instanceWith(opt)
				if err := a.rep.CheckPolicy(&sb); err != nil {
					t.Fatalf("CheckPolicy refused a valid sandbox: %v", err)
				}
				if _, err := a.rep.CatchUp(t.Context(), "owner-a"); err != nil {
					t.Fatal(err)
				}
				keys := a.apply(t, sb, sandbox("small", "img:1"))
				if err := a.rep.Push(t.Context(), keys); err != nil {
					t.Fatalf("push: %v", err)
				}
				b := e.instanceWith(opt)
				if _, err := b.rep.CatchUp(t.Context(), "owner-b"); err != nil {
					t.Fatalf("next leader's catch-up: %v", err)
				}
				if diff := cmp.Diff(a.declarations(t), b.declarations(t)); diff != "" {
					t.Errorf("the copy did not hold the declarations whole (-leader +next):\n%s", diff)
				}
			})
		})
	}
}
