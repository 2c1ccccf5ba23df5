// tcpull pulls an image lazily into containerd through the stargz
// snapshotter, as stargz-snapshotter's `ctr-remote image rpull` does: the
// layers are not downloaded, each descriptor's annotations go to the
// snapshotter as labels so that it mounts the layer from the registry.
// Plain HTTP for 127.0.0.1; credentials from TC_REGISTRY_USER and
// TC_REGISTRY_PASSWORD.
//
//	tcpull -address SOCKET -namespace NS REF
package main

import (
	"context"
	"flag"
	"log"
	"os"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/stargz-snapshotter/fs/source"
)

func main() {
	address := flag.String("address", "", "containerd's socket")
	namespace := flag.String("namespace", "default", "containerd namespace")
	snapshotter := flag.String("snapshotter", "stargz", "the snapshotter to unpack with")
	flag.Parse()
	ref := flag.Arg(0)
	if *address == "" || ref == "" {
		log.Fatal("usage: tcpull -address SOCKET [-namespace NS] REF")
	}
	client, err := containerd.New(*address)
	if err != nil {
		log.Fatalf("containerd at %s: %v", *address, err)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), *namespace)
	ctx, done, err := client.WithLease(ctx)
	if err != nil {
		log.Fatalf("lease: %v", err)
	}
	defer done(ctx)
	creds := func(string) (string, string, error) {
		return os.Getenv("TC_REGISTRY_USER"), os.Getenv("TC_REGISTRY_PASSWORD"), nil
	}
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(
			docker.WithPlainHTTP(docker.MatchLocalhost),
			docker.WithAuthorizer(docker.NewDockerAuthorizer(docker.WithAuthCreds(creds))),
		),
	})
	opts := []containerd.RemoteOpt{
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(*snapshotter),
	}
	if *snapshotter == "stargz" {
		// No prefetch size of our own: a layer's landmark sets it.
		opts = append(opts, containerd.WithImageHandlerWrapper(source.AppendDefaultLabelsHandlerWrapper(ref, 0)))
	}
	if _, err := client.Pull(ctx, ref, opts...); err != nil {
		log.Fatalf("pull %s: %v", ref, err)
	}
	log.Printf("pulled %s with the %s snapshotter", ref, *snapshotter)
}
