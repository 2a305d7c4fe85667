package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/term"

	akclient "github.com/agentkernel/agentkernel-controller/client"
)

// The commands that work inside a running sandbox go through the public
// Go client package, as programs that use sandboxes do.

// sandboxHandle connects the package client to the sandbox ns/name with
// akctl's connection flags and transport; done closes the connection.
func sandboxHandle(e *env, ns, name string) (sb *akclient.SandboxHandle, done func(), err error) {
	c, err := newClient(e)
	if err != nil {
		return nil, nil, err
	}
	addr := c.addr
	if strings.HasPrefix(addr, "/") {
		addr = "unix://" + addr
	}
	pc, err := akclient.New(akclient.Config{Address: addr, Token: c.token, HTTPClient: c.http, UserAgent: "akctl/" + version})
	if err != nil {
		c.close()
		return nil, nil, usagef("%v", err)
	}
	return pc.Sandbox(ns, name), c.close, nil
}

// sandboxOf reads "name" or "ns/name" with the namespace flag's default.
func sandboxOf(arg, namespace string) (ns, name string, err error) {
	ns, name = namespace, arg
	if i := strings.IndexByte(arg, '/'); i >= 0 {
		ns, name = arg[:i], arg[i+1:]
	}
	if ns == "" || name == "" || strings.Contains(name, "/") {
		return "", "", usagef("%q is not a sandbox: want NAME or NAMESPACE/NAME", arg)
	}
	return ns, name, nil
}

// insideError words a failure of the work inside a sandbox.
func insideError(e *env, err error, ns, name string) error {
	var ce *akclient.Error
	switch {
	case errors.Is(err, akclient.ErrNotRunning) && errors.As(err, &ce):
		return fmt.Errorf("sandbox %s/%s is %s, not Running", ns, name, ce.Phase)
	case errors.Is(err, akclient.ErrUnauthorized):
		return &apiError{status: 401, tokenSent: e.globals.token != "" || e.globals.tokenFile != "" || e.getenv("AKCTL_TOKEN") != ""}
	case errors.Is(err, akclient.ErrInvalid) && errors.As(err, &ce):
		return fmt.Errorf("invalid: %s", ce.Message)
	}
	return err
}

const execUsage = `Usage: akctl exec [flags] NAME -- COMMAND [ARG...]

Runs a command in the running sandbox NAME (NAMESPACE/NAME, or -n) and
passes its output through as it comes. The command is an argument
vector: no shell reads it unless you run one ("sh", "-c", ...). -e adds
environment variables exactly as written. The exit code is the
command's (127: no such command).

Examples:
  akctl exec hello -- ls -la /tmp
  akctl exec -e TOKEN="a b'c" hello -- printenv TOKEN
  akctl exec -i hello -- sh -c 'cat > /tmp/in.txt' < in.txt
  akctl exec -it -n team-a worker -- python3
`

// envFlags collects -e NAME=value.
type envFlags map[string]string

func (v envFlags) String() string { return "" }

func (v envFlags) Set(s string) error {
	k, val, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return errors.New("want NAME=value")
	}
	v[k] = val
	return nil
}

func runExec(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("exec")
	ns := namespaceFlag(fs, "the sandbox's `namespace`")
	stdin := fs.Bool("i", false, "pass standard input to the command")
	tty := fs.Bool("t", false, "give the command a terminal (with -i: an interactive session)")
	it := fs.Bool("it", false, "-i and -t together")
	envs := envFlags{}
	fs.Var(envs, "e", "set an environment variable, `NAME=value` (repeatable)")
	workdir := fs.String("w", "", "start the command in `directory`")
	e.globals.register(fs)
	pos, err := parseArgs(fs, args, execUsage, e)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return usagef("want a sandbox and a command: akctl exec NAME -- COMMAND [ARG...]")
	}
	return execIn(ctx, e, pos[0], *ns, pos[1:], envs, *workdir, *stdin || *it, *tty || *it)
}

const attachUsage = `Usage: akctl attach [flags] NAME

Opens an interactive shell in the running sandbox NAME: bash where the
sandbox has it, sh otherwise (akctl exec -it NAME -- SHELL). It needs a
terminal; exit the shell to leave.
`

// shellScript starts the sandbox's shell: a fixed script, no input in it.
const shellScript = `if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l`

func runAttach(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("attach")
	ns := namespaceFlag(fs, "the sandbox's `namespace`")
	e.globals.register(fs)
	pos, err := parseArgs(fs, args, attachUsage, e)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one sandbox: akctl attach NAME")
	}
	if _, ok := terminalOf(e.stdin); !ok {
		return usagef("attach needs a terminal on standard input; use akctl exec -i NAME -- sh for a pipe")
	}
	return execIn(ctx, e, pos[0], *ns, []string{"/bin/sh", "-c", shellScript}, nil, "", true, true)
}

// terminalOf returns the descriptor of r when it is a terminal.
func terminalOf(r any) (int, bool) {
	f, ok := r.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return 0, false
	}
	return int(f.Fd()), true
}

func execIn(ctx context.Context, e *env, target, namespace string, command []string, envs map[string]string, workdir string, stdin, tty bool) error {
	ns, name, err := sandboxOf(target, namespace)
	if err != nil {
		return err
	}
	sb, done, err := sandboxHandle(e, ns, name)
	if err != nil {
		return err
	}
	defer done()
	req := akclient.StreamRequest{Command: command, Env: envs, Workdir: workdir, TTY: tty, Stdout: e.stdout, Stderr: e.stderr}
	if stdin {
		req.Stdin = e.stdin
	}
	if fd, ok := terminalOf(e.stdin); ok && tty && stdin {
		// The local terminal passes keys through raw, and its size and
		// every change of it follow.
		old, err := term.MakeRaw(fd)
		if err != nil {
			return fmt.Errorf("make the terminal raw: %w", err)
		}
		defer term.Restore(fd, old)
		sizes := make(chan akclient.TerminalSize, 1)
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		send := func() {
			if w, h, err := term.GetSize(fd); err == nil {
				// Only the latest size matters: replace one not yet sent.
				select {
				case <-sizes:
				default:
				}
				sizes <- akclient.TerminalSize{Width: w, Height: h}
			}
		}
		send()
		go func() {
			for range winch {
				send()
			}
		}()
		req.Resize = sizes
	}
	code, err := sb.ExecStream(ctx, req)
	if err != nil {
		return insideError(e, err, ns, name)
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

const logsUsage = `Usage: akctl logs [flags] NAME

Prints the output of the sandbox NAME's task, as it wrote it.

Examples:
  akctl logs hello
  akctl logs -f --tail 20 hello
  akctl logs --stderr -n team-a worker
`

func runLogs(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("logs")
	ns := namespaceFlag(fs, "the sandbox's `namespace`")
	follow := fs.Bool("f", false, "keep printing new output until interrupted")
	stderr := fs.Bool("stderr", false, "print the task's standard error instead of its output")
	tail := fs.Int("tail", -1, "start `N` lines from the end (default: the whole log)")
	e.globals.register(fs)
	pos, err := parseArgs(fs, args, logsUsage, e)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want one sandbox: akctl logs NAME")
	}
	if *tail < -1 {
		return usagef("--tail must be 0 or more")
	}
	nsName, name, err := sandboxOf(pos[0], *ns)
	if err != nil {
		return err
	}
	sb, done, err := sandboxHandle(e, nsName, name)
	if err != nil {
		return err
	}
	defer done()
	o := akclient.LogOptions{Follow: *follow, Stderr: *stderr}
	switch {
	case *tail == 0:
		o.Tail = akclient.TailNone
	case *tail > 0:
		o.Tail = *tail
	}
	rc, err := sb.Logs(ctx, o)
	if err != nil {
		return insideError(e, err, nsName, name)
	}
	defer rc.Close()
	if _, err := io.Copy(e.stdout, rc); err != nil {
		if ctx.Err() != nil {
			return ctx.Err() // interrupted: 130, as for any command
		}
		return fmt.Errorf("read the log: %w", err)
	}
	return nil
}

const cpUsage = `Usage: akctl cp [flags] SRC DST

Copies a file, or with -r a directory, between this machine and a
running sandbox. One side is SANDBOX:PATH (NAMESPACE/NAME:PATH for
another namespace than -n), with an absolute PATH inside the sandbox;
the other is a local path, or - for standard input or output. Bytes are
copied as they are. A file written into a sandbox replaces the old one
whole; directories travel as a tar stream.

Examples:
  akctl cp ./main.py hello:/tmp/main.py
  akctl cp hello:/tmp/out.bin ./out.bin
  akctl cp -r ./project team-a/worker:/work/project
  akctl cp hello:/etc/os-release -
`

// remoteRef is a SANDBOX:PATH argument.
type remoteRef struct{ ns, name, path string }

// parseRemote reads SANDBOX:PATH; a local path is anything else,
// including ./a:b and absolute paths.
func parseRemote(arg, namespace string) (*remoteRef, error) {
	i := strings.IndexByte(arg, ':')
	if i <= 0 || strings.HasPrefix(arg, "/") || strings.HasPrefix(arg, ".") {
		return nil, nil
	}
	ns, name, err := sandboxOf(arg[:i], namespace)
	if err != nil {
		return nil, err
	}
	p := arg[i+1:]
	if !strings.HasPrefix(p, "/") {
		return nil, usagef("%q: the path inside the sandbox must be absolute", arg)
	}
	return &remoteRef{ns: ns, name: name, path: p}, nil
}

func runCp(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("cp")
	ns := namespaceFlag(fs, "the `namespace` of a sandbox named without one")
	recursive := fs.Bool("r", false, "copy a directory and what it holds")
	mkdir := fs.Bool("p", true, "create missing parent directories in the sandbox")
	e.globals.register(fs)
	pos, err := parseArgs(fs, args, cpUsage, e)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usagef("want a source and a destination: akctl cp SRC DST")
	}
	src, err := parseRemote(pos[0], *ns)
	if err != nil {
		return err
	}
	dst, err := parseRemote(pos[1], *ns)
	if err != nil {
		return err
	}
	switch {
	case src != nil && dst != nil:
		return usagef("copy between a sandbox and this machine: one side must be a local path")
	case src == nil && dst == nil:
		return usagef("neither side names a sandbox: write one as SANDBOX:/path")
	}
	remote := dst
	if remote == nil {
		remote = src
	}
	sb, done, err := sandboxHandle(e, remote.ns, remote.name)
	if err != nil {
		return err
	}
	defer done()
	if dst != nil {
		err = upload(ctx, e, sb, pos[0], dst.path, *recursive, *mkdir)
	} else {
		err = download(ctx, e, sb, src.path, pos[1], *recursive)
	}
	return insideError(e, err, remote.ns, remote.name)
}

func upload(ctx context.Context, e *env, sb *akclient.SandboxHandle, local, remote string, recursive, mkdir bool) error {
	if local == "-" {
		if recursive {
			// A tar stream on standard input, unpacked into the directory.
			return sb.WriteTar(ctx, remote, e.stdin, mkdir)
		}
		return sb.WriteFile(ctx, remote, e.stdin, akclient.WriteOptions{Mkdir: mkdir})
	}
	fi, err := os.Stat(local)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		if !recursive {
			return usagef("%s is a directory: add -r to copy it", local)
		}
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeTar(pw, local)) }()
		err := sb.WriteTar(ctx, remote, pr, mkdir)
		pr.Close()
		return err
	}
	f, err := os.Open(local)
	if err != nil {
		return err
	}
	defer f.Close()
	p := remote
	if strings.HasSuffix(p, "/") {
		p += filepath.Base(local)
	}
	return sb.WriteFile(ctx, p, f, akclient.WriteOptions{Mode: fi.Mode().Perm(), Mkdir: mkdir, Size: fi.Size()})
}

func download(ctx context.Context, e *env, sb *akclient.SandboxHandle, remote, local string, recursive bool) error {
	if recursive {
		rc, err := sb.ReadTar(ctx, remote)
		if err != nil {
			return err
		}
		defer rc.Close()
		if local == "-" {
			_, err := io.Copy(e.stdout, rc)
			return err
		}
		if err := readTar(rc, local); err != nil {
			return err
		}
		// The archive's end marker may come before the stream's end:
		// read it whole, so that the controller sees a finished transfer.
		_, err = io.Copy(io.Discard, rc)
		return err
	}
	rc, info, err := sb.ReadFile(ctx, remote)
	if errors.Is(err, akclient.ErrConflict) {
		return fmt.Errorf("%s is a directory in the sandbox: add -r to copy it", remote)
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	if local == "-" {
		_, err := io.Copy(e.stdout, rc)
		return err
	}
	if fi, err := os.Stat(local); err == nil && fi.IsDir() {
		local = filepath.Join(local, path.Base(remote))
	}
	// Written beside and renamed: a failed copy leaves no half file.
	tmp, err := os.CreateTemp(filepath.Dir(local), "."+filepath.Base(local)+".akctl-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, rc); err != nil {
		tmp.Close()
		return fmt.Errorf("copy %s: %w", remote, err)
	}
	mode := info.Mode.Perm()
	if mode == 0 {
		mode = 0o644
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), local)
}

// writeTar archives the directory root, paths relative to it.
func writeTar(w io.Writer, root string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(tw, f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// readTar unpacks an archive into dir, refusing entries that would land
// outside it.
func readTar(r io.Reader, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the archive: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." {
			continue
		}
		if !fs.ValidPath(name) {
			return fmt.Errorf("the archive's entry %q leaves the directory", h.Name)
		}
		mode := fs.FileMode(h.Mode).Perm()
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
				return err
			}
			f, err := root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
				return err
			}
			// A copy made again over an earlier one replaces its links.
			if fi, err := root.Lstat(name); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
				if err := root.Remove(name); err != nil {
					return err
				}
			}
			if err := root.Symlink(h.Linkname, name); err != nil {
				return err
			}
		}
	}
}
