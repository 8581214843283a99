// Command ciss-k8s-image builds the container images the test cluster of
// test/k8s/cluster.sh runs, from binaries on the local machine, and writes
// them as one docker-archive tarball that `ctr images import` loads into the
// cluster's containerd. Nothing is pulled: CI has no registry access.
//
//	ciss-k8s-image -out images.tar \
//	  -image ciss.local/k8s/pause:v1=/pause:/path/to/pause \
//	  -busybox ciss.local/k8s/busybox:1=/bin/busybox \
//	  -busybox aquasec/trivy:0.69.0=/bin/busybox,/usr/local/bin/trivy:/path/to/trivy
//
// -image REF=IMAGEPATH:HOSTFILE makes a one-file image whose entrypoint is
// IMAGEPATH (ko's /ko-app/<name> layout for Tekton's helpers, which Tekton
// invokes by that path). -busybox REF=HOSTFILE makes a shell image from a
// static busybox with a symlink per applet: Tekton's "shell image" (it writes
// step scripts with sh) and a step image; extra ,IMAGEPATH:HOSTFILE items add
// tools to it (a Trivy image: the project's own trivy build on busybox, under
// the reference the catalog's Tasks name, so Tasks run unchanged). Layers are deterministic: the same
// inputs give the same digests.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// created is the fixed time of every image and file, for stable digests.
var created = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// defaultPath is the PATH of every image (the same as Docker's default).
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var images, busyboxes listFlag
	out := flag.String("out", "", "docker-archive tarball to write")
	flag.Var(&images, "image", "REF=IMAGEPATH:HOSTFILE, a one-binary image (repeatable)")
	flag.Var(&busyboxes, "busybox", "REF=HOSTFILE[,IMAGEPATH:HOSTFILE...], a busybox shell image with extra files (repeatable)")
	flag.Parse()
	if err := run(*out, images, busyboxes); err != nil {
		fmt.Fprintln(os.Stderr, "ciss-k8s-image:", err)
		os.Exit(1)
	}
}

func run(out string, images, busyboxes []string) error {
	if out == "" || len(images)+len(busyboxes) == 0 {
		return errors.New("need -out and at least one -image or -busybox")
	}
	refs := map[name.Reference]v1.Image{}
	for _, spec := range images {
		ref, rest, ok := strings.Cut(spec, "=")
		inImage, host, ok2 := strings.Cut(rest, ":")
		if !ok || !ok2 || !path.IsAbs(inImage) {
			return fmt.Errorf("-image %q: want REF=/path/in/image:/host/file", spec)
		}
		img, err := binaryImage(inImage, host)
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		if err := add(refs, ref, img); err != nil {
			return err
		}
	}
	for _, spec := range busyboxes {
		ref, rest, ok := strings.Cut(spec, "=")
		if !ok {
			return fmt.Errorf("-busybox %q: want REF=/host/busybox[,/path/in/image:/host/file...]", spec)
		}
		parts := strings.Split(rest, ",")
		host, extra := parts[0], map[string]string{}
		for _, p := range parts[1:] {
			in, h, ok := strings.Cut(p, ":")
			if !ok || !path.IsAbs(in) {
				return fmt.Errorf("-busybox %q: extra file %q: want /path/in/image:/host/file", spec, p)
			}
			extra[in] = h
		}
		img, err := busyboxImage(host, extra)
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		if err := add(refs, ref, img); err != nil {
			return err
		}
	}
	if err := tarball.MultiRefWriteToFile(out, refs); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	return nil
}

func add(refs map[name.Reference]v1.Image, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return fmt.Errorf("reference %q: %w", ref, err)
	}
	refs[tag] = img
	return nil
}

// entry is one file, directory or symlink of a layer.
type entry struct {
	mode     int64
	data     []byte
	linkname string
	dir      bool
}

// binaryImage is HOST copied to IN (and nothing else but /tmp), run as IN.
func binaryImage(in, host string) (v1.Image, error) {
	data, err := os.ReadFile(host)
	if err != nil {
		return nil, err
	}
	files := baseFiles()
	files[strings.TrimPrefix(in, "/")] = entry{mode: 0o755, data: data}
	return image(files, []string{in}, nil, "ciss-k8s-image: "+path.Base(in)+" from "+host)
}

// busyboxImage is a static busybox with its applets linked where busybox
// itself says they live (`busybox --list-full`), and a root user.
func busyboxImage(host string, extra map[string]string) (v1.Image, error) {
	data, err := os.ReadFile(host)
	if err != nil {
		return nil, err
	}
	list, err := exec.Command(host, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", host, err)
	}
	files := baseFiles()
	files["bin/busybox"] = entry{mode: 0o755, data: data}
	for _, applet := range strings.Fields(string(list)) {
		if applet == "bin/busybox" {
			continue
		}
		files[applet] = entry{mode: 0o777, linkname: "/bin/busybox"}
	}
	files["etc/passwd"] = entry{mode: 0o644, data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")}
	files["etc/group"] = entry{mode: 0o644, data: []byte("root:x:0:\nnogroup:x:65534:\n")}
	files["root"] = entry{mode: 0o700, dir: true}
	for in, h := range extra {
		b, err := os.ReadFile(h)
		if err != nil {
			return nil, err
		}
		files[strings.TrimPrefix(in, "/")] = entry{mode: 0o755, data: b}
	}
	return image(files, nil, []string{"/bin/sh"}, "ciss-k8s-image: busybox from "+host)
}

func baseFiles() map[string]entry {
	return map[string]entry{"tmp": {mode: 0o1777, dir: true}}
}

func image(files map[string]entry, entrypoint, cmd []string, createdBy string) (v1.Image, error) {
	layerTar, err := layer(files)
	if err != nil {
		return nil, err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   l,
		History: v1.History{Created: v1.Time{Time: created}, CreatedBy: createdBy},
	})
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS = "linux"
	cfg.Architecture = runtime.GOARCH
	cfg.Created = v1.Time{Time: created}
	cfg.Config.Env = []string{defaultPath}
	cfg.Config.Entrypoint = entrypoint
	cfg.Config.Cmd = cmd
	cfg.Config.WorkingDir = "/"
	return mutate.ConfigFile(img, cfg)
}

// layer writes files and their parent directories sorted by path, owned by
// root, with one fixed time.
func layer(files map[string]entry) ([]byte, error) {
	all := map[string]entry{}
	for p, e := range files {
		all[p] = e
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				all[d] = entry{mode: 0o755, dir: true}
			}
		}
	}
	names := make([]string, 0, len(all))
	for p := range all {
		names = append(names, p)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range names {
		e := all[p]
		h := &tar.Header{Name: p, Mode: e.mode, ModTime: created, Format: tar.FormatPAX}
		switch {
		case e.dir:
			h.Typeflag, h.Name = tar.TypeDir, p+"/"
		case e.linkname != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.linkname
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
