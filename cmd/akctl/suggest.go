package main

import (
	"fmt"
	"strings"

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
		if d := editDistance(typed, n); d < bestD {
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

// editDistance is the Levenshtein distance between a and b, by runes.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
