package nomadtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Streaming a file, GET /v1/client/fs/stream/:alloc, and a task's logs,
// GET /v1/client/fs/logs/:alloc?task=&type=stdout|stderr, as the agent's
// client streams them (client/fs_endpoint.go): frames
//
//	{"Data":"<base64>","File":"alloc/logs/sandbox.stdout.0","Offset":13}
//
// written back to back with no separator (lifecycle/fs 11, 16), Offset
// the position in the file after the frame's data, a FileEvent "file
// truncated" or "file deleted" when that happens to a followed file, and
// `{}` every second while a followed file has nothing new. With
// plain=true the logs are the bare bytes and the heartbeats are empty
// (lifecycle/fs 10, 12). A followed file is polled, as the agent's
// polling watcher does, and the response goes on until the client leaves
// or the server closes.

const (
	// streamFrameSize is the most data one frame carries.
	streamFrameSize = 64 * 1024
	// streamHeartbeat is the agent's streamHeartbeatRate.
	streamHeartbeat = time.Second
	// streamPoll is how often a followed file is looked at, the period
	// of the agent's polling file watcher.
	streamPoll = 250 * time.Millisecond
	// File events, in the agent's words.
	eventTruncated = "file truncated"
	eventDeleted   = "file deleted"
)

// streamFrame is the agent's StreamFrame, its fields in the order its
// encoder writes them.
type streamFrame struct {
	Data      []byte `json:",omitempty"`
	File      string `json:",omitempty"`
	FileEvent string `json:",omitempty"`
	Offset    int64  `json:",omitempty"`
}

// frameWriter writes frames, or their bare data in plain mode, flushing
// each so that a follower sees it at once. Headers go with the first
// write, contentType with them unless it is ""; until then the handler
// may still answer an error.
type frameWriter struct {
	w           http.ResponseWriter
	rc          *http.ResponseController
	plain       bool
	contentType string
	started     bool
}

func newFrameWriter(w http.ResponseWriter, plain bool, contentType string) *frameWriter {
	return &frameWriter{w: w, rc: http.NewResponseController(w), plain: plain, contentType: contentType}
}

func (f *frameWriter) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if !f.started {
		if f.contentType != "" {
			f.w.Header().Set("Content-Type", f.contentType)
		}
		f.started = true
	}
	if _, err := f.w.Write(b); err != nil {
		return err
	}
	if err := f.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

func (f *frameWriter) frame(fr streamFrame) error {
	if f.plain {
		return f.write(fr.Data)
	}
	b, err := json.Marshal(fr)
	if err != nil {
		return err
	}
	return f.write(b)
}

func (f *frameWriter) heartbeat() error {
	if f.plain {
		return nil
	}
	return f.write([]byte("{}"))
}

// streamCtx ends with the request or with the server.
func (s *Server) streamCtx(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	go func() {
		select {
		case <-s.shutdown:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// fileFollow says when streaming a file stops at its end: at once
// (untilEOF), or once next reports that a later file exists, or never.
type fileFollow struct {
	untilEOF bool
	next     func() bool
}

// streamFile streams the file at full from offset, as name, the agent's
// streamFile. limit bounds the bytes sent when above 0.
func streamFile(ctx context.Context, out *frameWriter, full, name string, offset, limit int64, follow fileFollow) error {
	f, err := os.Open(full)
	if err != nil {
		return err
	}
	defer func() { f.Close() }()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fmt.Errorf("can't seek to offset %d: %w", offset, err)
	}
	heartbeat := time.NewTicker(streamHeartbeat)
	defer heartbeat.Stop()
	var poll *time.Ticker
	defer func() {
		if poll != nil {
			poll.Stop()
		}
	}()
	buf := make([]byte, streamFrameSize)
	event := ""
	lastRead := false
	for {
		want := int64(len(buf))
		if limit > 0 {
			want = min(want, limit)
		}
		n, rerr := f.Read(buf[:want])
		offset += int64(n)
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return rerr
		}
		if n > 0 || event != "" {
			if err := out.frame(streamFrame{Data: buf[:n], File: name, FileEvent: event, Offset: offset}); err != nil {
				return nil // the client left
			}
			event = ""
		}
		if limit > 0 {
			if limit -= int64(n); limit == 0 {
				return nil
			}
		}
		if rerr == nil {
			continue
		}
		if follow.untilEOF || lastRead {
			return nil
		}
		if poll == nil {
			poll = time.NewTicker(streamPoll)
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-heartbeat.C:
				if err := out.heartbeat(); err != nil {
					return nil
				}
			case <-poll.C:
				fi, err := os.Stat(full)
				switch {
				case err != nil:
					_ = out.frame(streamFrame{File: name, FileEvent: eventDeleted, Offset: offset})
					return nil
				case fi.Size() < offset:
					f.Close()
					if f, err = os.Open(full); err != nil {
						return err
					}
					offset, event = 0, eventTruncated
					break wait
				case fi.Size() > offset:
					break wait
				case follow.next != nil && follow.next():
					// A later file exists: read what is left once more.
					lastRead = true
					break wait
				}
			}
		}
	}
}

func (s *Server) handleFSStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	path := q.Get("path")
	if path == "" {
		writeText(w, http.StatusBadRequest, "must provide a file name")
		return
	}
	follow := true
	if v := q.Get("follow"); v != "" {
		var err error
		if follow, err = strconv.ParseBool(v); err != nil {
			writeText(w, http.StatusInternalServerError, fmt.Sprintf("failed to parse follow field to boolean: %v", err))
			return
		}
	}
	var offset int64
	if v := q.Get("offset"); v != "" {
		var err error
		if offset, err = strconv.ParseInt(v, 10, 64); err != nil {
			writeText(w, http.StatusInternalServerError, fmt.Sprintf("error parsing offset: %v", err))
			return
		}
	}
	origin, ok := parseOrigin(q.Get("origin"))
	if !ok {
		writeText(w, http.StatusBadRequest, "origin must be start or end")
		return
	}
	_, dir, ref := s.fsTarget(r, readFS)
	if ref != nil {
		writeText(w, ref.status, ref.msg)
		return
	}
	info, full, err := stat(dir, path)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error())
		return
	}
	if info.IsDir {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("file %q is a directory", path))
		return
	}
	if origin == "end" {
		offset = max(info.Size-offset, 0)
	}
	if err := secretPath(dir, full, path); err != nil {
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	ctx, cancel := s.streamCtx(r)
	defer cancel()
	// Go's sniffing gives the agent's stream this type (lifecycle/fs 16).
	out := newFrameWriter(w, false, "text/plain; charset=utf-8")
	if err := streamFile(ctx, out, full, path, offset, 0, fileFollow{untilEOF: !follow}); err != nil && !out.started {
		writeText(w, http.StatusInternalServerError, err.Error())
	}
}

func parseOrigin(o string) (string, bool) {
	switch o {
	case "start", "end":
		return o, true
	case "":
		return "start", true
	}
	return "", false
}

func (s *Server) handleFSLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	task := q.Get("task")
	if task == "" {
		writeText(w, http.StatusBadRequest, "must provide task name")
		return
	}
	var follow, plain bool
	for _, p := range []struct {
		name string
		into *bool
	}{{"follow", &follow}, {"plain", &plain}} {
		if v := q.Get(p.name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				writeText(w, http.StatusBadRequest, fmt.Sprintf("failed to parse %s field to boolean: %v", p.name, err))
				return
			}
			*p.into = b
		}
	}
	typ := q.Get("type")
	if typ != "stdout" && typ != "stderr" {
		writeText(w, http.StatusBadRequest, "must provide log type (stdout/stderr)")
		return
	}
	var offset int64
	if v := q.Get("offset"); v != "" {
		var err error
		if offset, err = strconv.ParseInt(v, 10, 64); err != nil {
			writeText(w, http.StatusBadRequest, fmt.Sprintf("error parsing offset: %v", err))
			return
		}
	}
	origin, ok := parseOrigin(q.Get("origin"))
	if !ok {
		writeText(w, http.StatusBadRequest, "origin must be start or end")
		return
	}
	ca, dir, ref := s.fsTarget(r, readLogs)
	if ref != nil {
		writeText(w, ref.status, ref.msg)
		return
	}
	t := ca.tasks[task]
	if t == nil || t.state == "" {
		writeText(w, http.StatusBadRequest, fmt.Sprintf("unknown task name %q", task))
		return
	}
	if !t.started {
		writeText(w, http.StatusNotFound, fmt.Sprintf("task %q not started yet. No logs available", task))
		return
	}
	// The agent sets the type itself, before anything is streamed, so
	// that nothing is sniffed.
	ct := "application/json"
	if plain {
		ct = "text/plain"
	}
	w.Header().Set("Content-Type", ct)
	ctx, cancel := s.streamCtx(r)
	defer cancel()
	out := newFrameWriter(w, plain, "")
	err := streamLogs(ctx, out, filepath.Join(dir, "alloc", "logs"), task, typ, follow, origin, offset)
	var refusal *fsRefusal
	switch {
	case err == nil || out.started:
	case errors.As(err, &refusal):
		writeText(w, refusal.status, refusal.msg)
	default:
		writeText(w, http.StatusInternalServerError, err.Error())
	}
}

// logEntry is one file of a task's log stream, <task>.<type>.<index>.
type logEntry struct {
	name  string
	index int64
	size  int64
}

// logEntries lists the files of a task's log stream by index.
func logEntries(logDir, task, typ string) ([]logEntry, error) {
	des, err := os.ReadDir(logDir)
	if err != nil {
		return nil, fmt.Errorf("failed to list entries: %v", err)
	}
	prefix := task + "." + typ + "."
	var out []logEntry
	for _, de := range des {
		idx, ok := strings.CutPrefix(de.Name(), prefix)
		if !ok || de.IsDir() {
			continue
		}
		n, err := strconv.ParseInt(idx, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("failed to convert %q to a log index: %v", idx, err)
		}
		fi, err := de.Info()
		if err != nil {
			continue
		}
		out = append(out, logEntry{name: de.Name(), index: n, size: fi.Size()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].index < out[j].index })
	return out, nil
}

// findClosest is the agent's: the log file holding the wanted index and
// offset, where a negative offset counts back from the end and crosses
// into earlier files.
func findClosest(entries []logEntry, wantIdx, wantOffset int64, task, typ string) (logEntry, int64, error) {
	if len(entries) == 0 {
		return logEntry{}, 0, refuse(http.StatusNotFound, fmt.Sprintf("log entry for task %q and log type %q not found", task, typ))
	}
	i := sort.Search(len(entries), func(i int) bool { return entries[i].index >= wantIdx })
	if i == len(entries) {
		i = len(entries) - 1
	}
	offset := wantOffset
	for {
		size := entries[i].size
		switch {
		case offset == 0:
			return entries[i], 0, nil
		case offset < 0:
			if o := size + offset; o >= 0 {
				return entries[i], o, nil
			} else if i == 0 {
				return entries[i], 0, nil
			} else {
				offset = o
				i--
			}
		default:
			if offset <= size {
				return entries[i], offset, nil
			} else if i == len(entries)-1 {
				return entries[i], size, nil
			}
			offset -= size
			i++
		}
	}
}

// streamLogs is the agent's logsImpl: from the file and offset origin
// and offset pick, through the later files, and on into files yet to come
// when following.
func streamLogs(ctx context.Context, out *frameWriter, logDir, task, typ string, follow bool, origin string, offset int64) error {
	nextIdx := int64(0)
	if origin == "end" {
		nextIdx = math.MaxInt64
		offset = -offset
	}
	for {
		entries, err := logEntries(logDir, task, typ)
		if err != nil {
			return err
		}
		maxIndex := int64(math.MaxInt64)
		if !follow {
			last, _, err := findClosest(entries, math.MaxInt64, 0, task, typ)
			if err != nil {
				return err
			}
			maxIndex = last.index
		}
		entry, openOffset, err := findClosest(entries, nextIdx, offset, task, typ)
		if err != nil {
			return err
		}
		ff := fileFollow{}
		switch {
		case !follow && entry.index > maxIndex:
			return nil
		case !follow && entry.index == maxIndex:
			ff.untilEOF = true
		default:
			after := entry.index
			ff.next = func() bool {
				later, err := logEntries(logDir, task, typ)
				return err == nil && len(later) > 0 && later[len(later)-1].index > after
			}
		}
		name := filepath.Join("alloc", "logs", entry.name)
		err = streamFile(ctx, out, filepath.Join(logDir, entry.name), name, openOffset, 0, ff)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return fmt.Errorf("failed to stream %q: %v", name, err)
		}
		if ff.untilEOF {
			return nil
		}
		offset, nextIdx = 0, entry.index+1
	}
}
