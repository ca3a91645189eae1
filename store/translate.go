package store

import (
	"context"
	"errors"
	"io"

	"github.com/regfs/regfs/driver"
)

// translated wraps the driver the store uses so that every error it
// returns is the store's own: a *StorageError whose Kind says what the
// driver's typed error said, and which keeps the driver's error as its
// cause. Nothing above the store needs the driver package to read an
// error. Errors a WalkFn returns, and io.EOF from a stream, pass through
// unchanged. Every call that changes storage passes beginWrite first (see
// GuardWrites).
type translated struct {
	driver.StorageDriver
}

// storageErr turns a driver error into a *StorageError; nil stays nil and
// an error that already is one is returned as is.
func storageErr(op, p string, err error) error {
	if err == nil {
		return nil
	}
	var se *StorageError
	if errors.As(err, &se) {
		return err
	}
	e := &StorageError{Op: op, Path: p, Err: err}
	var (
		notFound    driver.PathNotFoundError
		badPath     driver.InvalidPathError
		badOffset   driver.InvalidOffsetError
		unsupported driver.UnsupportedMethodError
	)
	switch {
	case errors.As(err, &notFound):
		e.Kind = ErrNotFound
	case errors.As(err, &badPath):
		e.Kind = ErrInvalidPath
	case errors.As(err, &badOffset):
		e.Kind = ErrInvalidOffset
	case errors.As(err, &unsupported):
		e.Kind = ErrUnsupported
	}
	return e
}

func (t translated) GetContent(ctx context.Context, p string) ([]byte, error) {
	b, err := t.StorageDriver.GetContent(ctx, p)
	return b, storageErr("GetContent", p, err)
}

func (t translated) PutContent(ctx context.Context, p string, content []byte) error {
	if err := beginWrite(ctx); err != nil {
		return storageErr("PutContent", p, err)
	}
	return storageErr("PutContent", p, t.StorageDriver.PutContent(ctx, p, content))
}

func (t translated) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	rc, err := t.StorageDriver.Reader(ctx, p, offset)
	if err != nil {
		return nil, storageErr("Reader", p, err)
	}
	return translatedReader{rc: rc, path: p}, nil
}

func (t translated) Writer(ctx context.Context, p string, append bool) (driver.FileWriter, error) {
	if err := beginWrite(ctx); err != nil {
		return nil, storageErr("Writer", p, err)
	}
	w, err := t.StorageDriver.Writer(ctx, p, append)
	if err != nil {
		return nil, storageErr("Writer", p, err)
	}
	return translatedWriter{w: w, path: p}, nil
}

// StageWriter forwards driver.Stager; a driver that does not stage gives
// a *StorageError of kind ErrUnsupported.
func (t translated) StageWriter(ctx context.Context, dst, state string, append bool) (driver.FileWriter, error) {
	st, ok := t.StorageDriver.(driver.Stager)
	if !ok {
		return nil, storageErr("StageWriter", state, driver.UnsupportedMethodError{Method: "StageWriter", Driver: t.Name()})
	}
	if err := beginWrite(ctx); err != nil {
		return nil, storageErr("StageWriter", state, err)
	}
	w, err := st.StageWriter(ctx, dst, state, append)
	if err != nil {
		return nil, storageErr("StageWriter", state, err)
	}
	return translatedWriter{w: w, path: state}, nil
}

func (t translated) Stat(ctx context.Context, p string) (driver.FileInfo, error) {
	fi, err := t.StorageDriver.Stat(ctx, p)
	return fi, storageErr("Stat", p, err)
}

func (t translated) List(ctx context.Context, p string) ([]string, error) {
	l, err := t.StorageDriver.List(ctx, p)
	return l, storageErr("List", p, err)
}

func (t translated) Move(ctx context.Context, src, dst string) error {
	if err := beginWrite(ctx); err != nil {
		return storageErr("Move", src, err)
	}
	return storageErr("Move", src, t.StorageDriver.Move(ctx, src, dst))
}

func (t translated) Delete(ctx context.Context, p string) error {
	if err := beginWrite(ctx); err != nil {
		return storageErr("Delete", p, err)
	}
	return storageErr("Delete", p, t.StorageDriver.Delete(ctx, p))
}

// Walk translates the driver's own failures; what fn returned comes back
// as it was.
func (t translated) Walk(ctx context.Context, p string, fn driver.WalkFn) error {
	var fnErr error
	err := t.StorageDriver.Walk(ctx, p, func(fi driver.FileInfo) error {
		err := fn(fi)
		if err != nil && err != driver.ErrSkipDir {
			fnErr = err
		}
		return err
	})
	if err == nil || fnErr != nil && errors.Is(err, fnErr) {
		return err
	}
	return storageErr("Walk", p, err)
}

type translatedReader struct {
	rc   io.ReadCloser
	path string
}

func (r translatedReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if err == io.EOF {
		return n, err
	}
	return n, storageErr("Read", r.path, err)
}

func (r translatedReader) Close() error { return storageErr("Close", r.path, r.rc.Close()) }

type translatedWriter struct {
	w    driver.FileWriter
	path string
}

func (w translatedWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	return n, storageErr("Write", w.path, err)
}

func (w translatedWriter) Size() int64 { return w.w.Size() }

func (w translatedWriter) Close() error { return storageErr("Close", w.path, w.w.Close()) }

func (w translatedWriter) Cancel(ctx context.Context) error {
	return storageErr("Cancel", w.path, w.w.Cancel(ctx))
}

func (w translatedWriter) Commit(ctx context.Context) error {
	return storageErr("Commit", w.path, w.w.Commit(ctx))
}
