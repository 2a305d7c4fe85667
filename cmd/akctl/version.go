package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/agentkernel/agentkernel-controller/internal/api"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const versionUsage = `Usage: akctl version [flags]

Prints akctl's version and, when the controller can be reached, the
controller's: its version, store ID, store revision and default namespace.

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
	out := versionOutput{Client: clientVersion{Version: version}}
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
	fmt.Fprintf(e.stdout, "Client version: %s\n", version)
	if out.Controller != nil {
		tw := newTable(e.stdout)
		fmt.Fprintf(tw, "Controller version:\t%s\n", vi.Version)
		fmt.Fprintf(tw, "Controller address:\t%s\n", c.addr)
		fmt.Fprintf(tw, "Store ID:\t%s\n", vi.StoreID)
		fmt.Fprintf(tw, "Store revision:\t%d\n", vi.Revision)
		fmt.Fprintf(tw, "Default namespace:\t%s\n", vi.DefaultNamespace)
		tw.Flush()
	}
	return nil
}
