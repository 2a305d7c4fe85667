// Package client is the Go client of the agentkernel controller's HTTP
// API, for programs that use sandboxes: agents, test harnesses, tools.
// akctl's exec, attach, cp and logs are built on it.
//
// A Client declares sandboxes (ApplyHCL), reads and watches them
// (Get, List, Watch, WaitReady), deletes them, and works inside a running
// one through its Sandbox handle: Exec runs a command and returns its
// output, ExecStream runs one with live standard streams and a terminal,
// ReadFile, WriteFile, ReadDir, Remove, ReadTar and WriteTar move files,
// and Logs reads the task's output.
//
// Every call takes a context and stops when it ends. Failures the
// controller answered are *Error values that match the package's
// sentinel errors with errors.Is:
//
//	_, err := sb.Exec(ctx, client.ExecRequest{Command: []string{"make"}})
//	switch {
//	case errors.Is(err, client.ErrNotRunning):   // 409: not Running yet (or any more)
//	case errors.Is(err, client.ErrTooManyRequests): // 429: too many sessions, retry later
//	}
//
// Commands run as argument vectors, never through a shell the controller
// builds: an environment given in ExecRequest.Env arrives in the command
// exactly as written, and file paths travel as arguments.
package client
