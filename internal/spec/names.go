package spec

import (
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/runenames"
)

// NonASCII names each character of s outside printable ASCII, with its
// column: "U+0435 CYRILLIC SMALL LETTER IE at column 2". A look-alike from
// another script is invisible in a message that only quotes the text.
func NonASCII(s string) string {
	var parts []string
	col := 0
	for _, r := range s {
		col++
		if r < unicode.MaxASCII && unicode.IsPrint(r) {
			continue
		}
		name := runenames.Name(r)
		if name == "" {
			name = "an unnamed character"
		}
		parts = append(parts, fmt.Sprintf("U+%04X %s at column %d", r, name, col))
	}
	return strings.Join(parts, ", ")
}
