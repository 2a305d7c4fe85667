package nomadtest

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/go-bexpr"
	"github.com/hashicorp/nomad/api"
)

// jobListStub is the wire form of one GET /v1/jobs entry (10, 20). It has
// fields api.JobListStub lacks (NodePool, Multiregion); Meta appears only
// with ?meta=true.
type jobListStub struct {
	CreateIndex       uint64
	Datacenters       []string
	ID                string
	JobModifyIndex    uint64
	JobSummary        *api.JobSummary
	Meta              map[string]string `json:",omitempty"`
	ModifyIndex       uint64
	Multiregion       *api.Multiregion
	Name              string
	Namespace         string
	NodePool          string
	ParameterizedJob  bool
	ParentID          string
	Periodic          bool
	Priority          int
	Status            string
	StatusDescription string
	Stop              bool
	SubmitTime        int64
	Type              string
}

func (je *jobEntry) stub(withMeta bool) jobListStub {
	j := je.job
	st := jobListStub{
		CreateIndex:       deref(j.CreateIndex),
		Datacenters:       j.Datacenters,
		ID:                deref(j.ID),
		JobModifyIndex:    deref(j.JobModifyIndex),
		JobSummary:        je.apiSummary(),
		ModifyIndex:       deref(j.ModifyIndex),
		Multiregion:       j.Multiregion,
		Name:              deref(j.Name),
		Namespace:         deref(j.Namespace),
		NodePool:          deref(j.NodePool),
		ParameterizedJob:  j.ParameterizedJob != nil,
		ParentID:          deref(j.ParentID),
		Periodic:          j.Periodic != nil,
		Priority:          deref(j.Priority),
		Status:            deref(j.Status),
		StatusDescription: deref(j.StatusDescription),
		Stop:              deref(j.Stop),
		SubmitTime:        deref(j.SubmitTime),
		Type:              deref(j.Type),
	}
	if withMeta {
		st.Meta = j.Meta
	}
	return st
}

// sortedJobs returns the jobs of one namespace, or of all for "*", sorted by
// namespace then ID (facts 4.2, more/ 422).
func (s *Server) sortedJobs(ns string) []*jobEntry {
	var out []*jobEntry
	for k, je := range s.jobs {
		if ns == "*" || k.ns == ns {
			out = append(out, je)
		}
	}
	slices.SortFunc(out, func(a, b *jobEntry) int {
		ka, kb := jobKey(a.job), jobKey(b.job)
		return cmp.Or(strings.Compare(ka.ns, kb.ns), strings.Compare(ka.id, kb.id))
	})
	return out
}

// listJobs answers GET /v1/jobs. The filter sees the full job, so Meta
// filters work without meta=true (13); its errors are 400 with the
// paginator's wording (12, 18). Pages are cut after filtering and the next
// token is "<namespace>.<jobID>" of the first job of the next page (20-22).
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ns := requestNamespace(r)
	prefix := q.Get("prefix")
	withMeta := q.Get("meta") == "true"
	var eval *bexpr.Evaluator
	if f := q.Get("filter"); f != "" {
		ev, err := bexpr.CreateEvaluator(f)
		if err != nil {
			writeText(w, http.StatusBadRequest, "failed to create result paginator: failed to read filter expression: "+err.Error())
			return
		}
		eval = ev
	}
	perPage, _ := strconv.Atoi(q.Get("per_page"))
	tokNS, tokID, hasToken := parseNextToken(q.Get("next_token"))
	// Listing needs list-jobs, which submit-job and read-job do not give;
	// namespace=* needs it in some namespace, and the list then keeps the
	// jobs of those namespaces only (more/ 309, 318, 352).
	if !s.allowNs(w, r, ns, capListJobs) {
		return
	}
	acl := aclOf(r)

	s.blockingQuery(w, r, func() (queryResult, <-chan struct{}) {
		res := queryResult{index: s.jobListIndex()}
		out := []jobListStub{}
		for _, je := range s.sortedJobs(ns) {
			k := jobKey(je.job)
			if !strings.HasPrefix(k.id, prefix) || !acl.allowNs(k.ns, capListJobs) {
				continue
			}
			if hasToken && cmp.Or(strings.Compare(k.ns, tokNS), strings.Compare(k.id, tokID)) < 0 {
				continue
			}
			if eval != nil {
				ok, err := eval.Evaluate(je.job)
				if err != nil {
					// Like a bad expression, this error carries no index
					// headers (18).
					return queryResult{index: res.index, bare: true, status: http.StatusBadRequest,
						text: "failed to read result page: " + err.Error()}, s.watch.ch("jobs")
				}
				if !ok {
					continue
				}
			}
			if perPage > 0 && len(out) == perPage {
				res.nextToken = k.ns + "." + k.id
				break
			}
			out = append(out, je.stub(withMeta))
		}
		res.body = out
		return res, s.watch.ch("jobs")
	})
}

func parseNextToken(tok string) (ns, id string, ok bool) {
	if tok == "" {
		return "", "", false
	}
	ns, id, found := strings.Cut(tok, ".")
	if !found {
		return "", tok, true
	}
	return ns, id, true
}
