// Package buildinfo says which build a binary is: the version stamped at
// link time, else the module version and the VCS revision Go recorded.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Version describes the running binary. stamped is what -ldflags "-X
// main.version=..." set, "" or "dev" when nothing was.
//
//	v1.2.3                         stamped, or `go install ...@v1.2.3`
//	v1.2.3 (a1b2c3d4e5f6)          a release with its revision
//	devel (a1b2c3d4e5f6, modified) built from a checkout with changes
func Version(stamped string) string {
	if stamped != "" && stamped != "dev" {
		return stamped
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown (no build information)"
	}
	return describe(bi)
}

func describe(bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "modified"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	var extra []string
	for _, x := range []string{rev, modified} {
		if x != "" {
			extra = append(extra, x)
		}
	}
	if len(extra) == 0 || strings.Contains(v, rev) && rev != "" && modified == "" {
		return v
	}
	return v + " (" + strings.Join(extra, ", ") + ")"
}
