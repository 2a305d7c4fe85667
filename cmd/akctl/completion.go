package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
)

const completionUsage = `Usage: akctl completion bash|zsh

Prints a shell completion script for akctl's commands and flags.

Examples:
  source <(akctl completion bash)       # in ~/.bashrc
  source <(akctl completion zsh)        # in ~/.zshrc, after compinit

Exit codes: 0 success, 2 usage error.
`

func runCompletion(_ context.Context, e *env, args []string) error {
	fs := newFlagSet("completion")
	shells, err := parseArgs(fs, args, completionUsage, e)
	if err != nil {
		return err
	}
	if len(shells) != 1 {
		return usagef("name one shell: bash or zsh")
	}
	switch shells[0] {
	case "bash":
		writeBash(e.stdout)
	case "zsh":
		writeZsh(e.stdout)
	default:
		return usagef("unknown shell %q: use bash or zsh", shells[0])
	}
	return nil
}

// commandFlags lists a command's flags as its own -h prints them, so that
// the scripts never disagree with the commands.
func commandFlags(c command) []string {
	var out bytes.Buffer
	_ = c.run(context.Background(), &env{stdin: strings.NewReader(""), stdout: &out, stderr: io.Discard}, []string{"-h"})
	var flags []string
	inFlags := false
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		line := sc.Text()
		if line == "Flags:" {
			inFlags = true
			continue
		}
		if inFlags && strings.HasPrefix(line, "  -") {
			name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
			if len(name) > 2 {
				name = "-" + name // --long, but -f, -l, -n, -A, -o, -v
			}
			flags = append(flags, name)
		}
	}
	return flags
}

var globalFlagNames = []string{"--addr", "--token", "--token-file", "--timeout", "--request-timeout", "-v"}

// valueFlags take a value, so the word after one is not a command.
const valueFlags = "--addr|--token|--token-file|--timeout|--request-timeout|-addr|-token|-token-file|-timeout|-request-timeout"

func writeBash(w io.Writer) {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	fmt.Fprintf(w, `# bash completion for akctl
_akctl() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
  local cmd="" i skip=0 flags=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    local w=${COMP_WORDS[i]}
    if ((skip)); then skip=0; continue; fi
    case "$w" in
      %s) skip=1 ;;
      -*) ;;
      *) cmd=$w; break ;;
    esac
  done
  if [[ -z $cmd ]]; then
    COMPREPLY=($(compgen -W "%s %s help" -- "$cur"))
    return
  fi
  case "$cmd" in
`, valueFlags, strings.Join(globalFlagNames, " "), strings.Join(names, " "))
	for _, c := range commands() {
		fmt.Fprintf(w, "    %s) flags=%q ;;\n", c.name, strings.Join(commandFlags(c), " "))
	}
	fmt.Fprintf(w, `  esac
  case "$prev" in
    -f|--f|-var-file|--var-file|--token-file|-token-file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    -o|--o) COMPREPLY=($(compgen -W "text table wide json" -- "$cur")); return ;;
    --for|-for) COMPREPLY=($(compgen -W "ready deleted" -- "$cur")); return ;;
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  elif [[ $cmd == completion ]]; then
    COMPREPLY=($(compgen -W "bash zsh" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -o filenames -F _akctl akctl
`)
}

func writeZsh(w io.Writer) {
	fmt.Fprintf(w, `#compdef akctl
# zsh completion for akctl
_akctl() {
  local -a cmds flags
  cmds=(
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "    %q\n", c.name+":"+c.summary)
	}
	fmt.Fprintf(w, `  )
  local cmd="" i skip=0
  for ((i = 2; i < CURRENT; i++)); do
    if ((skip)); then skip=0; continue; fi
    case "${words[i]}" in
      %s) skip=1 ;;
      -*) ;;
      *) cmd=${words[i]}; break ;;
    esac
  done
  if [[ -z $cmd ]]; then
    if [[ $PREFIX == -* ]]; then
      compadd -- %s
    else
      _describe 'command' cmds
    fi
    return
  fi
  case $cmd in
`, valueFlags, strings.Join(globalFlagNames, " "))
	for _, c := range commands() {
		fmt.Fprintf(w, "    %s) flags=(%s) ;;\n", c.name, strings.Join(commandFlags(c), " "))
	}
	fmt.Fprint(w, `  esac
  if [[ $PREFIX == -* ]]; then
    compadd -- $flags
  elif [[ $cmd == completion ]]; then
    compadd -- bash zsh
  else
    _files
  fi
}
compdef _akctl akctl
`)
}
