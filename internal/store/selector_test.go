package store_test

import (
	"testing"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

func TestSelectorMatches(t *testing.T) {
	web := map[string]string{"app": "web", "tier": "front", "example.com/owner": "ops"}
	tests := []struct {
		selector string
		labels   map[string]string
		want     bool
	}{
		{"", nil, true},
		{"", web, true},
		{"app=web", web, true},
		{"app==web", web, true},
		{"app=db", web, false},
		{"app=web", nil, false},
		{"app!=db", web, true},
		{"app!=web", web, false},
		{"missing!=x", web, true},
		{"app in (db,web)", web, true},
		{"app in (db)", web, false},
		{"missing in (x)", web, false},
		{"app notin (db)", web, true},
		{"app notin (web,db)", web, false},
		{"missing notin (x)", web, true},
		{"tier", web, true},
		{"missing", web, false},
		{"!missing", web, true},
		{"!tier", web, false},
		{"app=web,tier=front", web, true},
		{"app=web,tier=back", web, false},
		{" app = web , !missing , tier in ( front , back ) ", web, true},
		{"example.com/owner=ops", web, true},
		{"app=", web, false},
		{"app=", map[string]string{"app": ""}, true},
	}
	for _, tt := range tests {
		t.Run(tt.selector, func(t *testing.T) {
			sel, err := store.ParseSelector(tt.selector)
			if err != nil {
				t.Fatalf("ParseSelector: %v", err)
			}
			if got := sel.Matches(tt.labels); got != tt.want {
				t.Errorf("Matches(%v) = %t, want %t", tt.labels, got, tt.want)
			}
		})
	}
}

func TestParseSelectorErrorsNameTheColumn(t *testing.T) {
	tests := []struct {
		selector string
		want     string
	}{
		{"a in (b", `parse selector "a in (b": at column 8: expected "," or ")" to close the set opened at column 6, found end of input`},
		{"a in b", `parse selector "a in b": at column 6: expected "(", found "b"`},
		{"a in ()", `parse selector "a in ()": at column 7: the set opened at column 6 is empty`},
		{"a b", `parse selector "a b": at column 3: expected an operator (=, ==, !=, in, notin), found "b"`},
		{"a=b c", `parse selector "a=b c": at column 5: expected "," or end of input, found "c"`},
		{"a=b,", `parse selector "a=b,": at column 5: expected a label key, found end of input`},
		{"=b", `parse selector "=b": at column 1: expected a label key, found "="`},
		{"!", `parse selector "!": at column 2: expected a label key, found end of input`},
		{"a=(", `parse selector "a=(": at column 3: expected a value, found "("`},
		{"a)", `parse selector "a)": at column 2: expected an operator (=, ==, !=, in, notin), "," or end of input, found ")"`},
		{"-a=b", `parse selector "-a=b": at column 1: invalid label key "-a": a name is at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit`},
		{"Example.com/a=b", `parse selector "Example.com/a=b": at column 1: invalid label key "Example.com/a": the prefix must be a lowercase DNS subdomain`},
		{"a=b-", `parse selector "a=b-": at column 3: invalid label value "b-": a value is at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit`},
	}
	for _, tt := range tests {
		t.Run(tt.selector, func(t *testing.T) {
			_, err := store.ParseSelector(tt.selector)
			if err == nil || err.Error() != tt.want {
				t.Errorf("error = %v\nwant    %s", err, tt.want)
			}
		})
	}
}

func TestSelectorStringIsCanonicalAndParsesBack(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"tier notin (b, a, b), app==web, !gone, has", "app=web,!gone,has,tier notin (a,b)"},
		{"z!=1,a in (y,x)", "a in (x,y),z!=1"},
		{"k=", "k="},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			sel := store.MustParseSelector(tt.in)
			if got := sel.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			if again := store.MustParseSelector(sel.String()).String(); again != tt.want {
				t.Errorf("String() after a round trip = %q, want %q", again, tt.want)
			}
		})
	}
}
