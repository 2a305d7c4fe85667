package store_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

func TestListFiltersByNamespaceAndSelector(t *testing.T) {
	s := openStore(t, store.Options{})
	mustApply(t, s, store.ApplyOptions{},
		sandbox("team", "b", "img:1", labels("app", "web", "tier", "front")),
		sandbox("team", "a", "img:1", labels("app", "db")),
		sandbox("team-2", "c", "img:1", labels("app", "web")),
		sandbox("tea", "d", "img:1", labels("app", "web", "canary", "")),
	)
	tests := []struct {
		namespace string
		selector  string
		want      []string
	}{
		{want: []string{"tea/d", "team-2/c", "team/a", "team/b"}},
		{namespace: "team", want: []string{"team/a", "team/b"}},
		{namespace: "tea", want: []string{"tea/d"}},
		{namespace: "nobody", want: nil},
		{selector: "app=web", want: []string{"tea/d", "team-2/c", "team/b"}},
		{selector: "app!=web", want: []string{"team/a"}},
		{selector: "app in (db, web), tier", want: []string{"team/b"}},
		{selector: "app notin (web)", want: []string{"team/a"}},
		{selector: "!tier", want: []string{"tea/d", "team-2/c", "team/a"}},
		{selector: "canary", want: []string{"tea/d"}},
		{namespace: "team", selector: "app==web", want: []string{"team/b"}},
	}
	for _, tt := range tests {
		t.Run(tt.namespace+"|"+tt.selector, func(t *testing.T) {
			recs, rev, err := s.List(t.Context(), store.ListOptions{
				Namespace: tt.namespace, Selector: store.MustParseSelector(tt.selector),
			})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range recs {
				got = append(got, r.Key())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("keys (-want +got):\n%s", diff)
			}
			if rev != 1 {
				t.Errorf("read at revision %d, want 1", rev)
			}
		})
	}
}
