package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/agentkernel/agentkernel-controller/internal/api"
	"github.com/agentkernel/agentkernel-controller/internal/buildinfo"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const versionUsage = `Usage: akctl version [flags]

Prints akctl's version and, when the controller can be reached, the
controller's: its version, store ID, store revision and default namespace
and, when it runs as several instances, which instance answered, its role,
the leader and, on a follower, when its copy last matched the leader's.

Examples:
  akctl version
  akctl version -o json

Exit codes: 0 success (also when the controller cannot be reached), 1 the
controller answered with an error, 2 usage error.
`

type versionOutput struct {
	Client     clientVersion    `json:"client"`
	Controller *api.VersionInfo `json:"controller"`
}

type clientVersion struct {
	Version string `json:"version"`
}

func runVersion(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("version")
	output := fs.String("o", "text", "output `format`: text or json")
	e.globals.register(fs)
	rest, err := parseArgs(fs, args, versionUsage, e)
	if err != nil {
		return err
	}
	switch {
	case len(rest) > 0:
		return usagef("version takes no arguments")
	case *output != "text" && *output != "json":
		return usagef("unknown output format %q: use text or json", *output)
	}
	c, err := newClient(e)
	if err != nil {
		return err
	}
	defer c.close()
	out := versionOutput{Client: clientVersion{Version: buildinfo.Version(version)}}
	var vi api.VersionInfo
	err = c.do(ctx, http.MethodGet, "/v1/version", nil, &vi)
	var unreachable *unreachableError
	switch {
	case err == nil:
		out.Controller = &vi
	case errors.As(err, &unreachable):
		fmt.Fprintf(e.stderr, "akctl version: %v\n", err)
	default:
		return err
	}
	if *output == "json" {
		return writeJSON(e.stdout, out)
	}
	tw := newTable(e.stdout)
	fmt.Fprintf(tw, "Client version:\t%s\n", out.Client.Version)
	if out.Controller != nil {
		fmt.Fprintf(tw, "Controller version:\t%s\n", vi.Version)
		fmt.Fprintf(tw, "Controller address:\t%s\n", c.addr)
		fmt.Fprintf(tw, "Store ID:\t%s\n", vi.StoreID)
		fmt.Fprintf(tw, "Store revision:\t%d\n", vi.Revision)
		fmt.Fprintf(tw, "Default namespace:\t%s\n", vi.DefaultNamespace)
		// A controller that runs alone, or predates clusters, says
		// nothing of instances.
		if vi.Role == api.RoleLeader || vi.Role == api.RoleFollower {
			fmt.Fprintf(tw, "Instance:\t%s (%s)\n", vi.InstanceID, vi.Role)
			fmt.Fprintf(tw, "Leader:\t%s\n", leaderLine(&vi))
			if vi.Role == api.RoleFollower {
				fmt.Fprintf(tw, "Last synced:\t%s\n", syncLine(&vi, e.clock()))
			}
		}
	}
	return tw.Flush()
}

func leaderLine(vi *api.VersionInfo) string {
	l := vi.Leader
	if l == nil || l.ID == "" {
		return "none elected yet"
	}
	s := l.ID
	if l.Address != "" {
		s += " at " + l.Address
	}
	if l.ID == vi.InstanceID {
		s += " (this instance)"
	}
	return s
}

func syncLine(vi *api.VersionInfo, now time.Time) string {
	if vi.LastSync == nil {
		return "never"
	}
	return fmt.Sprintf("%s (%s ago, index %d)", vi.LastSync.UTC().Format(time.RFC3339), age(*vi.LastSync, now), vi.SyncIndex)
}
