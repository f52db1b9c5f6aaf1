package mtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
)

// NodeIdentity and CoordinatorIdentity name the two kinds of peers.
func NodeIdentity(id string) string        { return "samsyn://node/" + id }
func CoordinatorIdentity(id string) string { return "samsyn://coordinator/" + id }

// CA is a federation certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte
}

// NewCA creates a CA valid for validity.
func NewCA(name string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Samsyn federation"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// Leaf is an issued certificate with its key, in PEM.
type Leaf struct {
	CertPEM []byte
	KeyPEM  []byte
}

// Issue creates a certificate for identity, usable as both TLS server and client, valid for
// the given host names and IP addresses.
func (ca *CA) Issue(identity string, hosts []string, validity time.Duration) (*Leaf, error) {
	u, err := url.Parse(identity)
	if err != nil || u.Scheme != "samsyn" {
		return nil, fmt.Errorf("identity %q: expected samsyn://node/<id> or samsyn://coordinator/<id>", identity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: identity, Organization: []string{"Samsyn federation"}},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", identity, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}, nil
}

// KeyPEM is the CA's private key in PEM.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// LoadCA reads a CA certificate and key written by WriteFiles.
func LoadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := readPrivate(keyPath)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA %s with key %s: %w", certPath, keyPath, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !cert.IsCA {
		return nil, fmt.Errorf("%s: expected an ECDSA CA certificate", certPath)
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// WriteFiles writes a certificate (0644) and its key (0600), refusing to overwrite.
func WriteFiles(certPath string, certPEM []byte, keyPath string, keyPEM []byte) error {
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s already exists: refusing to overwrite", p)
		}
	}
	if err := os.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if err := os.WriteFile(certPath, certPEM, 0o644); err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	return nil
}

// RotateFiles replaces a certificate (0644) and its key (0600) with new ones: each is written
// beside the old and renamed over it, the old kept as .prev, so a daemon reloading at any
// moment reads either the old pair or the new one. The key is renamed first: a reload between
// the two renames fails (the key does not match the certificate) and keeps the old pair.
func RotateFiles(certPath string, certPEM []byte, keyPath string, keyPEM []byte) error {
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return fmt.Errorf("the new certificate and key do not match: %w", err)
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{{keyPath, keyPEM, 0o600}, {certPath, certPEM, 0o644}} {
		tmp := f.path + ".new"
		if err := os.WriteFile(tmp, f.data, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(tmp, f.mode); err != nil {
			return err
		}
		if _, err := os.Stat(f.path); err == nil {
			if err := copyFileMode(f.path, f.path+".prev", f.mode); err != nil {
				return err
			}
		}
		if err := os.Rename(tmp, f.path); err != nil {
			return err
		}
	}
	return nil
}

func copyFileMode(src, dst string, mode os.FileMode) error {
	raw, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, raw, mode); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

func readPrivate(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("key %s has mode %04o: expected 0600 (run: chmod 600 %s)", path, perm, path)
	}
	return os.ReadFile(path)
}

// Files names the PEM files of one peer.
type Files struct {
	CA   string // the federation CA certificate
	Cert string // this peer's certificate
	Key  string // this peer's private key (0600)
}

func (f Files) load() (*x509.CertPool, tls.Certificate, error) {
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("read CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, tls.Certificate{}, fmt.Errorf("%s: no PEM certificate", f.CA)
	}
	keyPEM, err := readPrivate(f.Key)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("read certificate: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("certificate %s with key %s: %w", f.Cert, f.Key, err)
	}
	return pool, pair, nil
}

// ErrIdentity is returned when a verified peer is not the one expected.
var ErrIdentity = errors.New("peer certificate does not carry an allowed identity")

// Identities returns the samsyn:// URIs of a certificate.
func Identities(cert *x509.Certificate) []string {
	var out []string
	for _, u := range cert.URIs {
		if u.Scheme == "samsyn" {
			out = append(out, u.String())
		}
	}
	return out
}

func requireIdentity(allowed []string) func([][]byte, [][]*x509.Certificate) error {
	return func(_ [][]byte, chains [][]*x509.Certificate) error {
		if len(chains) == 0 || len(chains[0]) == 0 {
			return ErrIdentity
		}
		for _, id := range Identities(chains[0][0]) {
			if slices.Contains(allowed, id) {
				return nil
			}
		}
		return fmt.Errorf("%w: got %s, expected %s", ErrIdentity, strings.Join(Identities(chains[0][0]), ", "), strings.Join(allowed, " or "))
	}
}

// ServerConfig is the TLS configuration of a server that accepts only clients whose
// certificates chain to the CA and carry one of the allowed identities.
func ServerConfig(f Files, allowedClients ...string) (*tls.Config, error) {
	if len(allowedClients) == 0 {
		return nil, errors.New("server TLS: no allowed client identity")
	}
	pool, pair, err := f.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{pair},
		ClientCAs:             pool,
		ClientAuth:            tls.RequireAndVerifyClientCert,
		VerifyPeerCertificate: requireIdentity(allowedClients),
		NextProtos:            []string{"h2"},
	}, nil
}

// ClientConfig is the TLS configuration of a client that presents its certificate and
// accepts only a server whose certificate chains to the CA and carries serverIdentity.
func ClientConfig(f Files, serverIdentity string) (*tls.Config, error) {
	pool, pair, err := f.load()
	if err != nil {
		return nil, err
	}
	return clientConfig(pool, pair, serverIdentity), nil
}

func clientConfig(pool *x509.CertPool, pair tls.Certificate, serverIdentity string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
		// The server is identified by its samsyn:// identity, not by host name: chain
		// verification runs below with the CA pool, then the identity is required.
		InsecureSkipVerify:    true, //nolint:gosec // replaced by VerifyPeerCertificate below
		VerifyPeerCertificate: verifyServer(func() *x509.CertPool { return pool }, serverIdentity),
		NextProtos:            []string{"h2"},
	}
}

// verifyServer checks a server's chain against the CA pool of the moment and its identity.
func verifyServer(pool func() *x509.CertPool, serverIdentity string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return err
			}
			certs[i] = c
		}
		if len(certs) == 0 {
			return ErrIdentity
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		chains, err := certs[0].Verify(x509.VerifyOptions{Roots: pool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		if err != nil {
			return fmt.Errorf("verify server certificate: %w", err)
		}
		return requireIdentity([]string{serverIdentity})(raw, chains)
	}
}

// observed reports every refused handshake of the credentials it wraps.
type observed struct {
	credentials.TransportCredentials
	onRefused func(remote net.Addr, err error)
}

// Observed wraps server credentials so that a refused TLS handshake (an unknown CA, a wrong
// identity, no client certificate, a port scan) is reported to onRefused rather than lost:
// gRPC itself drops it without a trace.
func Observed(c credentials.TransportCredentials, onRefused func(remote net.Addr, err error)) credentials.TransportCredentials {
	return &observed{TransportCredentials: c, onRefused: onRefused}
}

func (o *observed) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, info, err := o.TransportCredentials.ServerHandshake(conn)
	if err != nil && o.onRefused != nil {
		o.onRefused(conn.RemoteAddr(), err)
	}
	return c, info, err
}

func (o *observed) Clone() credentials.TransportCredentials {
	return &observed{TransportCredentials: o.TransportCredentials.Clone(), onRefused: o.onRefused}
}

// HandshakeReason names why a handshake was refused, for logs and metrics.
func HandshakeReason(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "identity"):
		return "identity"
	case strings.Contains(msg, "unknown certificate authority") || strings.Contains(msg, "certificate signed by unknown authority"):
		return "unknown_ca"
	case strings.Contains(msg, "didn't provide a certificate") || strings.Contains(msg, "certificate required"):
		return "no_certificate"
	case strings.Contains(msg, "expired") || strings.Contains(msg, "not yet valid"):
		return "expired"
	case strings.Contains(msg, "EOF") || strings.Contains(msg, "reset by peer"):
		return "closed"
	}
	return "other"
}
