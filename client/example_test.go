package client_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-controller/client"
)

// Create a sandbox, wait until it runs, run a command in it and read back
// the file the command wrote.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The address and token come from AKCTL_ADDR and AKCTL_TOKEN when
	// the Config leaves them empty.
	c, err := client.New(client.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	greeting, err := scratch(ctx, c)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(greeting)
}

// scratch declares the sandbox, waits for it, runs a command in it and
// reads back the file the command wrote.
func scratch(ctx context.Context, c *client.Client) (string, error) {
	decl := `sandbox "scratch" {
  driver  = "exec"
  command = ["/bin/sleep", "infinity"]
}`
	if _, err := c.ApplyHCL(ctx, []client.HCLFile{{Name: "scratch.hcl", Src: []byte(decl)}}, client.ApplyOptions{}); err != nil {
		return "", err
	}
	if _, err := c.WaitReady(ctx, "default", "scratch"); err != nil {
		return "", err
	}

	sb := c.Sandbox("default", "scratch")
	res, err := sb.Exec(ctx, client.ExecRequest{
		Command: []string{"sh", "-c", `echo "$GREETING" > "$NOMAD_TASK_DIR/greeting.txt"`},
		Env:     map[string]string{"GREETING": "hello from the sandbox"},
	})
	if err != nil {
		return "", err
	}
	if err := res.Check(); err != nil {
		return "", err
	}
	dir, err := sb.Exec(ctx, client.ExecRequest{Command: []string{"printenv", "NOMAD_TASK_DIR"}})
	if err != nil {
		return "", err
	}
	f, _, err := sb.ReadFile(ctx, strings.TrimSpace(string(dir.Stdout))+"/greeting.txt")
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return "", err
	}
	return string(b), nil
}
