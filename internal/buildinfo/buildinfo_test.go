package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestDescribe(t *testing.T) {
	tests := []struct {
		name string
		bi   debug.BuildInfo
		want string
	}{
		{"checkout build with changes", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "5fab1b7e0c2a7d1e9f00aa11bb22cc33dd44ee55"}, {Key: "vcs.modified", Value: "true"}}},
			"devel (5fab1b7e0c2a, modified)"},
		{"clean checkout build", debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "5fab1b7e0c2a7d1e9f00aa11bb22cc33dd44ee55"}, {Key: "vcs.modified", Value: "false"}}},
			"devel (5fab1b7e0c2a)"},
		{"go install of a release", debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, "v1.4.0"},
		{"go install of a pseudo-version", debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261206192615-5fab1b7e0c2a"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "5fab1b7e0c2a7d1e9f00aa11bb22cc33dd44ee55"}}},
			"v0.0.0-20261206192615-5fab1b7e0c2a"},
		{"nothing recorded", debug.BuildInfo{}, "devel"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := describe(&tt.bi); got != tt.want {
				t.Errorf("describe = %q, want %q", got, tt.want)
			}
		})
	}
	if got := Version("v9.9.9"); got != "v9.9.9" {
		t.Errorf("a stamped version is %q", got)
	}
}
