// tcverify checks one eStargz blob with stargz-snapshotter's own estargz
// package (Debian's Go sources): the footer and TOC open, the TOC digest
// is the one given, every chunk of every file matches its digest, and the
// blob gunzips to the given diff-id. It prints what it found as JSON,
// with the prefetch (the files before .prefetch.landmark).
//
//	tcverify BLOB TOC_DIGEST DIFF_ID
package main

import (
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

type report struct {
	Files       int      `json:"files"`
	Chunks      int      `json:"chunks"`
	Landmark    string   `json:"landmark"`
	PrefetchEnd int64    `json:"prefetch_end"`
	BlobSize    int64    `json:"blob_size"`
	Prefetched  []string `json:"prefetched"`
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tcverify: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		fail("usage: tcverify BLOB TOC_DIGEST DIFF_ID")
	}
	blob, tocDigest, diffID := os.Args[1], os.Args[2], os.Args[3]
	f, err := os.Open(blob)
	if err != nil {
		fail("%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		fail("%v", err)
	}
	r, err := estargz.Open(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		fail("open %s: %v", blob, err)
	}
	verifier, err := r.VerifyTOC(digest.Digest(tocDigest))
	if err != nil {
		fail("TOC of %s: %v", blob, err)
	}
	out := report{BlobSize: st.Size(), Landmark: "none", Prefetched: []string{}}
	end := int64(-1)
	if e, ok := r.Lookup(estargz.PrefetchLandmark); ok {
		out.Landmark, end = "prefetch", e.Offset
	} else if _, ok := r.Lookup(estargz.NoPrefetchLandmark); ok {
		out.Landmark = "no-prefetch"
	}
	out.PrefetchEnd = end
	seen := map[string]bool{}
	var walk func(e *estargz.TOCEntry)
	walk = func(e *estargz.TOCEntry) {
		e.ForeachChild(func(_ string, child *estargz.TOCEntry) bool {
			if child.Type == "dir" {
				walk(child)
				return true
			}
			if child.Type != "reg" || seen[child.Name] {
				return true
			}
			seen[child.Name] = true
			out.Files++
			if child.Size > 0 && child.Offset < end {
				out.Prefetched = append(out.Prefetched, child.Name)
			}
			file, err := r.OpenFile(child.Name)
			if err != nil {
				fail("open %s: %v", child.Name, err)
			}
			for off := int64(0); off < child.Size; {
				ce, ok := r.ChunkEntryForOffset(child.Name, off)
				if !ok {
					fail("%s: no chunk at offset %d", child.Name, off)
				}
				v, err := verifier.Verifier(ce)
				if err != nil {
					fail("%s: chunk at %d: %v", child.Name, off, err)
				}
				buf := make([]byte, ce.ChunkSize)
				if _, err := file.ReadAt(buf, ce.ChunkOffset); err != nil && err != io.EOF {
					fail("%s: read chunk at %d: %v", child.Name, off, err)
				}
				v.Write(buf)
				if !v.Verified() {
					fail("%s: chunk at %d does not match its digest", child.Name, off)
				}
				out.Chunks++
				off = ce.ChunkOffset + ce.ChunkSize
			}
			return true
		})
	}
	root, ok := r.Lookup("")
	if !ok {
		fail("%s: no root in the TOC", blob)
	}
	walk(root)
	sort.Strings(out.Prefetched)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		fail("%v", err)
	}
	gz, err := gzip.NewReader(f)
	if err != nil {
		fail("gunzip %s: %v", blob, err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, gz); err != nil {
		fail("gunzip %s: %v", blob, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID {
		fail("%s gunzips to %s, not the diff-id %s", blob, got, diffID)
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
