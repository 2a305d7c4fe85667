// Package sandboxio owns the work done inside a running sandbox: running
// commands, reading, writing and removing files, and reading the task's
// output, addressed by sandbox rather than by Nomad allocation.
//
// Everything goes through Nomad's client API (the allocation exec
// session, the allocation file system, the task logs), never through a
// shell string: a command is an argv, an environment is given to the
// `env` program as arguments, and the few file operations that need a
// shell run fixed scripts that take every path, mode and size as
// positional arguments ("$1") and every file's content on standard input.
// Nothing a caller sends is ever parsed by a shell.
//
// Files are read through the allocation file system when the path lies in
// the task's directories (the task's local and secrets directories and the
// shared alloc directory, wherever the driver shows them), and through an
// exec session otherwise: a container's own file system is not in the
// allocation directory. Nomad answers a missing file there with 200 and an
// error text; this package never returns such a text as content.
//
// Each operation holds a session slot, per sandbox and overall, and each
// exec and file operation is logged once (what, where, outcome and who,
// never the data).
package sandboxio
