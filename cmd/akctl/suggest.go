package main

import (
	"fmt"
	"strings"

	"github.com/agext/levenshtein"

	"github.com/agentkernel/agentkernel-controller/internal/spec"
)

// suggestCommand names the command closest to what was typed (at most two
// edits away), and every character of it that is not ASCII: a look-alike
// from another script ("gеt" with a Cyrillic е) is the usual cause, and
// invisible otherwise.
func suggestCommand(typed string, names []string) string {
	var b strings.Builder
	best, bestD := "", 3
	for _, n := range names {
		if d := levenshtein.Distance(typed, n, nil); d < bestD {
			best, bestD = n, d
		}
	}
	if best != "" {
		fmt.Fprintf(&b, "Did you mean %q?", best)
	}
	if odd := spec.NonASCII(typed); odd != "" {
		if b.Len() > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%q has %s.", typed, odd)
	}
	return b.String()
}
