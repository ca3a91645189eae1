package fsck

import (
	"context"
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/regfs/regfs/driver/filesystem"
	"github.com/regfs/regfs/store"
)

// BenchmarkRun checks a filesystem root of 300 repositories in 10
// namespaces, each with 3 small layers, a revision and a tag (900 blobs,
// 1,800 links): the walk and the link reads, more than the hashing.
func BenchmarkRun(b *testing.B) {
	d, err := filesystem.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	put := func(l store.Location, content []byte) {
		if err := d.PutContent(ctx, pathOf(b, l), content); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 300 {
		name := fmt.Sprintf("ns%d/repo%d", i%10, i)
		for j := range 3 {
			content := []byte(fmt.Sprintf("blob %d %d", i, j))
			dg := digest.FromBytes(content)
			put(store.Location{Kind: store.PathBlobData, Digest: dg}, content)
			put(store.Location{Kind: store.PathLayerLink, Repository: name, Digest: dg}, []byte(dg))
			if j == 0 {
				put(store.Location{Kind: store.PathRevisionLink, Repository: name, Digest: dg}, []byte(dg))
				put(store.Location{Kind: store.PathTagCurrentLink, Repository: name, Tag: "latest"}, []byte(dg))
				put(store.Location{Kind: store.PathTagIndexEntryLink, Repository: name, Tag: "latest", Digest: dg}, []byte(dg))
			}
		}
	}
	b.ResetTimer()
	for range b.N {
		rep, err := Run(ctx, d, Options{Logger: quiet})
		if err != nil || !rep.OK() || rep.Links != 1800 {
			b.Fatal(err, rep.Links, problemsString(rep.Problems))
		}
	}
}
