package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// Error codes. Each is answered with one HTTP status; 410 has two, which
// ask the client for the same thing: list again and watch from the list.
const (
	CodeInvalid          = "invalid"            // 400
	CodeUnauthorized     = "unauthorized"       // 401
	CodeNotFound         = "not_found"          // 404
	CodeMethodNotAllowed = "method_not_allowed" // 405
	CodeConflict         = "conflict"           // 409
	CodeCompacted        = "compacted"          // 410
	CodeUnknownRevision  = "unknown_revision"   // 410: since is not a revision of the store serving the watch
	CodeTooLarge         = "too_large"          // 413
	CodeRefused          = "refused"            // 422
	CodeInternal         = "internal"           // 500
	CodeBadGateway       = "bad_gateway"        // 502: the leader could not be reached
	CodeNotImplemented   = "not_implemented"    // 501
	CodeNotReady         = "not_ready"          // 503
)

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong. Details holds strings or objects
// (ObjectProblems for invalid and refused objects).
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Details []any  `json:"details,omitempty"`
}

// ObjectProblems lists what is wrong with one object of a request.
type ObjectProblems struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Index is the object's position in the request's objects list.
	Index int `json:"index"`
	// Source is "file:line" of the declaration, when the client sent one.
	Source   string   `json:"source,omitempty"`
	Problems []string `json:"problems"`
}

// apiError is an error that carries its HTTP answer.
type apiError struct {
	status  int
	code    string
	message string
	details []any
	// cause is logged for internal errors, never sent.
	cause error
	// retryAfter, when positive, is sent as Retry-After in seconds.
	retryAfter int
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%s: %v", e.message, e.cause)
	}
	return e.message
}

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func (e *apiError) with(details ...any) *apiError {
	e.details = append(e.details, details...)
	return e
}

// retry marks a passing refusal: the client should retry in a second,
// when another instance may lead or this one may know the leader.
func (e *apiError) retry() *apiError {
	e.retryAfter = 1
	return e
}

// storeError maps a store failure to its answer.
func storeError(err error) *apiError {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusNotFound, CodeNotFound, "The sandbox does not exist.")
	case errors.Is(err, store.ErrNameTaken):
		return errorf(http.StatusConflict, CodeConflict,
			"Pools and sandboxes share one set of names per namespace, and this name is taken.").with(err.Error())
	case errors.Is(err, store.ErrConflict):
		return errorf(http.StatusConflict, CodeConflict,
			"The store changed since it was read: read it again and retry, or drop expectedRevision and expectedResourceVersion to apply regardless.").
			with(err.Error())
	case errors.Is(err, store.ErrCompacted):
		return errorf(http.StatusGone, CodeCompacted,
			"The change feed no longer holds that revision: list the sandboxes again and watch from the list's revision.").
			with(err.Error())
	case errors.Is(err, store.ErrFutureRevision):
		return errorf(http.StatusGone, CodeUnknownRevision,
			"This store has not reached that revision, so it was read from another store (another instance's, or this one's before a restore): list the sandboxes again and watch from the list's revision.").
			with(err.Error())
	case errors.Is(err, ErrNotLeader):
		e := errorf(http.StatusServiceUnavailable, CodeNotReady,
			"This instance stopped being the leader during the request; retry, and the request will go to the new leader.")
		e.cause = err
		return e.retry()
	case errors.Is(err, store.ErrClosed):
		return errorf(http.StatusServiceUnavailable, CodeNotReady, "The controller is shutting down.")
	case errors.Is(err, ErrUnavailable):
		e := errorf(http.StatusServiceUnavailable, CodeNotReady, "%s", err.Error())
		return e.retry()
	}
	return &apiError{status: http.StatusInternalServerError, code: CodeInternal,
		message: "The controller failed to complete the request.", cause: err}
}

// decodeError maps a failure to read a JSON request body to its answer.
func decodeError(err error) *apiError {
	var tooLarge *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooLarge):
		return errorf(http.StatusRequestEntityTooLarge, CodeTooLarge,
			"The request body is larger than the limit of %d bytes.", tooLarge.Limit)
	case errors.As(err, &syntax):
		return errorf(http.StatusBadRequest, CodeInvalid, "The request body is not valid JSON at byte %d.", syntax.Offset).with(err.Error())
	case errors.As(err, &typ):
		return errorf(http.StatusBadRequest, CodeInvalid, "The request body field %q has the wrong type: want %s, got %s.",
			typ.Field, typ.Type, typ.Value)
	}
	// encoding/json has no type for unknown fields; its message is the
	// only place the field's name is found.
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return errorf(http.StatusBadRequest, CodeInvalid, "The request body has the unknown field %s.", field).
			with(map[string]string{"field": strings.Trim(field, `"`)})
	}
	return errorf(http.StatusBadRequest, CodeInvalid, "The request body could not be read as JSON.").with(err.Error())
}
