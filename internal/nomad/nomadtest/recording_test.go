package nomadtest

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// factsDir holds copies of the exchanges recorded against a real Nomad
// 2.0.5 agent, in the recorder's format: request line, optional request
// headers and body, then the `curl -i` response.
const factsDir = "testdata/facts"

// recording is one recorded exchange.
type recording struct {
	method     string
	target     string // path and query
	reqHeaders http.Header
	reqBody    []byte
	status     int
	headers    http.Header
	body       []byte
	// at is when the response was recorded; compressed is curl's
	// --compressed, which asks for gzip and shows the body inflated.
	at         time.Time
	compressed bool
}

// factFile finds a recorded file by its number prefix, e.g. "60" or
// "more/105".
func factFile(t *testing.T, num, ext string) string {
	t.Helper()
	dir, base := filepath.Split(filepath.Join(factsDir, num))
	matches, err := filepath.Glob(filepath.Join(dir, base+"-*"+ext))
	if err != nil || len(matches) == 0 {
		t.Fatalf("no recorded file %s*%s: %v", num, ext, err)
	}
	return matches[0]
}

// loadRecording parses the .http file numbered num.
func loadRecording(t *testing.T, num string) recording {
	t.Helper()
	return parseRecording(t, factFile(t, num, ".http"))
}

// parseRecording parses one .http file.
func parseRecording(t *testing.T, path string) recording {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	text := strings.ReplaceAll(string(raw), "\r\n", "\n")
	rec := recording{reqHeaders: http.Header{}, headers: http.Header{}}
	head, resp, ok := strings.Cut(text, "### RESPONSE")
	if !ok {
		t.Fatalf("%s: no response", path)
	}
	lines := strings.Split(head, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.HasPrefix(l, "### REQUEST: "):
			f := strings.Fields(strings.TrimPrefix(l, "### REQUEST: "))
			rec.method = f[0]
			u, err := url.Parse(f[1])
			if err != nil {
				t.Fatalf("%s: parse url: %v", path, err)
			}
			rec.target = u.RequestURI()
		case strings.HasPrefix(l, "### curl options:"):
			rec.compressed = strings.Contains(l, "--compressed")
		case strings.HasPrefix(l, "### REQUEST HEADER: "):
			k, v, _ := strings.Cut(strings.TrimPrefix(l, "### REQUEST HEADER: "), ":")
			rec.reqHeaders.Set(strings.TrimSpace(k), strings.TrimSpace(v))
		case strings.HasPrefix(l, "### REQUEST BODY"):
			// The body file is the source of truth: long bodies are cut in
			// the recording.
			if _, name, ok := strings.Cut(l, "("); ok {
				name = strings.TrimSuffix(strings.TrimSpace(name), "):")
				name = strings.TrimSuffix(name, ")")
				dir := filepath.Dir(path)
				if strings.HasPrefix(name, "jobs/") {
					dir = factsDir
				}
				if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
					rec.reqBody = b
					break
				}
			}
			var body []string
			for i++; i < len(lines) && !strings.HasPrefix(lines[i], "###"); i++ {
				body = append(body, lines[i])
			}
			i--
			rec.reqBody = []byte(strings.TrimSpace(strings.Join(body, "\n")))
		}
	}
	var respLine string
	respLine, resp, _ = strings.Cut(resp, "\n")
	if _, at, ok := strings.Cut(respLine, "recorded "); ok {
		rec.at, _ = time.Parse(time.RFC3339Nano, strings.TrimSuffix(at, ":"))
	}
	resp, _, _ = strings.Cut(resp, "\n### time_total")
	r := bufio.NewReader(strings.NewReader(resp))
	var rest bytes.Buffer
	inHeaders := false
	for {
		l, err := r.ReadString('\n')
		line := strings.TrimRight(l, "\n")
		switch {
		case strings.HasPrefix(line, "HTTP/"):
			f := strings.Fields(line)
			rec.status, _ = strconv.Atoi(f[1])
			inHeaders = rec.status != http.StatusContinue
		case inHeaders && line == "":
			inHeaders = false
			_, _ = rest.ReadFrom(r)
			err = nil
		case inHeaders:
			k, v, _ := strings.Cut(line, ":")
			rec.headers.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		if err != nil || (!inHeaders && rest.Len() > 0) {
			break
		}
		if !inHeaders && rec.status != 0 && rec.status != http.StatusContinue && line == "" {
			break
		}
	}
	body := rest.Bytes()
	// A --compressed body is shown inflated, longer than its length.
	if n, err := strconv.Atoi(rec.headers.Get("Content-Length")); err == nil && n <= len(body) && !rec.compressed {
		body = body[:n]
	} else {
		body = bytes.TrimSuffix(body, []byte("\n"))
	}
	rec.body = body
	return rec
}

// streamCapture is a recorded event stream: its headers and raw lines.
type streamCapture struct {
	target  string
	status  int
	headers http.Header
	lines   []string
}

func loadStream(t *testing.T, num string) streamCapture {
	t.Helper()
	path := factFile(t, num, ".ndjson.ts")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	sc := streamCapture{headers: http.Header{}}
	inHeaders := false
	for _, l := range strings.Split(strings.ReplaceAll(string(raw), "\r\n", "\n"), "\n") {
		if rest, ok := strings.CutPrefix(l, "### REQUEST: GET "); ok {
			u, err := url.Parse(strings.Fields(rest)[0])
			if err != nil {
				t.Fatalf("%s: parse url: %v", path, err)
			}
			sc.target = u.RequestURI()
			continue
		}
		if strings.HasPrefix(l, "###") {
			continue
		}
		_, line, ok := strings.Cut(l, " ")
		if !ok && l != "" && !strings.HasPrefix(l, "#") {
			line = ""
			ok = true
		}
		if !ok {
			continue
		}
		// curl -v marks response headers with "<" and adds request lines
		// (">"), notes ("*"), data sizes ("{ [") and the exit code (more/
		// 321, 322, 324).
		if h, isHeader := strings.CutPrefix(line, "< "); isHeader || line == "<" {
			line = h
		} else if strings.HasPrefix(line, "> ") || line == ">" || strings.HasPrefix(line, "* ") ||
			strings.HasPrefix(line, "{ [") || strings.HasPrefix(line, "###") {
			continue
		}
		switch {
		case strings.HasPrefix(line, "HTTP/"):
			sc.status, _ = strconv.Atoi(strings.Fields(line)[1])
			inHeaders = true
		case inHeaders && line == "":
			inHeaders = false
		case inHeaders:
			k, v, _ := strings.Cut(line, ":")
			sc.headers.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		case line != "":
			sc.lines = append(sc.lines, line)
		}
	}
	return sc
}

func TestLoadRecording(t *testing.T) {
	rec := loadRecording(t, "60")
	if rec.method != "GET" || rec.target != "/v1/job/does-not-exist" || rec.status != 404 || string(rec.body) != "job not found" {
		t.Errorf("60 parsed as %+v", rec)
	}
	rec = loadRecording(t, "more/105")
	if rec.status != 409 || rec.headers.Get("X-Nomad-Index") != "13" || len(rec.reqBody) == 0 || rec.body[0] != '{' {
		t.Errorf("more/105 parsed as %+v", rec)
	}
	sc := loadStream(t, "46")
	if sc.status != 200 || sc.headers.Get("Connection") != "close" || len(sc.lines) != 1 || sc.lines[0] != "{}" {
		t.Errorf("46 parsed as %+v", sc)
	}
}
