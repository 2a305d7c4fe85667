package sandboxio

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strings"
)

// ReadTar writes a directory of the sandbox, as a tar stream of its
// content (names relative to it), to w. Nothing is written to w when the
// directory is missing or not one.
func (s *Service) ReadTar(ctx context.Context, t Target, who Caller, dir string, w io.Writer) error {
	if err := CheckPath(dir); err != nil {
		return err
	}
	alloc, err := s.running(ctx, t)
	if err != nil {
		return err
	}
	release, err := s.acquire(t)
	if err != nil {
		return err
	}
	defer release()
	start := s.now()
	cw := &countingWriter{w: w}
	code, stderr, err := s.run(ctx, alloc, script(tarReadScript, dir), nil, cw)
	if err == nil {
		err = scriptError(code, dir, stderr)
	}
	s.auditFile(t, who, start, err, slog.String("op", "read-tar"), slog.String("path", dir), slog.Int64("size", cw.n))
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// TarResult is what an archive written into a sandbox held.
type TarResult struct {
	Files int
	Size  int64
}

// WriteTar extracts a tar stream into a directory of the sandbox. The
// stream passes through the controller entry by entry: a name that is
// absolute or climbs out with "..", or a link pointing outside the
// directory, ends the transfer as invalid (entries before it are
// extracted); ownership is dropped, so that files belong to whoever
// extracts them. mkdir creates the directory and its parents.
func (s *Service) WriteTar(ctx context.Context, t Target, who Caller, dir string, mkdir bool, r io.Reader) (TarResult, error) {
	if err := CheckPath(dir); err != nil {
		return TarResult{}, err
	}
	alloc, err := s.running(ctx, t)
	if err != nil {
		return TarResult{}, err
	}
	release, err := s.acquire(t)
	if err != nil {
		return TarResult{}, err
	}
	defer release()
	start := s.now()
	body := &countingReader{r: r, max: s.maxFile}
	pr, pw := io.Pipe()
	var res TarResult
	filterErr := make(chan error, 1)
	go func() {
		err := filterTar(body, pw, &res, s.maxFile)
		pw.CloseWithError(err)
		filterErr <- err
	}()
	mk := "0"
	if mkdir {
		mk = "1"
	}
	code, stderr, err := s.run(ctx, alloc, script(tarWriteScript, dir, mk), pr, io.Discard)
	pr.CloseWithError(errors.New("the extraction ended"))
	ferr := <-filterErr
	switch {
	case body.err != nil:
		err = body.err
	case ferr != nil && !strings.Contains(ferr.Error(), "the extraction ended"):
		err = ferr
	case err == nil:
		err = scriptError(code, dir, stderr)
	}
	s.auditFile(t, who, start, err, slog.String("op", "write-tar"), slog.String("path", dir),
		slog.Int("files", res.Files), slog.Int64("size", body.n))
	return res, err
}

// filterTar copies a tar stream entry by entry, refusing names and links
// that would land outside the directory it is extracted in, and more
// content than max bytes however the archive encodes it (a sparse entry
// expands: its size, not its bytes in the archive, is what counts).
// Names are written clean; PAX global headers (git archive's) are
// dropped.
func filterTar(r io.Reader, w io.Writer, res *TarResult, max int64) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	links := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return tw.Close()
		}
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				return err
			}
			return invalidf("the archive cannot be read: %v", err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		if h.Typeflag == tar.TypeDir {
			if n, err := walkTarPath(".", h.Name, links); err == nil && n == "." {
				continue // the directory itself ("./", as tar -C dir . makes it)
			}
		}
		name, err := checkTarEntry(h, links)
		if err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg && res.Size+h.Size > max {
			return fmt.Errorf("%w: the archive's files hold more than the %d bytes the controller takes in one write", ErrTooLarge, max)
		}
		h.Name = name
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		h.PAXRecords = nil
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		n, err := io.Copy(tw, tr)
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				return err
			}
			return fmt.Errorf("copy %s: %w", name, err)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			res.Files++
			res.Size += n
			delete(links, name)
		case tar.TypeSymlink:
			links[name] = true
		default:
			delete(links, name)
		}
	}
}

// checkTarEntry returns the clean name of an entry the directory can
// take. No name or link target may start at "/", climb out of the
// directory at any step, or go on through a symlink the archive made
// before: a path is only resolved right by its text when no link stands
// in it.
func checkTarEntry(h *tar.Header, links map[string]bool) (string, error) {
	raw := h.Name
	if strings.IndexByte(raw, 0) >= 0 || strings.IndexByte(h.Linkname, 0) >= 0 {
		return "", invalidf("archive entry %q has a NUL byte in its name or link", raw)
	}
	name, err := walkTarPath(".", raw, links)
	if err != nil || name == "." {
		return "", invalidf("archive entry %q does not name a place inside the directory: %v", raw, orNowhere(err))
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return "", invalidf("archive entry %q is a sparse file, which the controller does not extract", raw)
		}
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeDir:
	case tar.TypeSymlink:
		// Relative to the link's own directory.
		if _, err := walkTarPath(path.Dir(name), h.Linkname, links); err != nil || h.Linkname == "" {
			return "", invalidf("archive entry %q links to %q: %v", raw, h.Linkname, orNowhere(err))
		}
	case tar.TypeLink:
		// Relative to the archive's root.
		target, err := walkTarPath(".", h.Linkname, links)
		if err != nil || target == "." {
			return "", invalidf("archive entry %q links to %q: %v", raw, h.Linkname, orNowhere(err))
		}
	default:
		return "", invalidf("archive entry %q is of a kind the controller does not extract (type %q): only files, directories and links", raw, h.Typeflag)
	}
	return name, nil
}

func orNowhere(err error) error {
	if err == nil {
		return errors.New("nowhere")
	}
	return err
}

// onlyHere reports path elements that stay where they are ("", ".").
func onlyHere(elems []string) bool {
	for _, e := range elems {
		if e != "" && e != "." {
			return false
		}
	}
	return true
}

// walkTarPath resolves rel from the archive directory base one element
// at a time.
func walkTarPath(base, rel string, links map[string]bool) (string, error) {
	if path.IsAbs(rel) {
		return "", errors.New("it is absolute")
	}
	var parts []string
	if base != "." && base != "" {
		parts = strings.Split(base, "/")
	}
	elems := strings.Split(rel, "/")
	for i, e := range elems {
		switch e {
		case "", ".":
			continue
		case "..":
			if len(parts) == 0 {
				return "", errors.New("it climbs out of the directory")
			}
			parts = parts[:len(parts)-1]
		default:
			parts = append(parts, e)
			if p := strings.Join(parts, "/"); links[p] && !onlyHere(elems[i+1:]) {
				return "", fmt.Errorf("it goes through %q, a link the archive made", p)
			}
		}
	}
	if len(parts) == 0 {
		return ".", nil
	}
	return strings.Join(parts, "/"), nil
}
