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
		err := filterTar(body, pw, &res)
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
// that would land outside the directory it is extracted in.
func filterTar(r io.Reader, w io.Writer, res *TarResult) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
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
		if err := checkTarEntry(h); err != nil {
			return err
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		n, err := io.Copy(tw, tr)
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				return err
			}
			return fmt.Errorf("copy %s: %w", h.Name, err)
		}
		if h.Typeflag == tar.TypeReg {
			res.Files++
			res.Size += n
		}
	}
}

func checkTarEntry(h *tar.Header) error {
	name := h.Name
	if strings.IndexByte(name, 0) >= 0 || name == "" {
		return invalidf("archive entry %q has no usable name", name)
	}
	clean := path.Clean(strings.TrimSuffix(name, "/"))
	if path.IsAbs(name) || clean == ".." || strings.HasPrefix(clean, "../") {
		return invalidf("archive entry %q would land outside the directory", name)
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeDir:
	case tar.TypeSymlink, tar.TypeLink:
		target := h.Linkname
		if h.Typeflag == tar.TypeSymlink {
			target = path.Join(path.Dir(clean), h.Linkname)
		}
		if path.IsAbs(h.Linkname) || target == ".." || strings.HasPrefix(path.Clean(target), "../") {
			return invalidf("archive entry %q links to %q, outside the directory", name, h.Linkname)
		}
	default:
		return invalidf("archive entry %q is of a kind the controller does not extract (type %q): only files, directories and links", name, h.Typeflag)
	}
	return nil
}
