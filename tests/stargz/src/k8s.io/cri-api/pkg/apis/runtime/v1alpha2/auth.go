// Package runtime stands in for the one type of CRI's v1alpha2 API that
// stargz-snapshotter's resolver names (its CRI-label credentials, unused
// by the tests: their registry has no credentials). Debian ships no Go
// sources of k8s.io/cri-api, and nothing may be fetched.
package runtime

// AuthConfig has the fields of CRI's AuthConfig that the resolver reads.
type AuthConfig struct {
	Username      string
	Password      string
	Auth          string
	ServerAddress string
	IdentityToken string
	RegistryToken string
}
