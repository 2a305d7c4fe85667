package sandboxio

import (
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Path limits, as Linux has them.
const (
	MaxPathBytes    = 4096
	MaxElementBytes = 255
)

// CheckPath accepts a path as seen inside a sandbox: absolute, clean, and
// free of what no file name should carry (NUL and other control
// characters, invalid UTF-8). Spaces, quotes, '$' and letters of every
// script are allowed: paths only ever reach the sandbox as arguments,
// never inside a command line.
func CheckPath(p string) error {
	switch {
	case p == "":
		return invalidf("path is empty")
	case !strings.HasPrefix(p, "/"):
		return invalidf("path %q is relative: give it as the sandbox sees it, starting with '/'", p)
	case len(p) > MaxPathBytes:
		return invalidf("path is %d bytes long; at most %d are allowed", len(p), MaxPathBytes)
	case !utf8.ValidString(p):
		return invalidf("path %q is not valid UTF-8", p)
	}
	for i, r := range p {
		if unicode.IsControl(r) { // C0, DEL and C1
			return invalidf("path %q holds the control character U+%04X at byte %d", p, r, i)
		}
	}
	if path.Clean(p) != p {
		return invalidf("path %q is not clean: no '.' or '..' elements, no '//', no trailing '/' (it would be %q)", p, path.Clean(p))
	}
	for _, el := range strings.Split(p[1:], "/") {
		if len(el) > MaxElementBytes {
			return invalidf("path element %.20q... is %d bytes long; at most %d are allowed", el, len(el), MaxElementBytes)
		}
	}
	return nil
}

// within reports whether p is dir or lies under it.
func within(p, dir string) (rel string, ok bool) {
	if dir == "/" {
		return strings.TrimPrefix(p, "/"), true
	}
	if p == dir {
		return "", true
	}
	if strings.HasPrefix(p, dir+"/") {
		return p[len(dir)+1:], true
	}
	return "", false
}

// layout is where an allocation's directories appear inside its sandbox:
// each mount maps a directory of the sandbox to the path of the
// allocation file system that shows the same files.
type layout struct {
	mounts []mount
}

type mount struct {
	inSandbox string // e.g. "/local"
	inAlloc   string // e.g. "/sandbox/local"
}

// layoutFrom reads the layout from the task's NOMAD_ALLOC_DIR and
// NOMAD_TASK_DIR. Drivers that isolate the task (exec's chroot, docker's
// container) show the task's local and secrets directories and the
// shared alloc directory at /local, /secrets and /alloc; drivers that do
// not (raw_exec, and the test server's exec) show the host's paths,
// under which the whole allocation directory lies.
func layoutFrom(allocDir, taskLocal, task string) layout {
	taskDir := "/" + task
	if taskLocal == "/local" {
		return layout{mounts: []mount{
			{inSandbox: "/local", inAlloc: taskDir + "/local"},
			{inSandbox: "/secrets", inAlloc: taskDir + "/secrets"},
			{inSandbox: allocDirOr(allocDir, "/alloc"), inAlloc: "/alloc"},
		}}
	}
	if !path.IsAbs(allocDir) || !path.IsAbs(taskLocal) {
		return layout{}
	}
	root := path.Dir(allocDir)
	// The task's directory must be root/<task>, or this is not the
	// layout Nomad makes and nothing is read through the file system.
	if path.Dir(taskLocal) != path.Join(root, task) || path.Base(allocDir) != "alloc" {
		return layout{}
	}
	return layout{mounts: []mount{{inSandbox: root, inAlloc: "/"}}}
}

func allocDirOr(dir, fallback string) string {
	if dir == "" {
		return fallback
	}
	return dir
}

// fsPath is where p appears in the allocation file system, if it does.
// A task's secrets and private directories are left to exec: Nomad's
// stat answers for them, but its cat refuses their files with 200 and an
// error text ("Reading secret file prohibited") that must never pass for
// their content.
func (l layout) fsPath(p string) (string, bool) {
	for _, m := range l.mounts {
		if rel, ok := within(p, m.inSandbox); ok {
			fp := path.Join(m.inAlloc, rel)
			parts := strings.SplitN(strings.TrimPrefix(fp, "/"), "/", 3)
			if len(parts) >= 2 && parts[0] != "alloc" && (parts[1] == "secrets" || parts[1] == "private") {
				return "", false
			}
			return fp, true
		}
	}
	return "", false
}
